"""Runs and splits: the one place that decides which networks of which zoo files are used, and where.

A *run* is one model of a zoo file, named ``(file position, model index)``. Every consumer (the
DataModules, ``wsl predict``, the tree baselines, the demo, generators' evaluation) asks a
``ZooRuns`` for runs, rows, activations, stored values and splits; none of them recomputes them.

Why splits are by run: all selected checkpoints of a run go to the same split, so a model is never
scored on a later checkpoint of a network it was trained on. INR zoos fit several networks to one
signal (an image): a drawn split keeps all INRs of a signal together, grouped by (file, ``signal``
field). The ``recorded`` policy uses the zoos' own per-model ``split`` field instead, the fixed
split of the images that published INR benchmarks use.

Only models with status done are used: pending ones have no weights, diverged ones have NaN.
A split is saved as plain lists of run ids (``Split.state``), so a resumed or reloaded model uses the
same runs even if the seed logic changes; with one file a run id is its model index, with several a
``[file position, index]`` pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from zoo.store import SPLITS, STATUS_DONE, STATUS_NAMES, Zoo
from zoo.weight_space import WeightSpaceSpec
from zoo.errors import InputError, OutOfRangeError, UnknownNameError

Run = tuple[int, int]  # (file position, model index)
READ_ROWS = 256  # file rows per read of ``read_weights`` (16 HDF5 chunks)
SPLIT_POLICIES = ("drawn", "recorded")


def run_key(run) -> Run:
    """A saved run id -> (file position, index): an int (one file) or a [file, index] pair."""
    if isinstance(run, (list, tuple)):
        return int(run[0]), int(run[1])
    return 0, int(run)


@dataclass
class Split:
    """Runs per split name (``zoo.store.SPLITS``), each list sorted."""

    runs: dict[str, list[Run]]

    def __post_init__(self) -> None:
        seen = [r for s in SPLITS for r in self.runs[s]]
        if len(set(seen)) != len(seen):
            raise InputError("a run is in two splits")

    @property
    def all_runs(self) -> list[Run]:
        return sorted(r for s in SPLITS for r in self.runs[s])

    def state(self, paths: Sequence[str], config_hashes: Sequence[str] | None = None) -> dict[str, Any]:
        """What a checkpoint stores: run ids per split, and per zoo file with the file's config hash
        (``wsl predict`` finds a zoo's runs by them: ``ZooRuns.saved_split``)."""
        single = len(paths) == 1
        state = {"zoos": list(paths),
                 "split_runs": {s: [i if single else [f, i] for f, i in self.runs[s]] for s in SPLITS},
                 "split_runs_by_zoo": {p: {s: [i for f, i in self.runs[s] if f == fi] for s in SPLITS}
                                       for fi, p in enumerate(paths)}}
        if config_hashes is not None:
            state["zoo_config_hashes"] = dict(zip(paths, config_hashes))
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], paths: Sequence[str]) -> "Split":
        if len(state.get("zoos", paths)) != len(paths):
            raise InputError(f"the saved split is over {len(state['zoos'])} zoo files ({state['zoos']}), "
                             f"the data has {len(paths)} ({list(paths)})")
        return cls({s: sorted(run_key(r) for r in state["split_runs"][s]) for s in SPLITS})


def describe_spec(spec: WeightSpaceSpec) -> str:
    """A weight space in one line: its architecture and parameter shapes, for error messages."""
    return f"{spec.architecture} [" + ", ".join(f"{p.name} {list(p.shape)}" for p in spec.params) + "]"


def check_same_space(spec: WeightSpaceSpec, other: WeightSpaceSpec, name: str = "generated networks",
                     other_name: str = "reference networks") -> None:
    """Raise unless two weight spaces have the same layers and parameters (the activation may differ)."""
    def key(s: WeightSpaceSpec) -> dict:
        d = s.to_dict()
        d.pop("activation")
        return d

    if key(spec) != key(other):
        raise InputError(f"different weight spaces: {name} has {describe_spec(spec)}, "
                         f"{other_name} has {describe_spec(other)}")


def common_spec(paths: Sequence[str], specs: Sequence[WeightSpaceSpec]) -> WeightSpaceSpec:
    """The weight space shared by several files; files whose activation differs give a spec with
    activation None (then each run's activation comes from its hyperparameters)."""
    for path, s in zip(paths[1:], specs[1:]):
        check_same_space(specs[0], s, f"zoo file {paths[0]}", f"zoo file {path}")
    if len({s.activation for s in specs}) > 1:
        d = specs[0].to_dict()
        d["activation"] = None
        return WeightSpaceSpec.from_dict(d)
    return specs[0]


class ZooRuns:
    """The done runs of one or more zoo files of one weight space, with what each file stores about
    them. Each file's metadata is read once, here; weights are read by ``read_weights``.

    ``select`` keeps the runs that meet conditions on their hyperparameters, signal fields and
    metrics, e.g. ``{"activation": "relu", "test_acc": [0.9, None]}``: a metric is compared at the
    last checkpoint, or at the epoch ``select["checkpoint"]`` (see ``_apply_select``)."""

    def __init__(self, paths: str | Path | Sequence[str | Path], select: dict[str, Any] | None = None):
        self.paths = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
        if not self.paths:
            raise InputError("no zoo files given; give one or more zoo files")
        self.specs, self.configs, self.config_hashes, self.checkpoint_epochs, self.is_inr = [], [], [], [], []
        self.metric_names, self.hparam_names, self.signal_names = [], [], []
        self.annotation_names: list[list[str]] = []
        self._row: list[dict[int, int]] = []
        self._columns: dict[tuple[int, str], np.ndarray] = {}
        self.done: list[Run] = []
        self.excluded = {name: 0 for code, name in STATUS_NAMES.items() if code != STATUS_DONE}
        for fi, path in enumerate(self.paths):
            with Zoo(path) as z:
                self.specs.append(z.spec)
                self.configs.append(z.config)
                self.config_hashes.append(z.config_hash)
                self.checkpoint_epochs.append(list(z.checkpoint_epochs))
                self.is_inr.append(z.is_inr)
                self.metric_names.append(list(z.metric_names))
                self.hparam_names.append(list(z.hparam_names))
                self.signal_names.append(list(z.signal_names))
                self.annotation_names.append(list(z.annotation_names))
                self._row.append({int(i): r for r, i in enumerate(z.index)})
                status = z.status
                self.done += [(fi, int(i)) for i in z.index[status == STATUS_DONE]]
                for code, name in STATUS_NAMES.items():
                    if code != STATUS_DONE:
                        self.excluded[name] += int((status == code).sum())
        self.spec = common_spec(self.paths, self.specs)
        self.select = dict(select or {})
        if self.select:
            self._apply_select()

    def _apply_select(self) -> None:
        """Keep the done runs whose metrics, hyperparameters or signal fields meet every condition
        of ``select`` (a value, a list of values, or a ``[low, high]`` range of numbers; ``null`` =
        open). A metric is what the run achieved at one checkpoint: the last, or the epoch given as
        ``checkpoint`` (e.g. ``{test_acc: [0.9, null], checkpoint: 10}``); every checkpoint of a
        selected run is then used. Selecting one activation of a zoo whose activation varies per
        model fixes the spec's."""
        epoch = self.select.get("checkpoint")
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer))):
            raise InputError(f"select.checkpoint: expected the epoch at which metrics are compared (an integer), "
                             f"found {epoch!r}")
        positions = [-1 if epoch is None else self.epoch_positions(fi, [int(epoch)])[0]
                     for fi in range(len(self.paths))]
        conditions = {}
        for name, cond in self.select.items():
            if name == "checkpoint":
                continue
            for fi in range(len(self.paths)):
                self.kind(fi, name)  # an unknown name: an error naming what is stored
            is_range = isinstance(cond, (list, tuple)) and len(cond) == 2 and all(
                c is None or isinstance(c, (int, float)) and not isinstance(c, bool) for c in cond)
            # Zoo.select's forms: a tuple is a (low, high) range, a list a set of values
            conditions[name] = tuple(cond) if is_range else list(cond) if isinstance(cond, (list, tuple, set)) else cond
        selected = set()
        for fi, path in enumerate(self.paths):
            with Zoo(path) as z:
                selected |= {(fi, int(i)) for i in z.index[z.select(status="done", checkpoint=positions[fi],
                                                                     **conditions)]}
        keep = [r in selected for r in self.done]
        before = len(self.done)
        self.done = [r for r, k in zip(self.done, keep) if k]
        self.excluded["not selected"] = before - len(self.done)
        if not self.done:
            raise InputError(f"select {self.select}: no done model of {self.paths} meets it")
        act = self.select.get("activation")
        if self.spec.activation is None and isinstance(act, str):
            d = self.spec.to_dict()
            d["activation"] = act
            self.spec = WeightSpaceSpec.from_dict(d)

    # --- rows and stored values ---------------------------------------------------------------------
    def rows(self, fi: int, indices) -> np.ndarray:
        """File rows of model indices of file ``fi``."""
        row = self._row[fi]
        try:
            return np.asarray([row[int(i)] for i in indices], dtype=np.int64)
        except KeyError as e:
            raise UnknownNameError(f"{self.paths[fi]}: no model with index {e.args[0]}") from None

    def row(self, run: Run) -> int:
        return int(self.rows(run[0], [run[1]])[0])

    def kind(self, fi: int, name: str) -> str:
        """``metric`` (a value per checkpoint), ``hyperparameter``, ``signal field`` or ``annotation``
        (per run; ``zoo.store.write_annotations``)."""
        if name in self.metric_names[fi]:
            return "metric"
        if name in self.hparam_names[fi]:
            return "hyperparameter"
        if name in self.signal_names[fi]:
            return "signal field"
        if name in self.annotation_names[fi]:
            return "annotation"
        raise UnknownNameError(f"{self.paths[fi]}: {name!r} is neither a stored metric {self.metric_names[fi]}, a "
                       f"hyperparameter {self.hparam_names[fi]}, a signal field "
                       f"{self.signal_names[fi] or '(none: not an INR zoo)'} nor an annotation "
                       f"{self.annotation_names[fi] or '(none: see wsl zoo annotate)'}")

    def column(self, fi: int, name: str) -> np.ndarray:
        """Every row's stored ``name`` in file ``fi``: ``[M, checkpoints]`` for a metric, ``[M]``
        otherwise (strings as ``str``). Read once and kept."""
        key = (fi, name)
        if key not in self._columns:
            kind = self.kind(fi, name)
            with Zoo(self.paths[fi]) as z:
                v = z.metric(name) if kind == "metric" else z.hparam(name) if kind == "hyperparameter" \
                    else z.annotation(name) if kind == "annotation" else z.signal(name)
            self._columns[key] = v.astype(str) if v.dtype.kind in "OUS" else v
        return self._columns[key]

    def values(self, name: str, runs: Sequence[Run]) -> np.ndarray:
        """Per-run values of a hyperparameter or signal field, in the order of ``runs``."""
        out = []
        for fi in range(len(self.paths)):
            pos = [k for k, r in enumerate(runs) if r[0] == fi]
            if pos:
                out.append((pos, self.column(fi, name)[self.rows(fi, [runs[k][1] for k in pos])]))
        if not out:
            return np.zeros(0)
        result = np.empty(len(runs), dtype=np.result_type(*[v for _, v in out]))
        for pos, v in out:
            result[pos] = v
        return result

    def activations(self, runs: Sequence[Run]) -> list[str]:
        """Each run's activation: its file's spec's, or its ``activation`` hyperparameter."""
        acts: list[str | None] = [self.specs[fi].activation or self.spec.activation for fi, i in runs]
        missing = [k for k, a in enumerate(acts) if a is None]
        for fi in sorted({runs[k][0] for k in missing}):
            if "activation" not in self.hparam_names[fi]:
                raise InputError(f"{self.paths[fi]}: the weight space's activation varies per model, but the "
                                 f"zoo stores no 'activation' hyperparameter (stored: {self.hparam_names[fi]})")
        if missing:
            found = self.values("activation", [runs[k] for k in missing])
            for k, a in zip(missing, found.tolist()):
                acts[k] = str(a)
        return acts  # type: ignore[return-value]

    # --- splits ---------------------------------------------------------------------------------------
    def signal_groups(self, runs: Sequence[Run]) -> list[list[int]]:
        """Positions in ``runs`` grouped by (file, ``signal`` field): the INRs of one signal form a
        group; in files without a ``signal`` field every run is its own group. Groups are in order of
        their first run, so a zoo without signals gives one group per run, in run order."""
        groups: dict[Any, list[int]] = {}
        has_signal = ["signal" in names for names in self.signal_names]
        signal = {fi: self.column(fi, "signal") for fi, h in enumerate(has_signal) if h}
        for k, (fi, i) in enumerate(runs):
            key = (fi, signal[fi][self._row[fi][i]].item()) if has_signal[fi] else ("run", (fi, i))
            groups.setdefault(key, []).append(k)
        return list(groups.values())

    def draw_split(self, fractions: Sequence[float], seed: int = 0, max_models: int | None = None) -> Split:
        """A seeded permutation of the signal groups of the done runs (whole groups up to
        ``max_models`` runs kept), cut by the fractions (train, val, test) of the groups."""
        check_fractions(fractions)
        runs = self.done
        groups = self.signal_groups(runs)
        order = np.random.default_rng(seed).permutation(len(groups))
        if max_models is not None:
            sizes = np.cumsum([len(groups[g]) for g in order])
            order = order[:max(1, int(np.searchsorted(sizes, max_models, side="right")))]
        n = len(order)
        n_train = max(1, round(fractions[0] * n))
        n_val = min(n - n_train, round(fractions[1] * n))
        cuts = dict(zip(SPLITS, (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])))
        return Split({s: sorted(runs[k] for g in idx for k in groups[g]) for s, idx in cuts.items()})

    def check_recorded_split(self) -> None:
        """Every file must store a per-model ``split`` field for the ``recorded`` policy."""
        for fi, names in enumerate(self.signal_names):
            if "split" not in names:
                raise InputError(f"{self.paths[fi]}: split 'recorded' needs a per-model 'split' field (INR zoos "
                                 f"record one), but this zoo has none (signal fields: {names}); give split "
                                 f"fractions such as [0.7, 0.1, 0.2] instead")

    def recorded_split(self, seed: int = 0, max_models: int | None = None) -> Split:
        """The zoos' own per-model ``split`` field (``max_models``: a seeded subset of the runs)."""
        self.check_recorded_split()
        runs = self.done
        if max_models is not None:
            keep = np.random.default_rng(seed).permutation(len(runs))[:max_models]
            runs = [runs[k] for k in sorted(keep)]
        split_of = self.values("split", runs)
        bad = sorted(set(split_of.tolist()) - set(SPLITS))
        if bad:
            raise InputError(f"split 'recorded': the zoos' 'split' field holds {bad}; expected {list(SPLITS)}")
        by_split = {s: sorted(r for r, v in zip(runs, split_of) if v == s) for s in SPLITS}
        if not by_split["train"]:
            raise InputError(f"split 'recorded': no done model of {self.paths} is recorded as 'train'")
        return Split(by_split)

    def split(self, split: str | Sequence[float], seed: int = 0, max_models: int | None = None) -> Split:
        """``"recorded"`` or fractions (train, val, test) for a drawn split."""
        return self.recorded_split(seed, max_models) if split == "recorded" else \
            self.draw_split(split, seed, max_models)

    def restore(self, state: dict[str, Any]) -> Split:
        """A saved split, checked against the done runs of these files."""
        split = Split.from_state(state, self.paths)
        missing = sorted(set(split.all_runs) - set(self.done))
        if missing:
            raise InputError(f"the saved split names runs (file position, index) {missing[:10]} that are not done "
                             f"models of {self.paths}: is this the zoo the split was made on?")
        return split

    def saved_split(self, state: dict[str, Any]) -> Split:
        """This zoo's split in a checkpoint's saved one (``Split.state``, over any number of files),
        found by content, not by the path string it was trained with: the recorded zoo with this
        file's config hash whose runs are all done models here, so an absolute or relative path, a
        copy or a moved file all find it (shards of one config share a hash; their runs differ).
        A state saved without hashes is matched by the file's path or name. One file only."""
        if len(self.paths) != 1:
            raise InputError(f"saved_split looks up one zoo file, given {len(self.paths)}")
        path, by_zoo = Path(self.paths[0]), state.get("split_runs_by_zoo") or {}
        hashes = state.get("zoo_config_hashes") or {}
        done = {i for _, i in self.done}

        def same_path(p: str) -> bool:
            return Path(p).resolve() == path.resolve() or Path(p).name == path.name

        found = [p for p, runs in by_zoo.items()
                 if (hashes[p] == self.config_hashes[0] if p in hashes else same_path(p))
                 and {int(i) for s in SPLITS for i in runs.get(s, [])} <= done]
        if not found:
            recorded = ", ".join(f"{p} (config hash {hashes.get(p, 'not recorded')})" for p in by_zoo) or "none"
            raise InputError(f"{path}: not a zoo the checkpoint's split was made on (config hash "
                             f"{self.config_hashes[0]}); it records {recorded}")
        best = next((p for p in found if Path(p).resolve() == path.resolve()), found[0])
        return self.restore({"split_runs": by_zoo[best]})

    # --- weights --------------------------------------------------------------------------------------
    def checkpoint_position(self, fi: int, checkpoint: int) -> int:
        """A checkpoint position of file ``fi`` (``-1`` = last), checked against the stored ones."""
        C = len(self.checkpoint_epochs[fi])
        if not -C <= checkpoint < C:
            raise OutOfRangeError(f"{self.paths[fi]}: checkpoint position {checkpoint} out of range for {C} checkpoints "
                             f"(epochs {self.checkpoint_epochs[fi]})")
        return checkpoint % C

    def epoch_positions(self, fi: int, checkpoints: str | Sequence[int], include_init: bool = False) -> list[int]:
        """Checkpoint positions of file ``fi``: ``last``, ``all`` (every stored epoch > 0) or epochs."""
        stored = self.checkpoint_epochs[fi]
        if checkpoints == "last":
            epochs = [stored[-1]]
        elif checkpoints == "all":
            epochs = [e for e in stored if e > 0]
        else:
            epochs = [int(e) for e in checkpoints]
        if include_init and 0 not in epochs:
            epochs = [0] + epochs
        missing = [e for e in epochs if e not in stored]
        if missing:
            raise UnknownNameError(f"{self.paths[fi]}: no checkpoint at epoch {missing[0]}; stored epochs: {stored}")
        return [stored.index(e) for e in epochs]

    def items(self, runs: Sequence[Run], positions: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Where the checkpoints ``positions[fi]`` of ``runs`` lie, file by file and checkpoint by
        checkpoint (rows ascending within one): per item its file position ``file``, file ``row``,
        checkpoint position ``pos``, ``epoch`` and position in ``runs`` (``run``). The order in which
        ``read_weights`` returns weights and a streamed DataModule reads them."""
        run_pos = {r: k for k, r in enumerate(runs)}
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("file", "row", "pos", "epoch", "run")}
        for fi in range(len(self.paths)):
            wanted = sorted(i for f, i in runs if f == fi)
            if not wanted:
                continue
            rows = self.rows(fi, wanted)
            for c in positions[fi]:
                parts["file"].append(np.full(len(rows), fi))
                parts["row"].append(rows)
                parts["pos"].append(np.full(len(rows), c))
                parts["epoch"].append(np.full(len(rows), self.checkpoint_epochs[fi][c]))
                parts["run"].append(np.asarray([run_pos[(fi, i)] for i in wanted], dtype=np.int64))
        if not parts["run"]:
            raise InputError(f"no checkpoints selected from {self.paths}")
        return {k: np.concatenate(v).astype(np.int64) for k, v in parts.items()}

    def item_bytes(self) -> int:
        """Bytes of one checkpoint's weights in memory (float32)."""
        return 4 * self.spec.num_params

    def read_weights(self, items: dict[str, np.ndarray]) -> list[torch.Tensor]:
        """The weights of ``items`` (``ZooRuns.items``) as per-parameter float32 tensors ``[N, *shape]``
        (``spec.params`` order), filled in place from contiguous reads of at most ``READ_ROWS`` file
        rows at one checkpoint (a whole checkpoint at once would double the peak memory)."""
        n = len(items["row"])
        params = [torch.empty((n, *p.shape)) for p in self.spec.params]  # filled in place: no second copy
        key = items["file"] * (1 + int(items["pos"].max())) + items["pos"]
        cuts = np.flatnonzero(np.diff(key) != 0) + 1
        for part in np.split(np.arange(n), cuts):  # one file and checkpoint; rows ascending
            fi, c = int(items["file"][part[0]]), int(items["pos"][part[0]])
            with Zoo(self.paths[fi]) as z:
                # spans of READ_ROWS rows: read at disk speed, and temporaries small enough to be reused
                for piece in np.split(part, np.flatnonzero(np.diff(items["row"][part] // READ_ROWS)) + 1):
                    rows = items["row"][piece]
                    weights = z.read_slice(int(rows[0]), int(rows[-1]) + 1, c)
                    for k, p in enumerate(self.spec.params):
                        params[k][piece[0]:piece[-1] + 1] = torch.from_numpy(weights[p.name][rows - rows[0]])
        return params


def check_fractions(fractions: Sequence[float]) -> None:
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
        raise InputError(f"split must be three fractions (train, val, test) >= 0 summing to 1 with train > 0, "
                         f"or 'recorded', found {list(fractions)}")

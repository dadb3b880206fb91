"""``wsl predict``: a trained predictor applied to checkpoints from anywhere.

Inputs are ``.pt``/``.pth`` state_dicts (loaded with ``weights_only=True``: checkpoints from
strangers are untrusted, and so are predictor checkpoints, see ``wsl.core.checkpoint``),
``.safetensors`` files, folders of them, or zoo files (all finished models at a checkpoint, or one
split of the predictor's own data module). A file's parameters are matched to the predictor's
weight space by name, else by structure (``wsl.weights.matching``; the mapping used is
printed); a mismatch names what was expected and what was found.

Activations: a zoo's own (fixed in its spec, or per model in its hyperparameters) is always used;
for files, ``activation`` (``--activation``), else the predictor's. Where the predictor's weight
space leaves the activation per network, every batch names each network's; an input whose
activation the predictor was not trained on gets a warning on stderr.

``--split`` on a zoo follows the split the predictor was trained with: the runs its data module
recorded for that zoo, found by the zoo's content (config hash and run ids, ``ZooRuns.saved_split``),
so any path to it or a copy of it will do; or, for a predictor trained with ``split: recorded``
(INR zoos), the zoo's own per-model ``split`` field, which then works for any INR zoo of the same signals.

Every prediction comes with what says how far to trust it (``PropertyPredictor.trust``): a
conformal interval at coverage ``level`` (regression) or a prediction set (classification),
calibrated on the predictor's validation runs, and an out-of-distribution p-value against them;
inputs with p < ``ood_alpha`` are flagged, and a warning line says how many: the coverage
guarantee holds for networks drawn like the predictor's zoo, not for them.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsl.data.runs import ZooRuns
from wsl.core.checkpoint import keeps_module_order, load_state_dict_file, model_from_checkpoint, read_checkpoint
from wsl.weights.matching import describe_mapping, match_state_dict
from wsl.prediction.conformal import check_level
from wsl.prediction.model import PropertyPredictor, Trust
from wsl.weights import WeightBatch
from zoo.weight_space import ACTIVATIONS
from zoo.errors import InputError, MissingFileError, warn

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")
LEVEL = 0.9  # the default coverage of intervals and prediction sets
OOD_ALPHA = 0.01  # the default flag level: at most this fraction of in-distribution networks is flagged


@dataclass
class Prediction:
    source: str  # file, or "zoo.h5#model=17@epoch=30"
    value: float | str  # regression value, or predicted class name
    confidence: float | None = None  # classification: probability of the predicted class
    true: float | str | None = None  # when the input is a zoo that stores the target
    low: float | None = None  # regression: the conformal interval
    high: float | None = None
    classes: list[str] | None = None  # classification: the conformal prediction set
    ood_score: float | None = None  # distance to the training runs (higher: less like them)
    ood_p: float | None = None  # its p-value against the validation runs (small: unusual)


def expand_inputs(inputs: list[str]) -> list[Path]:
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in CHECKPOINT_SUFFIXES + (".h5",))
            if not found:
                raise MissingFileError(f"{p}: folder holds no {', '.join(CHECKPOINT_SUFFIXES + ('.h5',))} files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise MissingFileError(f"{p}: input not found")
    return files


def _predictions(model: PropertyPredictor, sources: list[str], trust: Trust,
                 truth: list | None = None) -> list[Prediction]:
    """One ``Prediction`` per source from the batch's ``Trust``."""
    out = []
    names = model.hparams.class_names or [str(i) for i in range(model.hparams.num_outputs)]
    for i, source in enumerate(sources):
        p = Prediction(source, 0.0, true=None if truth is None else truth[i])
        if model.regression:
            p.value = float(trust.values[i])
            if trust.low is not None:
                p.low, p.high = float(trust.low[i]), float(trust.high[i])
        else:
            conf, idx = trust.values[i].max(0)
            p.value, p.confidence = names[int(idx)], float(conf)
            if trust.sets is not None:
                p.classes = [names[int(c)] for c in trust.sets[i].nonzero().flatten()]
        if trust.ood_score is not None:
            p.ood_score = float(trust.ood_score[i])
        if trust.ood_p is not None:
            p.ood_p = float(trust.ood_p[i])
        out.append(p)
    return out


def _check_activations(model: PropertyPredictor, acts: list[str], what: str) -> None:
    """Warn when inputs use an activation the predictor was not trained on (its weight space fixes
    another): it reads them as networks of its own activation, so it extrapolates."""
    trained = model.spec.activation
    other = sorted(set(acts) - {trained})
    if trained is not None and other:
        warn(f"{what}: networks with activation {', '.join(other)}, but the predictor was trained only on "
             f"{trained} networks and reads every input as one; its predictions for them are extrapolations")


def _file_activation(model: PropertyPredictor, activation: str | None) -> str | None:
    """The activation of state_dict inputs (a state_dict does not record it): ``activation``, else
    the predictor's; an error where the predictor runs the networks and neither says which."""
    if activation is not None:
        if activation not in ACTIVATIONS:
            raise InputError(f"--activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
        return activation
    if model.spec.activation is None and model.encoder.runs_networks:
        raise InputError(f"the predictor runs the networks (encoder {model.hparams.encoder!r}) and its weight space's "
                         "activation varies per network; a state_dict does not record it: pass --activation "
                         f"(one of {', '.join(ACTIVATIONS)})")
    return model.spec.activation


def predict_files(model: PropertyPredictor, files: list[Path], batch_size: int = 256,
                  activation: str | None = None, strict_names: bool = False, stream=None,
                  level: float = LEVEL) -> list[Prediction]:
    """Predictions for state_dict files. Their names are matched to the predictor's weight space,
    else their structure (``strict_names``: names only); each mapping used is printed to ``stream``
    once. ``activation`` names the networks' activation (a state_dict does not record it)."""
    stream = sys.stdout if stream is None else stream
    act = _file_activation(model, activation)
    if act is not None:
        _check_activations(model, [act], "input files")
    matched: list[tuple[Path, list[torch.Tensor]]] = []
    mappings: dict[tuple, list[Path]] = {}
    for f in files:
        # safetensors stores tensors sorted by name: the file's order is not the module's
        params, mapping = match_state_dict(model.spec, load_state_dict_file(f), str(f), strict_names,
                                           ordered=keeps_module_order(f))
        matched.append((f, params))
        if any(a != b for a, b in mapping.items()):
            mappings.setdefault(tuple(mapping.items()), []).append(f)
    for mapping, fs in mappings.items():
        more = f" and {len(fs) - 1} more files" if len(fs) > 1 else ""
        print(f"{fs[0]}{more}: names differ from the weight space's, matched by structure: "
              f"{describe_mapping(dict(mapping))}", file=stream)
    out: list[Prediction] = []
    for s in range(0, len(matched), batch_size):
        chunk = matched[s:s + batch_size]
        wb = WeightBatch.from_params(model.spec, [torch.stack([p[k] for _, p in chunk]).float()
                                                  for k in range(len(model.spec.params))])
        if model.spec.activation is None and act is not None:
            wb.activation = [act] * len(wb)
        out += _predictions(model, [str(f) for f, _ in chunk], model.trust(wb, level))
    return out


def predict_zoo(model: PropertyPredictor, path: Path, split: str | None = None, checkpoint: int = -1,
                data_state: dict | None = None, batch_size: int = 1024, recorded_split: bool = False,
                activation: str | None = None, level: float = LEVEL) -> list[Prediction]:
    """Predictions for the done models of a zoo (``split``: only that split's runs, from the
    split saved in the predictor's ``data_state`` (its data module's ``state_dict``) or, with
    ``recorded_split``, the zoo's own ``split`` field). The zoo's own activations are used; an
    ``activation`` that contradicts them is reported and not used."""
    runs = ZooRuns(path)
    if runs.spec.to_dict()["params"] != model.spec.to_dict()["params"]:  # all but the activation
        exp = ", ".join(f"{p.name} {list(p.shape)}" for p in model.spec.params)
        found = ", ".join(f"{p.name} {list(p.shape)}" for p in runs.spec.params)
        raise InputError(f"{path}: weight space does not match the predictor's. Expected: {exp}. Found: {found}")
    selected = runs.done
    if split not in (None, "all") and recorded_split:
        selected = runs.recorded_split().runs[split]
    elif split not in (None, "all"):
        if not (data_state or {}).get("split_runs_by_zoo"):
            raise InputError(f"--split {split}: the predictor checkpoint records no split of its runs")
        selected = runs.saved_split(data_state).runs[split]
    position = runs.checkpoint_position(0, checkpoint)
    epoch = runs.checkpoint_epochs[0][position]
    target = model.hparams.target
    truth = None
    if target in (*runs.metric_names[0], *runs.hparam_names[0], *runs.signal_names[0]):
        column = runs.column(0, target)
        truth = column[:, position] if column.ndim == 2 else column
    selected = sorted(selected)  # the order read_weights returns them in
    acts = runs.activations(selected)
    if activation is not None and set(acts) - {activation}:
        warn(f"{path}: --activation {activation} is not used: the zoo records its networks' activation "
             f"({', '.join(sorted(set(acts)))})")
    _check_activations(model, acts, str(path))
    wb = WeightBatch.from_params(runs.spec, runs.read_weights(runs.items(selected, [[position]])))
    if runs.spec.activation is None:
        wb.activation = acts
    sources = [f"{path}#model={index}@epoch={epoch}" for _, index in selected]
    true = None if truth is None else [truth[runs.row((0, index))].item() for _, index in selected]
    return _predictions(model, sources, predict_trust(model, wb, batch_size, level), true)


def _in_batches(model: PropertyPredictor, wb: WeightBatch, batch_size: int):
    """``wb`` in the predictor's weight space (equal to the networks' in every parameter, perhaps not
    in activation), in batches. Each network keeps its own activation (``wb.activation``, else its
    spec's, e.g. a zoo whose config fixes one): where the predictor's weight space leaves the
    activation per network, every batch names each network's."""
    acts = wb.activation or wb.spec.activation
    if model.spec.activation is None and acts is None:
        raise InputError("the networks' activation is not known (their weight space leaves it per network and "
                         "the batch names none); the predictor needs it")
    for s in range(0, len(wb), batch_size):
        part = WeightBatch.from_params(model.spec, [p[s:s + batch_size] for p in wb.params()])
        if model.spec.activation is None:
            part.activation = acts[s:s + batch_size] if isinstance(acts, list) else [acts] * len(part)
        yield part


def predict_weights(model: PropertyPredictor, wb: WeightBatch, batch_size: int = 1024) -> torch.Tensor:
    """The predictor's values (``predict_values``) for networks of its weight space, in batches."""
    return torch.cat([model.predict_values(part) for part in _in_batches(model, wb, batch_size)])


def predict_trust(model: PropertyPredictor, wb: WeightBatch, batch_size: int = 1024, level: float = LEVEL) -> Trust:
    """The predictor's values with their intervals or sets at coverage ``level`` and their
    out-of-distribution scores (``PropertyPredictor.trust``), in batches."""
    return Trust.cat([model.trust(part, level) for part in _in_batches(model, wb, batch_size)])


def run_predict(model_path: str, inputs: list[str], csv_path: str | None = None, split: str | None = None,
                checkpoint: int = -1, max_rows: int = 20, stream=None, activation: str | None = None,
                strict_names: bool = False, level: float = LEVEL, ood_alpha: float = OOD_ALPHA) -> list[Prediction]:
    stream = sys.stdout if stream is None else stream  # looked up per call: redirected stdout is honoured
    check_level(level)
    if not 0.0 < ood_alpha < 1.0:
        raise InputError(f"--ood-alpha must lie strictly between 0 and 1 (e.g. 0.01), found {ood_alpha}")
    ckpt = read_checkpoint(model_path, PropertyPredictor)  # once, without running code
    model = model_from_checkpoint(ckpt, model_path, PropertyPredictor)
    data_state, split_setting = _data_state(ckpt)
    files = expand_inputs(inputs)
    preds: list[Prediction] = []
    loose = [f for f in files if f.suffix != ".h5"]
    if loose:
        preds += predict_files(model, loose, activation=activation, strict_names=strict_names, stream=stream,
                               level=level)
    for f in files:
        if f.suffix == ".h5":
            preds += predict_zoo(model, f, split, checkpoint, data_state, recorded_split=split_setting == "recorded",
                                 activation=activation, level=level)
    target = model.hparams.target or "value"
    _print_table(preds, target, level, ood_alpha, max_rows, csv_path, stream)
    _print_agreement(preds, target, stream)
    _print_trust_notes(model, preds, level, ood_alpha, stream)
    if csv_path:
        _write_csv(csv_path, preds, target, ood_alpha)
        print(f"wrote {len(preds)} rows to {csv_path}", file=stream)
    return preds


def _flagged(p: Prediction, ood_alpha: float) -> bool:
    return p.ood_p is not None and p.ood_p < ood_alpha


def _print_table(preds: list[Prediction], target: str, level: float, ood_alpha: float, max_rows: int,
                 csv_path: str | None, stream) -> None:
    span = f"{level:.0%} {'interval' if not preds or isinstance(preds[0].value, float) else 'set'}"
    print(f"{'input':<52} {'predicted ' + target:>18} {span:>16} {'OOD p':>7} {'true':>8}", file=stream)
    for p in preds[:max_rows]:
        if isinstance(p.value, float):
            val = f"{p.value:.4f}"
            spread = "" if p.low is None else f"[{p.low:.3f}, {p.high:.3f}]"
        else:
            val = f"{p.value} ({p.confidence:.2f})"
            spread = "" if p.classes is None else "{" + ", ".join(p.classes) + "}"
        ood = "" if p.ood_p is None else f"{p.ood_p:.3f}" + ("!" if _flagged(p, ood_alpha) else " ")
        true = "" if p.true is None else (f"{p.true:.4f}" if isinstance(p.true, float) else str(p.true))
        print(f"{p.source[-52:]:<52} {val:>18} {spread:>16} {ood:>7} {true:>8}", file=stream)
    if len(preds) > max_rows:
        print(f"... {len(preds) - max_rows} more rows" + (f" in {csv_path}" if csv_path else " (use --csv FILE)"), file=stream)


def _print_agreement(preds: list[Prediction], target: str, stream) -> None:
    """Where the inputs store the target: how well the predictions agree with it, and the coverage."""
    with_truth = [p for p in preds if p.true is not None and isinstance(p.value, float)]
    if len(with_truth) > 2:
        from scipy.stats import kendalltau

        tau = kendalltau([p.true for p in with_truth], [p.value for p in with_truth]).statistic
        print(f"Kendall tau against the stored {target} over {len(with_truth)} checkpoints: {tau:.3f}", file=stream)
    with_class = [p for p in preds if p.true is not None and isinstance(p.value, str)]
    if with_class:
        acc = np.mean([p.value == str(p.true) for p in with_class])
        print(f"accuracy against the stored {target} over {len(with_class)} checkpoints: {acc:.3f}", file=stream)
    covered = [p.low <= p.true <= p.high for p in with_truth if p.low is not None]
    covered += [str(p.true) in p.classes for p in with_class if p.classes is not None]
    if covered:
        print(f"the stored {target} lies in its interval or set for {np.mean(covered):.1%} of "
              f"{len(covered)} checkpoints", file=stream)


def _print_trust_notes(model: PropertyPredictor, preds: list[Prediction], level: float, ood_alpha: float,
                       stream) -> None:
    if not model.conformal.calibrated:
        warn("the predictor carries no conformal calibration (its checkpoint predates it, or it had no validation "
             "runs): predictions come without intervals; retrain it with wsl fit")
    if not model.ood.calibrated:
        warn("the predictor carries no calibrated out-of-distribution score (its checkpoint predates it, or its "
             "data module held no training runs): nothing says whether an input is like its training zoo")
        return
    n = len(model.ood.calibration)
    if 1.0 / (n + 1) >= ood_alpha:
        warn(f"the out-of-distribution score was calibrated on {n} validation checkpoints: no p-value falls below "
             f"1/{n + 1}, so --ood-alpha {ood_alpha} flags nothing (train on more runs, or raise --ood-alpha)")
    flagged = sum(_flagged(p, ood_alpha) for p in preds)
    if flagged:
        warn(f"{flagged} of {len(preds)} inputs are unlike the predictor's training zoo (OOD p < {ood_alpha}, "
             f"marked !): their {'intervals' if model.regression else 'sets'} were calibrated on networks unlike "
             f"them, and the {level:.0%} coverage is not guaranteed there")


def _write_csv(path: str, preds: list[Prediction], target: str, ood_alpha: float) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["input", f"predicted_{target}", "confidence", "interval_low", "interval_high", "prediction_set",
                    "ood_score", "ood_p", "ood_flag", f"true_{target}"])
        blank = lambda v: "" if v is None else v  # noqa: E731
        for p in preds:
            w.writerow([p.source, p.value, blank(p.confidence), blank(p.low), blank(p.high),
                        "" if p.classes is None else "|".join(p.classes), blank(p.ood_score), blank(p.ood_p),
                        "" if p.ood_p is None else int(_flagged(p, ood_alpha)), blank(p.true)])


def _data_state(ckpt: dict) -> tuple[dict, object]:
    """From a predictor checkpoint's dict (``read_checkpoint``): the data module's state
    (its saved split, ``Split.state``), and its ``split`` argument (fractions, or "recorded"; None
    if the checkpoint has no data module hyperparameters)."""
    split_setting = (ckpt.get("datamodule_hyper_parameters") or {}).get("split")
    for key, state in ckpt.items():
        if key.endswith("DataModule") or key == "datamodule_state":
            return (state if isinstance(state, dict) else {}), split_setting
    return {}, split_setting

"""Generate a zoo from a config: plan chunks, train each chunk as one population, store, resume.

A zoo of M models is split into shards (``shard=(i, n)`` takes models ``[i*M//n, (i+1)*M//n)``),
and a shard into chunks of models that share the structural hyperparameters (activation, batch
size) and fit in memory. The chunk plan is fixed when the file is made, so a resumed run trains
the same chunks as an uninterrupted one and stores the same weights.

Fine-tuning zoos (``init.from``) start every model from one stored network, or each model from its
own (``init.run: each``; ``stored_network``),
and task zoos give each model its own task variant (the ``task_variant`` hyperparameter); models
of different variants share chunks like models of different learning rates (``zoo.train``).

INR zoos (a task of ``zoo.signals``) take the same path with another trainer: model i fits signal
``i // inrs_per_signal`` (``zoo.inr.fit_population``), and the file also records each model's signal.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .architectures import build_spec
from .config import STRUCTURAL, ConfigError, ZooConfig, model_seed, sample_hparams
from .inr import INR_METRICS, fit_compiles, fit_population
from .lock import hold
from .signals import SIGNAL_TASKS, SignalSet, load_signals
from .store import (RANDOM_STREAMS, STATUS_DIVERGED, STATUS_DONE, STATUS_NAMES, STATUS_PENDING, Zoo, ZooFileError,
                    create_zoo, write_models, zoo_identity)
from .tasks import TaskData, load_task, variant_view
from .fused import run_worth_compiling
from .train import activation_elems, compiled_parts, metric_names, train_population, training_work
from .weight_space import WeightSpaceSpec
from .errors import InputError, MissingFileError, OutOfRangeError

# Architecture options that the task decides, not the config.
_TASK_LAYOUT = {"mlp": "flat", "siren": "flat", "cnn": "image"}


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n), 0 <= i < n."""
    if text is None:
        return (0, 1)
    try:
        i, n = (int(t) for t in str(text).split("/"))
    except ValueError:
        raise InputError(f"--shard: expected i/n such as 0/4, found {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard: expected 0 <= i < n, found {text!r}")
    return (i, n)


def shard_indices(num_models: int, shard: tuple[int, int]) -> np.ndarray:
    i, n = shard
    return np.arange(i * num_models // n, (i + 1) * num_models // n, dtype=np.int64)


def build_task_and_spec(config: ZooConfig) -> tuple[TaskData | SignalSet, WeightSpaceSpec]:
    """Load the config's task (or an INR task's signals) and the weight space of its architecture."""
    arch = dict(config.architecture)
    arch_name = arch.pop("name")
    task_opts = dict(config.task)
    task_name = task_opts.pop("name")
    if task_name in SIGNAL_TASKS:
        k = task_opts.pop("inrs_per_signal", 1)
        task_opts.pop("stop_psnr", None)  # a fitting option (fit_population), not the signals'
        signals = load_signals(task_name, **task_opts)
        if config.num_models != len(signals) * k:
            sizes = " + ".join(f"{n} {signals.info[n]}" for n in ("n_train", "n_val", "n_test") if n in signals.info)
            raise ConfigError(f"{config.source}: num_models: expected {len(signals) * k} ({len(signals)} signals of "
                              f"task {task_name!r}" + (f": task.{sizes}" if sizes else "") + f", x inrs_per_signal "
                              f"{k}), found {config.num_models}; the task's n_train + n_val + n_test set the number "
                              f"of signals (images): change them together with num_models")
        if arch_name != "siren":
            act = config.hparams["activation"]
            arch["activation"] = act if isinstance(act, str) else None
        return signals, build_spec(arch_name, (signals.in_dim,), signals.out_dim, **arch)
    task_opts.setdefault("layout", _TASK_LAYOUT.get(arch_name, "flat"))
    task = load_task(task_name, **task_opts)
    act = config.hparams["activation"]
    if arch_name != "siren":  # a per-model activation leaves the spec's activation None
        arch["activation"] = act if isinstance(act, str) else None
    spec = build_spec(arch_name, task.input_shape, task.output_dim, **arch)
    return task, spec


def _shapes(params) -> str:
    return ", ".join(f"{name} {list(shape)}" for name, shape in params)


def stored_network(config: ZooConfig, spec: WeightSpaceSpec) -> tuple[list[torch.Tensor], str] | None:
    """The network(s) the models of a fine-tuning zoo start from (``init.from``, ``init.run``,
    ``init.checkpoint``), in ``spec.params`` order, and their activation; None for random
    initialisations. One network for a run id; for ``run: each``, every finished run of the file
    with finite weights (in index order, a leading dimension; ``start_rows`` hands them to the models).
    Read through ``zoo.store.Zoo``; a missing file, run or checkpoint, a run that did not finish, or
    another architecture is an error naming the field and what was expected and found."""
    init = config.init
    if "from" not in init:
        return None
    path, run, field = Path(init["from"]), init["run"], f"{config.source}: init.from"
    if not path.exists():
        raise MissingFileError(f"{field}: {path}: zoo file not found (generate the zoo it names first, e.g. "
                               f"wsl zoo generate <its config> --out {path})")
    with Zoo(path) as z:
        if z.is_inr:
            raise InputError(f"{field}: {path} is an INR zoo; a fine-tuning zoo starts from a classifier or regressor")
        if run == "each":
            rows = np.flatnonzero(z.status == STATUS_DONE)
            if not rows.size:
                raise InputError(f"{field}: init.run each: {path} has no finished runs")
        else:
            rows = np.flatnonzero(z.index == run)[:1]
            if not rows.size:
                raise InputError(f"{field}: init.run {run} is not in {path} (runs {int(z.index.min())}.."
                                 f"{int(z.index.max())})")
            if z.status[rows[0]] != STATUS_DONE:
                raise InputError(f"{field}: run {run} of {path} is {STATUS_NAMES[int(z.status[rows[0]])]}, "
                                 f"expected done")
        try:
            c = z.checkpoint_position(init["checkpoint"])
        except OutOfRangeError:
            raise InputError(f"{field}: init.checkpoint {init['checkpoint']} is out of range for {path}'s "
                             f"{len(z.checkpoint_epochs)} checkpoints (epochs {z.checkpoint_epochs})") from None
        expected = [(p.name, p.shape) for p in spec.params]
        found = [(p.name, p.shape) for p in z.spec.params]
        if expected != found:
            raise InputError(f"{field}: {path} holds another architecture: expected parameters {_shapes(expected)} "
                             f"(architecture {config.architecture}, task input {list(spec.input_shape)}), found "
                             f"{_shapes(found)}")
        activations = {z.spec.activation} if z.spec.activation else {str(a) for a in np.asarray(z.hparam("activation"))[rows]}
        if len(activations) > 1:
            raise InputError(f"{field}: the runs of {path} mix activations {sorted(activations)}; the models of a "
                             f"zoo that start from them share one")
        b = z.batch(rows, c)
        params = [b[p.name] if run == "each" else b[p.name][0] for p in z.spec.params]
    finite = torch.stack([p.flatten(1 if run == "each" else 0).isfinite().all(-1) for p in params]).all(0)
    if run == "each":
        if not bool(finite.any()):
            raise InputError(f"{field}: every finished run of {path} has NaN/inf weights at checkpoint "
                             f"{init['checkpoint']}")
        params = [p[finite] for p in params]
    elif not bool(finite):
        raise InputError(f"{field}: run {run} of {path} has NaN/inf weights at checkpoint {init['checkpoint']}")
    return params, activations.pop()


def start_rows(config: ZooConfig, start: list[torch.Tensor], indices: np.ndarray) -> list[torch.Tensor]:
    """What the models ``indices`` start from: the one stored network, or for ``init.run: each``
    stored network ``index mod n`` each (a leading model dimension)."""
    if config.init["run"] != "each":
        return start
    rows = torch.as_tensor(np.asarray(indices) % len(start[0]))
    return [p[rows] for p in start]


def check_task_variants(config: ZooConfig, task: TaskData, hparams: dict[str, list]) -> None:
    """Build every task variant of the zoo once, so a variant the task cannot take (a class it has
    not, a regression task) stops the run before the file is made."""
    for v in dict.fromkeys(hparams.get("task_variant", [])):
        try:
            variant_view(task, v)
        except InputError as e:
            raise ConfigError(f"{config.source}: hparams.task_variant: {e}") from None


# INRs fitted at once on a CPU: a full-batch step keeps [chunk, points, width] activations, and
# past a few hundred MNIST INRs they outgrow the cache; 64-256 fit 13% faster than 1,024 here, and
# with the compiled step (zoo.fused) 64 fits about 5-10% faster than 256.
INR_CPU_CHUNK = 64


def signal_of(indices: np.ndarray, config: ZooConfig) -> np.ndarray:
    """The signal each model of an INR zoo fits: model i fits signal i // inrs_per_signal."""
    return np.asarray(indices, dtype=np.int64) // int(config.task.get("inrs_per_signal", 1))


def signal_records(signals: SignalSet, indices: np.ndarray, config: ZooConfig) -> dict:
    """What an INR zoo file records about each model's signal (see ``zoo.store``)."""
    which = signal_of(indices, config)
    fields = {"signal": which.tolist()} | {k: v[which].tolist() for k, v in signals.fields.items()}
    return {"coords": signals.coords.numpy(), "values": signals.values[torch.as_tensor(which)].numpy(),
            "fields": fields}


def auto_chunk_size(spec: WeightSpaceSpec, batch_size: int, device: torch.device, budget_gb: float | None = None) -> int:
    """Models per chunk: what fits a memory budget (default 4 GiB on CPU, half the free GPU memory).
    Per model: weights, gradients and three optimizer states, plus the batch's activations kept
    for the backward pass. On a CPU, more than ~2,000 models at once gains nothing."""
    if budget_gb is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget = free / 2
        else:
            budget = 4 * 2 ** 30
    else:
        budget = budget_gb * 2 ** 30
    per_model = 4 * (6 * spec.num_params + 4 * batch_size * activation_elems(spec))
    cap = 20000 if device.type == "cuda" else 2000
    return int(max(1, min(cap, budget // per_model)))


def plan_chunks(indices: np.ndarray, hparams: dict[str, list], chunk_size: int) -> list[np.ndarray]:
    """Positions (into ``indices``) of each chunk: models grouped by structural hyperparameters,
    in index order inside a group, at most ``chunk_size`` per chunk."""
    keys = [tuple(hparams[k][j] for k in STRUCTURAL if k in hparams) for j in range(len(indices))]
    groups: dict[tuple, list[int]] = {}
    for j, key in enumerate(keys):
        groups.setdefault(key, []).append(j)
    chunks = []
    for key in sorted(groups, key=lambda k: groups[k][0]):
        pos = groups[key]
        n = math.ceil(len(pos) / chunk_size)
        size = math.ceil(len(pos) / n)  # even chunks rather than a small remainder
        chunks += [np.asarray(pos[s:s + size]) for s in range(0, len(pos), size)]
    return chunks


BAR_FORMAT = "{l_bar}{bar}| {n:.0f}/{total} models [{elapsed}<{remaining}, {rate_fmt}]"
COMPILING_FORMAT = "{l_bar}{bar}| {n:.0f}/{total} models [{elapsed}, compiling the training step once: no ETA yet]"


def default_output(config: ZooConfig, shard: tuple[int, int]) -> Path:
    suffix = "" if shard == (0, 1) else f".shard-{shard[0]}-of-{shard[1]}"
    return Path("zoos") / f"{config.name}{suffix}.h5"


def generate(config: ZooConfig, out: str | Path | None = None, *, shard: tuple[int, int] = (0, 1),
             device: str = "auto", progress: bool = True, log: Callable[[str], None] = lambda s: print(s, flush=True),
             max_chunks: int | None = None) -> Path:
    """Generate (or resume) the zoo of ``config`` into ``out``; return the file's path.

    ``max_chunks`` stops after that many chunks (the file is then resumable, as after a crash).
    The run holds ``out``'s lock (``zoo.lock``) throughout, so a second run on the same file stops
    with a ZooFileError naming this one instead of training the same models again.
    """
    out = Path(out) if out is not None else default_output(config, shard)
    with hold(out):
        return _generate(config, out, shard=shard, device=device, progress=progress, log=log, max_chunks=max_chunks)


def _generate(config: ZooConfig, out: Path, *, shard: tuple[int, int], device: str, progress: bool,
              log: Callable[[str], None], max_chunks: int | None) -> Path:
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    indices = shard_indices(config.num_models, shard)
    if len(indices) == 0:
        raise InputError(f"--shard: shard {shard[0]}/{shard[1]} of a zoo of {config.num_models} models holds no "
                         f"models; use at most {config.num_models} shards")
    task, spec = build_task_and_spec(config)
    inr = isinstance(task, SignalSet)
    chash = config.hash()

    hparams = sample_hparams(config, indices)
    if not inr:
        check_task_variants(config, task, hparams)
    start = stored_network(config, spec)
    if start is not None and set(hparams["activation"]) != {start[1]}:
        raise ConfigError(f"{config.source}: hparams.activation: the models start from {config.init['from']} run "
                          f"{config.init['run']}, whose activation is {start[1]!r}; found "
                          f"{sorted(set(hparams['activation']))}")
    seeds = np.array([model_seed(config.seed, int(i)) for i in indices], dtype=np.uint32)
    # the initialisation's seed: the model's own, or model 0's for all (init.seeds: shared)
    init_seeds = np.full_like(seeds, model_seed(config.seed, 0)) if config.init["seeds"] == "shared" else seeds
    if out.exists():
        ident = zoo_identity(out)
        if ident["config_hash"] != chash:
            raise ZooFileError(f"{out}: made from a different config (hash {ident['config_hash']}, this config "
                               f"{chash}); refusing to overwrite it. Choose another --out or delete the file.")
        if ident["shard"] != shard:
            raise ZooFileError(f"{out}: holds shard {ident['shard'][0]}/{ident['shard'][1]}, "
                               f"not {shard[0]}/{shard[1]}")
        if ident["random_streams"] != RANDOM_STREAMS and bool((ident["status"] == STATUS_PENDING).any()):
            raise ZooFileError(f"{out}: made by an older wsl whose models drew their random numbers as "
                               f"{ident['random_streams']!r}; this one draws them as {RANDOM_STREAMS!r}, so resuming "
                               f"would mix the two in one zoo. Regenerate it (delete the file or choose another --out).")
        chunk_size = ident["chunk_size"]
        status = ident["status"]
        log(f"resuming {out}: {int((status != STATUS_PENDING).sum())} of {len(status)} models already finished")
    else:
        cs = config.training.get("chunk_size", "auto")
        bs = task.coords.shape[0] if inr else max(hparams["batch_size"], default=32)
        chunk_size = auto_chunk_size(spec, bs, dev, config.training.get("memory_budget_gb")) if cs == "auto" else int(cs)
        if inr and cs == "auto" and dev.type == "cpu":
            chunk_size = min(chunk_size, INR_CPU_CHUNK)
        status = np.full(len(indices), STATUS_PENDING, dtype=np.uint8)
        if inr:
            info = task.info | {"kind": "inr", "input_shape": [task.in_dim], "output_dim": task.out_dim}
        else:
            info = task.info | {"name": task.name, "kind": task.kind, "input_shape": list(task.input_shape),
                                "output_dim": task.output_dim}
        create_zoo(out, name=config.name, config_json=config.to_json(), config_hash=chash, spec=spec,
                   task_info=info, checkpoint_epochs=config.checkpoints,
                   metric_names=INR_METRICS if inr else metric_names(task), indices=indices, seeds=seeds,
                   hparams=hparams, chunk_size=chunk_size, shard=shard,
                   signals=signal_records(task, indices, config) if inr else None)

    chunks = plan_chunks(indices, hparams, chunk_size)
    todo = [c for c in chunks if bool((status[c] == STATUS_PENDING).any())]
    n_todo = sum(len(c) for c in todo)
    # compile the steps only if the whole zoo's training earns the compilation back: decided from
    # the config alone (all its models, whatever the shard or what is left to resume), because
    # compiled and eager steps round differently and a zoo must not depend on how it was run
    compile_run = False
    if not inr and dev.type == "cpu":
        every = hparams if len(indices) == config.num_models else sample_hparams(config, range(config.num_models))
        compile_run = run_worth_compiling(training_work(spec, task.x_train.shape[0], every["data_fraction"],
                                                        config.epochs))
    compiled_groups: set = set()  # structural groups (activation, batch size) whose step was compiled
    bar = None
    if progress and n_todo:
        from tqdm import tqdm
        bar = tqdm(total=n_todo, unit="model", desc=f"{config.name} ({dev.type})", dynamic_ncols=True,
                   bar_format=BAR_FORMAT)
    t0 = time.perf_counter()
    finished = 0  # models of this run written so far
    for k, pos in enumerate(todo):
        if max_chunks is not None and k >= max_chunks:
            break
        def on_progress(frac: float, pos=pos, start=finished) -> None:
            if bar is not None:  # absolute positions: float increments would add up past the total
                bar.update(min(bar.total, start + frac * len(pos)) - bar.n)

        chunk_hp = {name: [vals[j] for j in pos] for name, vals in hparams.items()}
        group = tuple(chunk_hp[k][0] for k in STRUCTURAL if k in chunk_hp)
        if inr:
            compiles = fit_compiles(spec, len(pos), task.coords.shape[0], dev)
        else:
            compiles = compile_run and any(compiled_parts(spec, len(pos), int(chunk_hp["batch_size"][0]), dev))
        compiles = compiles and group not in compiled_groups
        if compiles:
            compiled_groups.add(group)
        if bar is not None:  # a chunk that compiles says so, instead of extrapolating an ETA from it
            bar.bar_format = COMPILING_FORMAT if compiles else BAR_FORMAT
            bar.refresh()
        if inr:
            which = torch.as_tensor(signal_of(indices[pos], config))
            result = fit_population(spec, task.coords, task.values[which], chunk_hp, [int(seeds[j]) for j in pos],
                                    epochs=config.epochs, checkpoints=config.checkpoints, peak=task.peak,
                                    device=dev, progress=on_progress, init_seeds=[int(init_seeds[j]) for j in pos],
                                    init_scheme=config.init["scheme"], stop_psnr=config.task.get("stop_psnr"))
        else:
            result = train_population(spec, task, chunk_hp, [int(seeds[j]) for j in pos], epochs=config.epochs,
                                      checkpoints=config.checkpoints, device=dev,
                                      eval_batch=config.training.get("eval_batch"), compile=compile_run,
                                      progress=on_progress, init_seeds=[int(init_seeds[j]) for j in pos],
                                      init_params=None if start is None else start_rows(config, start[0], indices[pos]))
        write_models(out, pos, {p.name: a for p, a in zip(spec.params, result.params)}, result.metrics,
                     result.status, result.diverged_epoch)
        status[pos] = result.status
        finished += len(pos)
        n_div = int((result.status == STATUS_DIVERGED).sum())
        msg = f"chunk {k + 1}/{len(todo)} written: models {int(indices[pos[0]])}..{int(indices[pos[-1]])}"
        if n_div:
            msg += f" ({n_div} diverged)"
        bar.write(msg) if bar is not None else log(msg)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    if n_todo and (max_chunks is None or max_chunks >= len(todo)):
        log(f"{out}: {n_todo} models in {elapsed:.1f} s ({n_todo / max(elapsed, 1e-9):.1f} models/s) on {dev}")
    return out

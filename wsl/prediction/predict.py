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
from wsl.prediction.model import PropertyPredictor
from wsl.weights import WeightBatch
from zoo.weight_space import ACTIVATIONS
from zoo.errors import InputError, MissingFileError, warn

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


@dataclass
class Prediction:
    source: str  # file, or "zoo.h5#model=17@epoch=30"
    value: float | str  # regression value, or predicted class name
    confidence: float | None = None  # classification: probability of the predicted class
    true: float | str | None = None  # when the input is a zoo that stores the target


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


def _format(model: PropertyPredictor, values: torch.Tensor) -> list[tuple[float | str, float | None]]:
    if model.regression:
        return [(float(v), None) for v in values]
    names = model.hparams.class_names or [str(i) for i in range(values.shape[1])]
    conf, idx = values.max(1)
    return [(names[int(i)], float(c)) for i, c in zip(idx, conf)]


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
    if model.spec.activation is None and model.encoder.raw_weights:
        raise InputError(f"the predictor runs the networks (encoder {model.hparams.encoder!r}) and its weight space's "
                         "activation varies per network; a state_dict does not record it: pass --activation "
                         f"(one of {', '.join(ACTIVATIONS)})")
    return model.spec.activation


def predict_files(model: PropertyPredictor, files: list[Path], batch_size: int = 256,
                  activation: str | None = None, strict_names: bool = False, stream=None) -> list[Prediction]:
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
        for (f, _), (v, c) in zip(chunk, _format(model, model.predict_values(wb))):
            out.append(Prediction(str(f), v, c))
    return out


def predict_zoo(model: PropertyPredictor, path: Path, split: str | None = None, checkpoint: int = -1,
                data_state: dict | None = None, batch_size: int = 1024, recorded_split: bool = False,
                activation: str | None = None) -> list[Prediction]:
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
    preds: list[Prediction] = []
    for (_, index), (v, c) in zip(selected, _format(model, predict_weights(model, wb, batch_size))):
        t = None if truth is None else truth[runs.row((0, index))].item()
        preds.append(Prediction(f"{path}#model={index}@epoch={epoch}", v, c, t))
    return preds


def predict_weights(model: PropertyPredictor, wb: WeightBatch, batch_size: int = 1024) -> torch.Tensor:
    """The predictor's values (``predict_values``) for networks of its weight space (equal in every
    parameter; the activation may differ), in batches. Each network keeps its own activation
    (``wb.activation``, else its spec's, e.g. a zoo whose config fixes one): where the predictor's
    weight space leaves the activation per network, every batch names each network's."""
    acts = wb.activation or wb.spec.activation
    if model.spec.activation is None and acts is None:
        raise InputError("the networks' activation is not known (their weight space leaves it per network and "
                         "the batch names none); the predictor needs it")
    out = []
    for s in range(0, len(wb), batch_size):
        # the predictor's weight space: equal to the networks' in every parameter, perhaps not in activation
        part = WeightBatch.from_params(model.spec, [p[s:s + batch_size] for p in wb.params()])
        if model.spec.activation is None:
            part.activation = acts[s:s + batch_size] if isinstance(acts, list) else [acts] * len(part)
        out.append(model.predict_values(part))
    return torch.cat(out)


def run_predict(model_path: str, inputs: list[str], csv_path: str | None = None, split: str | None = None,
                checkpoint: int = -1, max_rows: int = 20, stream=None, activation: str | None = None,
                strict_names: bool = False) -> list[Prediction]:
    stream = sys.stdout if stream is None else stream  # looked up per call: redirected stdout is honoured
    ckpt = read_checkpoint(model_path, PropertyPredictor)  # once, without running code
    model = model_from_checkpoint(ckpt, model_path, PropertyPredictor)
    data_state, split_setting = _data_state(ckpt)
    files = expand_inputs(inputs)
    preds: list[Prediction] = []
    loose = [f for f in files if f.suffix != ".h5"]
    if loose:
        preds += predict_files(model, loose, activation=activation, strict_names=strict_names, stream=stream)
    for f in files:
        if f.suffix == ".h5":
            preds += predict_zoo(model, f, split, checkpoint, data_state, recorded_split=split_setting == "recorded",
                                 activation=activation)
    target = model.hparams.target or "value"
    print(f"{'input':<60} {'predicted ' + target:>20} {'true':>10}", file=stream)
    for p in preds[:max_rows]:
        val = f"{p.value:.4f}" if isinstance(p.value, float) else f"{p.value} ({p.confidence:.2f})"
        true = "" if p.true is None else (f"{p.true:.4f}" if isinstance(p.true, float) else str(p.true))
        print(f"{p.source[-60:]:<60} {val:>20} {true:>10}", file=stream)
    if len(preds) > max_rows:
        print(f"... {len(preds) - max_rows} more rows" + (f" in {csv_path}" if csv_path else " (use --csv FILE)"), file=stream)
    with_truth = [p for p in preds if p.true is not None and isinstance(p.value, float)]
    if len(with_truth) > 2:
        from scipy.stats import kendalltau

        tau = kendalltau([p.true for p in with_truth], [p.value for p in with_truth]).statistic
        print(f"Kendall tau against the stored {target} over {len(with_truth)} checkpoints: {tau:.3f}", file=stream)
    with_class = [p for p in preds if p.true is not None and isinstance(p.value, str)]
    if with_class:
        acc = np.mean([p.value == str(p.true) for p in with_class])
        print(f"accuracy against the stored {target} over {len(with_class)} checkpoints: {acc:.3f}", file=stream)
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["input", f"predicted_{target}", "confidence", f"true_{target}"])
            for p in preds:
                w.writerow([p.source, p.value, "" if p.confidence is None else p.confidence, "" if p.true is None else p.true])
        print(f"wrote {len(preds)} rows to {csv_path}", file=stream)
    return preds


def _data_state(ckpt: dict) -> tuple[dict, object]:
    """From a predictor checkpoint's dict (``read_checkpoint``): the data module's state
    (its saved split, ``Split.state``), and its ``split`` argument (fractions, or "recorded"; None
    if the checkpoint has no data module hyperparameters)."""
    split_setting = (ckpt.get("datamodule_hyper_parameters") or {}).get("split")
    for key, state in ckpt.items():
        if key.endswith("DataModule") or key == "datamodule_state":
            return (state if isinstance(state, dict) else {}), split_setting
    return {}, split_setting

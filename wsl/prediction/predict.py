"""``wsl predict``: a trained predictor applied to checkpoints from anywhere.

Inputs are ``.pt``/``.pth`` state_dicts (loaded with ``weights_only=True``: checkpoints from
strangers are untrusted), ``.safetensors`` files, folders of them, or zoo files (all finished
models at a checkpoint, or one split of the predictor's own data module). Every input is checked
against the predictor's weight space by parameter name and shape; a mismatch names both.

``--split`` on a zoo follows the split the predictor was trained with: the runs its data module
recorded for that zoo file, or, for a predictor trained with ``split: recorded`` (INR zoos), the
zoo's own per-model ``split`` field, which then works for any INR zoo of the same signals.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from wsl.data.runs import ZooRuns
from wsl.prediction.model import PropertyPredictor
from wsl.weights import WeightBatch

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")


@dataclass
class Prediction:
    source: str  # file, or "zoo.h5#model=17@epoch=30"
    value: float | str  # regression value, or predicted class name
    confidence: float | None = None  # classification: probability of the predicted class
    true: float | str | None = None  # when the input is a zoo that stores the target


def load_predictor(path: str | Path) -> PropertyPredictor:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: predictor checkpoint not found")
    # A predictor checkpoint is one this library wrote (it holds hyperparameters, not only tensors).
    model = PropertyPredictor.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    return model.eval()


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from an untrusted file: tensors only, never pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise ValueError(f"{path}: cannot be read as a tensors-only torch file ({str(e).splitlines()[0]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return obj


def expand_inputs(inputs: list[str]) -> list[Path]:
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix in CHECKPOINT_SUFFIXES + (".h5",))
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no {', '.join(CHECKPOINT_SUFFIXES + ('.h5',))} files")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: input not found")
    return files


def _format(model: PropertyPredictor, values: torch.Tensor) -> list[tuple[float | str, float | None]]:
    if model.regression:
        return [(float(v), None) for v in values]
    names = model.hparams.class_names or [str(i) for i in range(values.shape[1])]
    conf, idx = values.max(1)
    return [(names[int(i)], float(c)) for i, c in zip(idx, conf)]


def predict_files(model: PropertyPredictor, files: list[Path], batch_size: int = 256,
                  activation: str | None = None) -> list[Prediction]:
    """Predictions for state_dict files; ``activation`` names the networks' activation where the
    weight space leaves it per model (a state_dict does not record it)."""
    out: list[Prediction] = []
    sds = [(f, load_state_dict_file(f)) for f in files]
    for s in range(0, len(sds), batch_size):
        chunk = sds[s:s + batch_size]
        for f, sd in chunk:
            model.spec.check_state_dict(sd, str(f))
        wb = WeightBatch.from_state_dicts(model.spec, [sd for _, sd in chunk])
        if activation is not None:
            wb.activation = [activation] * len(wb)
        for (f, _), (v, c) in zip(chunk, _format(model, model.predict_values(wb))):
            out.append(Prediction(str(f), v, c))
    return out


def predict_zoo(model: PropertyPredictor, path: Path, split: str | None = None, checkpoint: int = -1,
                split_state: dict | None = None, batch_size: int = 1024, recorded_split: bool = False) -> list[Prediction]:
    """Predictions for the done models of a zoo (``split``: only that split's runs, from the
    predictor's saved ``split_state`` for this file or, with ``recorded_split``, the zoo's own
    ``split`` field)."""
    runs = ZooRuns(path)
    if runs.spec.to_dict()["params"] != model.spec.to_dict()["params"]:
        exp = ", ".join(f"{p.name} {list(p.shape)}" for p in model.spec.params)
        found = ", ".join(f"{p.name} {list(p.shape)}" for p in runs.spec.params)
        raise ValueError(f"{path}: weight space does not match the predictor's. Expected: {exp}. Found: {found}")
    selected = runs.done
    if split not in (None, "all") and recorded_split:
        selected = runs.recorded_split().runs[split]
    elif split not in (None, "all"):
        if not split_state or split not in split_state:
            raise ValueError(f"--split {split}: the predictor checkpoint records no '{split}' runs for this zoo")
        selected = runs.restore({"split_runs": split_state}).runs[split]
    position = runs.epoch_positions(0, "last")[0] if checkpoint == -1 else checkpoint % len(runs.checkpoint_epochs[0])
    epoch = runs.checkpoint_epochs[0][position]
    target = model.hparams.target
    truth = None
    if target in (*runs.metric_names[0], *runs.hparam_names[0], *runs.signal_names[0]):
        column = runs.column(0, target)
        truth = column[:, position] if column.ndim == 2 else column
    selected = sorted(selected)  # the order read_weights returns them in
    acts = runs.activations(selected) if runs.spec.activation is None else None
    params, _, _, _ = runs.read_weights(selected, [[position]])
    preds: list[Prediction] = []
    for s in range(0, len(selected), batch_size):
        wb = WeightBatch.from_params(runs.spec, [p[s:s + batch_size] for p in params])
        if acts is not None:
            wb.activation = acts[s:s + batch_size]
        chunk = selected[s:s + batch_size]
        for (_, index), (v, c) in zip(chunk, _format(model, model.predict_values(wb))):
            t = None if truth is None else truth[runs.row((0, index))].item()
            preds.append(Prediction(f"{path}#model={index}@epoch={epoch}", v, c, t))
    return preds


def run_predict(model_path: str, inputs: list[str], csv_path: str | None = None, split: str | None = None,
                checkpoint: int = -1, max_rows: int = 20, stream=None, activation: str | None = None) -> list[Prediction]:
    stream = sys.stdout if stream is None else stream  # looked up per call: redirected stdout is honoured
    model = load_predictor(model_path)
    runs, split_setting = _data_state(model_path)
    files = expand_inputs(inputs)
    preds: list[Prediction] = []
    loose = [f for f in files if f.suffix != ".h5"]
    if loose:
        preds += predict_files(model, loose, activation=activation)
    for f in files:
        if f.suffix == ".h5":
            preds += predict_zoo(model, f, split, checkpoint, runs.get(str(f)) or runs.get(f.name),
                                 recorded_split=split_setting == "recorded")
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


def _data_state(model_path: str) -> tuple[dict, object]:
    """From a predictor checkpoint: the data module's split runs per zoo file, and its ``split``
    argument (fractions, or "recorded"; None if the checkpoint has no data module hyperparameters)."""
    ckpt = torch.load(model_path, map_location="cpu", weights_only=False)
    split_setting = (ckpt.get("datamodule_hyper_parameters") or {}).get("split")
    for key, state in ckpt.items():
        if key.endswith("DataModule") or key == "datamodule_state":
            return (state.get("split_runs_by_zoo", {}) if isinstance(state, dict) else {}), split_setting
    return {}, split_setting

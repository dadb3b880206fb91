"""Reference predictors of a target, scored exactly like the weight-space encoders.

Both take a set-up ``ZooDataModule`` and use its split by run, its targets and its checkpoints
(``dm.items(split)``: runs, epochs and targets in loader order), and return predictions for
``dm.items("test")``, in that order, so they compare one to one with an encoder's predictions.

- ``hyperparameter_oracle``: gradient-boosted trees on each checkpoint's *true* hyperparameters
  (every hyperparameter that varies over the data module's runs) plus its epoch. It does not look
  at the weights; it says how much of the target the training recipe and the training time
  explain, a reference that weight-space predictors are measured against.
- ``statnn_trees``: the same boosted trees on per-layer weight statistics (``wsl.weights.statistics``), the
  classic setup of Unterthiner et al. 2020 ("Predicting Neural Network Accuracy from Weights").

The trees are sklearn's ``HistGradientBoostingRegressor`` (regression targets) or
``HistGradientBoostingClassifier`` (classification targets, e.g. an INR's ``label``; predictions are
class indices into ``dm.class_names``) with fixed settings; the number of boosting iterations is
chosen on the validation runs (``staged_predict``; the stage with the best Kendall tau or accuracy,
the score the encoders' checkpoints are chosen by), never on the test runs.

The oracle is refused (``NotApplicable``) on INR zoos whose models all share their hyperparameters:
there the recipe says nothing about the signal an INR fits.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from zoo.store import Zoo

from wsl.weights.statistics import weight_statistics

# Fixed tree settings, the same for both references; the iteration count is chosen on validation runs.
TREE_SETTINGS = {"learning_rate": 0.05, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 0.0}
MAX_ITER = 1000


class NotApplicable(ValueError):
    """A reference that cannot say anything on this data (callers report it as skipped)."""


def _check(dm) -> None:
    if dm.split_runs is None:
        raise RuntimeError("call dm.setup() before computing a baseline")


def _run_key(run) -> tuple[int, int]:
    """A run id of ``dm.items`` -> (zoo file position, model index)."""
    if isinstance(run, (list, tuple)):
        return int(run[0]), int(run[1])
    return 0, int(run)


def _split_arrays(dm, split: str) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    items = dm.items(split)
    runs = [_run_key(r) for r in items["runs"]]
    epochs = np.asarray(items["epochs"], dtype=np.int64)
    targets = items["targets"].numpy()
    targets = targets.astype(np.float64) if dm.task_type == "regression" else targets.astype(np.int64)
    return runs, epochs, targets


# --- features ---------------------------------------------------------------------------------------
def _hparam_table(dm) -> dict[str, dict[tuple[int, int], object]]:
    """name -> {(file position, model index): value} for the hyperparameters of every zoo file."""
    table: dict[str, dict[tuple[int, int], object]] = {}
    names = None
    for fi, path in enumerate(dm.zoos):
        with Zoo(path) as z:
            names = set(z.hparam_names) if names is None else names & set(z.hparam_names)
            for name in z.hparam_names:
                values = z.hparam(name)
                col = table.setdefault(name, {})
                for row, index in enumerate(z.index):
                    col[(fi, int(index))] = values[row]
    return {name: col for name, col in table.items() if name in names}


def _log_uniform_hparams(dm) -> set[str]:
    """Hyperparameters that some zoo file's config samples log-uniformly."""
    names = set()
    for path in dm.zoos:
        with Zoo(path) as z:
            for name, space in (z.config.get("hparams") or {}).items():
                if isinstance(space, dict) and "log_uniform" in space:
                    names.add(name)
    return names


def _encode_hparams(dm) -> tuple[list[str], dict[tuple[int, int], np.ndarray]]:
    """Feature names and one feature row per run (over all splits' runs).

    Only hyperparameters that vary over the runs are used (the target itself is left out if it is
    a hyperparameter). Numbers are used as log10 where the zoo config samples them log-uniformly
    (learning rate, weight decay, init scale in the shipped configs), else as they are; strings are
    ordinal codes (their sorted distinct values). Trees split on thresholds, so these choices only
    matter through the binning; they are here to make the features readable.
    """
    table = _hparam_table(dm)
    log_scaled = _log_uniform_hparams(dm)
    runs = sorted({_run_key(r) for s in ("train", "val", "test") for r in dm.items(s)["runs"]})
    names, columns = [], []
    for name in sorted(table):
        if name == dm.target:
            continue
        values = [table[name][r] for r in runs]
        if isinstance(values[0], (str, bytes)):
            levels = sorted(set(str(v) for v in values))
            if len(levels) < 2:
                continue
            columns.append(np.asarray([levels.index(str(v)) for v in values], dtype=np.float64))
            names.append(f"{name} (ordinal: {', '.join(levels)})")
            continue
        x = np.asarray(values, dtype=np.float64)
        if np.unique(x).size < 2:
            continue
        if name in log_scaled and x.min() > 0:
            columns.append(np.log10(x))
            names.append(f"log10 {name}")
        else:
            columns.append(x)
            names.append(name)
    rows = np.stack(columns, 1) if columns else np.zeros((len(runs), 0))
    return names, {r: rows[k] for k, r in enumerate(runs)}


def hyperparameter_features(dm, split: str) -> tuple[list[str], np.ndarray]:
    """[N, F] features of a split's checkpoints: the run's varying hyperparameters and the epoch."""
    names, per_run = _encode_hparams(dm)
    runs, epochs, _ = _split_arrays(dm, split)
    x = np.stack([per_run[r] for r in runs]) if runs else np.zeros((0, len(names)))
    return names + ["epoch"], np.concatenate([x, epochs[:, None].astype(np.float64)], 1)


def statistic_features(dm, split: str) -> np.ndarray:
    """[N, 7 * params] weight statistics of a split's checkpoints, read from the zoo files."""
    runs, epochs, _ = _split_arrays(dm, split)
    out = None
    for fi, path in enumerate(dm.zoos):
        with Zoo(path) as z:
            row_of = {int(index): row for row, index in enumerate(z.index)}
            for epoch in sorted(set(epochs.tolist())):
                pos = [k for k, (f, _) in enumerate(runs) if f == fi and epochs[k] == epoch]
                if not pos:
                    continue
                rows = np.asarray([row_of[runs[k][1]] for k in pos])
                c = z.epoch_position(epoch)
                z.load(c)  # the whole checkpoint into memory: one read instead of one per model
                weights = z.batch(rows, c)
                stats = weight_statistics(z.spec, weights).numpy().astype(np.float64)
                if out is None:
                    out = np.full((len(runs), stats.shape[1]), np.nan)
                out[pos] = stats
    if out is None:
        raise ValueError(f"split {split!r} has no checkpoints")
    return out


# --- trees --------------------------------------------------------------------------------------------
def boosted_trees(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  x_test: np.ndarray, seed: int = 0, max_iter: int = MAX_ITER,
                  classification: bool = False) -> tuple[np.ndarray, int]:
    """Fit ``max_iter`` boosting iterations on train; keep the stage with the best Kendall tau
    (classification: accuracy) on the validation checkpoints (all stages if there are fewer than
    two); return its test predictions and the number of iterations used."""
    cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
    model = cls(max_iter=max_iter, early_stopping=False, random_state=seed, **TREE_SETTINGS)
    model.fit(x_train, y_train)
    best = model.n_iter_
    if classification and len(y_val):
        best_acc = -1.0
        for k, pred in enumerate(model.staged_predict(x_val), start=1):
            acc = float(np.mean(pred == y_val))
            if acc > best_acc:
                best_acc, best = acc, k
    elif len(y_val) >= 2 and np.unique(y_val).size >= 2:
        best_tau = -np.inf
        for k, pred in enumerate(model.staged_predict(x_val), start=1):
            if np.unique(pred).size < 2:
                continue  # constant predictions (the first stages of a weak feature set): tau undefined
            tau = kendalltau(y_val, pred).statistic
            if tau > best_tau:
                best_tau, best = tau, k
    for k, pred in enumerate(model.staged_predict(x_test), start=1):
        if k == best:
            return pred, best
    raise RuntimeError("unreachable: the chosen stage is beyond the fitted iterations")


def hyperparameter_oracle(dm, seed: int = 0, max_iter: int = MAX_ITER) -> np.ndarray:
    """Predictions for ``dm.items("test")`` from the runs' true hyperparameters and the epoch."""
    _check(dm)
    inr = []
    for path in dm.zoos:
        with Zoo(path) as z:
            if z.is_inr:
                inr.append(path)
    if inr and not _encode_hparams(dm)[0]:
        raise NotApplicable(f"hyperparameter oracle skipped: {', '.join(inr)} is an INR zoo whose models all share "
                            f"their hyperparameters, so they say nothing about the signal each INR fits")
    data = {}
    for s in ("train", "val", "test"):
        data[s] = (hyperparameter_features(dm, s)[1], _split_arrays(dm, s)[2])
    pred, _ = boosted_trees(data["train"][0], data["train"][1], data["val"][0], data["val"][1],
                            data["test"][0], seed, max_iter, dm.task_type == "classification")
    return pred


def statnn_trees(dm, seed: int = 0, max_iter: int = MAX_ITER) -> np.ndarray:
    """Predictions for ``dm.items("test")`` from per-layer weight statistics (Unterthiner et al. 2020)."""
    _check(dm)
    data = {s: (statistic_features(dm, s), _split_arrays(dm, s)[2]) for s in ("train", "val", "test")}
    pred, _ = boosted_trees(data["train"][0], data["train"][1], data["val"][0], data["val"][1],
                            data["test"][0], seed, max_iter, dm.task_type == "classification")
    return pred

"""Reference predictors of a target, scored exactly like the weight-space encoders.

Both take a set-up ``PropertyDataModule`` and use its split by run, its targets and its checkpoints
(``dm.items(split)``: runs, epochs and targets in loader order), and return predictions for
``dm.items("test")``, in that order, so they compare one to one with an encoder's predictions.

- ``hyperparameter_oracle``: gradient-boosted trees on each checkpoint's *true* hyperparameters
  (every hyperparameter that varies over the data module's runs) plus its epoch. It does not look
  at the weights; it says how much of the target the training recipe and the training time
  explain, a reference that weight-space predictors are measured against.
- ``statnn_trees``: the same boosted trees on per-layer weight statistics (``wsl.weights.statistics``), the
  classic setup of Unterthiner et al. 2020 ("Predicting Neural Network Accuracy from Weights").
- ``linear_on_weights``: logistic (classification) or ridge (regression) regression on the raw
  flattened weights, standardised per entry, its regularisation chosen on validation. It knows
  nothing of symmetries; where it scores well (a zoo trained from one shared initialisation, whose
  neurons stay aligned) a benchmark cannot tell an equivariant encoder from a linear model.

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
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from wsl.data.runs import run_key
from wsl.weights.statistics import weight_statistics
from zoo.store import SPLITS
from zoo.errors import InputError

# Inverse regularisation strengths of the linear reference (C; ridge alpha = 1 / C), chosen on validation.
LINEAR_C = (0.001, 0.01, 0.1, 1.0)
# Fixed tree settings, the same for both references; the iteration count is chosen on validation runs.
TREE_SETTINGS = {"learning_rate": 0.05, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 0.0}
MAX_ITER = 1000


class NotApplicable(ValueError):
    """A reference that cannot say anything on this data (callers report it as skipped)."""


def _check(dm) -> None:
    if dm.split_runs is None:
        raise RuntimeError("call dm.setup() before computing a baseline")


def _split_arrays(dm, split: str) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    items = dm.items(split)
    runs = [run_key(r) for r in items["runs"]]
    epochs = np.asarray(items["epochs"], dtype=np.int64)
    targets = items["targets"].numpy()
    targets = targets.astype(np.float64) if dm.task_type == "regression" else targets.astype(np.int64)
    return runs, epochs, targets


# --- features ---------------------------------------------------------------------------------------
def _log_uniform_hparams(dm) -> set[str]:
    """Hyperparameters that some zoo file's config samples log-uniformly."""
    return {name for config in dm.runs.configs for name, space in (config.get("hparams") or {}).items()
            if isinstance(space, dict) and "log_uniform" in space}


def _encode_hparams(dm) -> tuple[list[str], dict[tuple[int, int], np.ndarray]]:
    """Feature names and one feature row per run (over all splits' runs).

    Only hyperparameters that every file stores and that vary over the runs are used (the target
    itself is left out if it is a hyperparameter). Numbers are used as log10 where the zoo config
    samples them log-uniformly (learning rate, weight decay, init scale in the shipped configs), else
    as they are; strings are ordinal codes (their sorted distinct values). Trees split on thresholds,
    so these choices only matter through the binning; they are here to make the features readable.
    """
    log_scaled = _log_uniform_hparams(dm)
    runs = sorted({run_key(r) for s in SPLITS for r in dm.items(s)["runs"]})
    shared = set.intersection(*[set(names) for names in dm.runs.hparam_names])
    names, columns = [], []
    for name in sorted(shared):
        if name == dm.target:
            continue
        values = dm.runs.values(name, runs)
        if values.dtype.kind in "OUS":
            levels = sorted(set(values.astype(str).tolist()))
            if len(levels) < 2:
                continue
            columns.append(np.searchsorted(np.asarray(levels), values.astype(str)).astype(np.float64))
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
    """[N, 7 * params] weight statistics of a split's checkpoints, from the weights the data module
    holds (in loader order)."""
    wb = dm.weights(split)
    if not len(wb):
        raise InputError(f"split {split!r} has no checkpoints")
    return np.concatenate([weight_statistics(dm.spec, wb[s:s + 4096].to_dict()).numpy().astype(np.float64)
                           for s in range(0, len(wb), 4096)])


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
    inr = [path for path, is_inr in zip(dm.zoos, dm.runs.is_inr) if is_inr]
    if inr and not _encode_hparams(dm)[0]:
        raise NotApplicable(f"hyperparameter oracle skipped: {', '.join(inr)} is an INR zoo whose models all share "
                            f"their hyperparameters, so they say nothing about the signal each INR fits")
    data = {}
    for s in SPLITS:
        data[s] = (hyperparameter_features(dm, s)[1], _split_arrays(dm, s)[2])
    pred, _ = boosted_trees(data["train"][0], data["train"][1], data["val"][0], data["val"][1],
                            data["test"][0], seed, max_iter, dm.task_type == "classification")
    return pred


def statnn_trees(dm, seed: int = 0, max_iter: int = MAX_ITER) -> np.ndarray:
    """Predictions for ``dm.items("test")`` from per-layer weight statistics (Unterthiner et al. 2020)."""
    _check(dm)
    data = {s: (statistic_features(dm, s), _split_arrays(dm, s)[2]) for s in SPLITS}
    pred, _ = boosted_trees(data["train"][0], data["train"][1], data["val"][0], data["val"][1],
                            data["test"][0], seed, max_iter, dm.task_type == "classification")
    return pred


def linear_on_weights(dm, seed: int = 0) -> np.ndarray:
    """Predictions for ``dm.items("test")`` of a linear model on the raw flattened weights."""
    _check(dm)
    x = {s: dm.weights(s).flatten().numpy().astype(np.float64) for s in SPLITS}
    y = {s: _split_arrays(dm, s)[2] for s in SPLITS}
    scaler = StandardScaler().fit(x["train"])
    x = {s: np.nan_to_num(scaler.transform(v)) for s, v in x.items()}
    classification = dm.task_type == "classification"
    best, best_score = None, -np.inf
    for c in LINEAR_C:
        model = (LogisticRegression(C=c, max_iter=1000, random_state=seed) if classification
                 else Ridge(alpha=1.0 / c, random_state=seed)).fit(x["train"], y["train"])
        if not len(y["val"]):
            best = model
            break
        pred = model.predict(x["val"])
        score = (float(np.mean(pred == y["val"])) if classification
                 else kendalltau(y["val"], pred).statistic if np.unique(pred).size > 1 else -np.inf)
        if best is None or score > best_score:
            best, best_score = model, score
    return best.predict(x["test"])

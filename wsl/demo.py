"""``wsl demo``: the whole story on the embedded default, in minutes on a laptop CPU.

1. generate the demo zoo (configs/zoo/digits_mlp.yaml; resumes if it exists),
2. split it by run into train / validation / test runs,
3. train predictors of test accuracy from weights (per-layer weight statistics + boosted trees,
   Unterthiner et al. 2020) and, for context, from the true hyperparameters,
4. predict the held-out runs' checkpoints, print Kendall tau / R^2 / MAE, plot predicted vs true,
5. export one held-out checkpoint as a plain ``state_dict`` file, load it back the untrusted way
   (``weights_only=True``), check it against the weight space, and predict it.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, r2_score

from zoo.architectures import TorchNet
from zoo.config import load_config
from zoo.generate import build_task_and_spec, generate
from zoo.store import Zoo

from .features import weight_statistics
from .plots import prediction_scatter

TARGET = "test_acc"


def split_runs(rows: np.ndarray, seed: int = 0, fractions=(0.7, 0.1, 0.2)) -> dict[str, np.ndarray]:
    """Split model rows (one run each) into train / val / test runs, seeded."""
    perm = np.random.default_rng(seed).permutation(rows)
    n_train, n_val = int(fractions[0] * len(rows)), int(fractions[1] * len(rows))
    return {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train:n_train + n_val]),
            "test": np.sort(perm[n_train + n_val:])}


def _fit_boosted(x_train, y_train, x_val, y_val, seed: int = 0) -> HistGradientBoostingRegressor:
    """Boosted trees with the number of iterations chosen on validation runs (never test runs)."""
    model = HistGradientBoostingRegressor(max_iter=400, learning_rate=0.05, early_stopping=False, random_state=seed)
    model.fit(x_train, y_train)
    val_err = [np.mean((p - y_val) ** 2) for p in model.staged_predict(x_val)]
    best = int(np.argmin(val_err)) + 1
    model.set_params(max_iter=best)
    return model.fit(x_train, y_train)


def _report(name: str, y: np.ndarray, p: np.ndarray) -> str:
    tau = kendalltau(y, p).statistic
    return f"{name:<34} tau {tau:6.3f}   R2 {r2_score(y, p):6.3f}   MAE {mean_absolute_error(y, p):.4f}"


def run_demo(out_dir: str | Path = "wsl_demo", config: str | Path = "configs/zoo/digits_mlp.yaml",
             device: str = "auto") -> dict[str, float]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config)
    t0 = time.perf_counter()
    print(f"[1/5] generating the zoo {cfg.name}: {cfg.num_models} models x {cfg.epochs} epochs")
    zoo_path = generate(cfg, out_dir / f"{cfg.name}.h5", device=device)
    zoo = Zoo(zoo_path)
    print(zoo.summary())

    print("[2/5] splitting by run (70% train / 10% validation / 20% test runs)")
    runs = split_runs(zoo.select(), seed=0)
    ckpts = [c for c, e in enumerate(zoo.checkpoint_epochs) if e > 0]  # trained checkpoints
    target = zoo.metric(TARGET)

    def stats(rows, c):
        return weight_statistics(zoo.spec, zoo.batch(rows, c)).numpy()

    def features(rows):  # every trained checkpoint of these runs: features, targets, final-checkpoint mask
        x = np.concatenate([stats(rows, c) for c in ckpts])
        y = np.concatenate([target[rows, c] for c in ckpts])
        last = np.concatenate([np.full(len(rows), c == ckpts[-1]) for c in ckpts])
        return x, y, last

    print(f"[3/5] training predictors of {TARGET} on {len(runs['train'])} runs x {len(ckpts)} checkpoints")
    (xtr, ytr, _), (xva, yva, _), (xte, yte, last) = (features(runs[s]) for s in ("train", "val", "test"))
    weights_model = _fit_boosted(xtr, ytr, xva, yva)

    hp_names = [h for h in zoo.hparam_names if len(np.unique(zoo.hparam(h))) > 1]

    def hp_features(rows):  # true hyperparameters + the checkpoint's epoch
        cols = []
        for h in hp_names:
            v = zoo.hparam(h)[rows]
            cols.append(np.unique(v, return_inverse=True)[1].astype(float) if v.dtype.kind in "OUS" else np.log(np.abs(v.astype(float)) + 1e-12))
        x = np.stack(cols, 1) if cols else np.zeros((len(rows), 0))
        return np.concatenate([np.concatenate([x, np.full((len(rows), 1), zoo.checkpoint_epochs[c])], 1) for c in ckpts])

    hp_model = _fit_boosted(hp_features(runs["train"]), ytr, hp_features(runs["val"]), yva)

    print(f"[4/5] predicting {len(runs['test'])} held-out runs ({len(yte)} checkpoints)")
    p_w = weights_model.predict(xte)
    p_h = hp_model.predict(hp_features(runs["test"]))
    lines = [_report("weights: layer statistics + trees", yte, p_w),
             _report("context: true hyperparameters + trees", yte, p_h),
             _report("weights, final checkpoints only", yte[last], p_w[last])]
    print("\n".join("  " + l for l in lines))
    plot = prediction_scatter({
        "weight statistics + boosted trees": (yte, p_w, f"Kendall tau {kendalltau(yte, p_w).statistic:.3f}"),
        "true hyperparameters + boosted trees": (yte, p_h, f"Kendall tau {kendalltau(yte, p_h).statistic:.3f}"),
    }, TARGET, out_dir / "predicted_vs_true.png")
    print(f"  plot: {plot}")

    print("[5/5] predicting a held-out checkpoint exported as a plain state_dict file")
    row = int(runs["test"][0])
    ckpt_file = out_dir / f"model_{int(zoo.index[row])}.pt"
    torch.save(zoo.state_dict(row, -1), ckpt_file)
    state = torch.load(ckpt_file, weights_only=True)  # untrusted files: tensors only
    zoo.spec.check_state_dict(state, str(ckpt_file))
    task, _ = build_task_and_spec(cfg)
    activation = zoo.spec.activation or str(zoo.hparam("activation")[row])
    net = TorchNet(zoo.spec, activation=activation)
    net.load_state_dict(state)
    with torch.no_grad():
        measured = (net(task.x_test).argmax(1) == task.y_test).float().mean().item()
    pred = weights_model.predict(weight_statistics(zoo.spec, {k: v[None] for k, v in state.items()}).numpy())[0]
    print(f"  {ckpt_file}: predicted {TARGET} {pred:.3f}; measured by running it on the test set {measured:.3f} "
          f"(stored {target[row, -1]:.3f})")
    print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {out_dir}/")
    zoo.close()
    return {"tau_weights": float(kendalltau(yte, p_w).statistic), "tau_hparams": float(kendalltau(yte, p_h).statistic)}

"""Check that population training runs on CUDA and agrees with the CPU.

    python scripts/check_cuda.py            # needs a CUDA device

Trains the same 64 digits MLPs (SGD and Adam mixed, dropout 0) on CPU and on CUDA and prints the
largest weight difference after 3 epochs, then the test accuracies' largest difference.
"""
import sys
import time

import numpy as np
import torch

from zoo.architectures import build_spec
from zoo.config import model_seed
from zoo.tasks import load_task
from zoo.train import train_population


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    task = load_task("digits")
    spec = build_spec("mlp", task.input_shape, task.output_dim, hidden=[32, 32], activation="tanh")
    M = 64
    rng = np.random.default_rng(0)
    hp = {"lr": list(np.exp(rng.uniform(np.log(1e-3), np.log(3e-2), M))), "optimizer": ["sgd", "adam"] * (M // 2),
          "momentum": [0.9] * M, "weight_decay": [1e-4] * M, "init_scale": list(rng.uniform(0.5, 1.5, M)),
          "dropout": [0.0] * M, "data_fraction": list(rng.uniform(0.3, 1.0, M)), "label_noise": [0.1] * M,
          "batch_size": [32] * M, "activation": ["tanh"] * M}
    seeds = [model_seed(0, i) for i in range(M)]
    res = {}
    for dev in ("cpu", "cuda"):
        t = time.perf_counter()
        res[dev] = train_population(spec, task, hp, seeds, epochs=3, checkpoints=[3], device=dev)
        print(f"{dev}: {time.perf_counter() - t:.2f} s")
    dw = max(float(np.abs(a - b).max()) for a, b in zip(res["cpu"].params, res["cuda"].params))
    da = float(np.abs(res["cpu"].metrics["test_acc"] - res["cuda"].metrics["test_acc"]).max())
    print(f"max |w_cpu - w_cuda| = {dw:.2e}; max |test_acc difference| = {da:.4f}")
    return 0 if dw < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())

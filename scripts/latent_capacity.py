"""How much of a held-out network can a latent weight model keep? (diagnostic for latent diffusion)

A latent generator (p-diff, SANE) can only produce what its autoencoder decodes well. This script
measures, on a zoo's validation runs (never its test runs), how good the reconstructions of
held-out networks are, as accuracy on the task's validation examples beside the originals':

- the span of the training networks: projection onto their top-k principal components (k up to
  all of them), the best any linear code learned from them can do;
- the neuron-token autoencoder of ``LatentDiffusion`` (``wsl.diffusion.autoencoder``) at several
  code widths per neuron, each trained for a fixed wall-clock budget on the training runs.

The data are those of the latent generator: the zoo's ReLU networks, final checkpoints, aligned to
one training network, normalized per tensor.

    python scripts/latent_capacity.py --latent-dims 4 16 32 --minutes 3

The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wsl.data import WeightDataModule  # noqa: E402
from wsl.data.task import source_task  # noqa: E402
from wsl.diffusion.autoencoder import WeightAutoencoder  # noqa: E402
from wsl.diffusion.networks import evaluate_networks  # noqa: E402
from wsl.weights import WeightBatch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zoo", default=str(ROOT / "zoos" / "digits_mlp.h5"))
    ap.add_argument("--components", nargs="+", type=int, default=[32, 128, 296, 512],
                    help="principal components kept (all of them is added)")
    ap.add_argument("--latent-dims", nargs="*", type=int, default=[4, 16, 32], help="autoencoder code widths per neuron")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per autoencoder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(args.seed)
    dm = WeightDataModule([args.zoo], select={"activation": "relu"}, checkpoints="last", split=[0.7, 0.1, 0.2],
                          split_seed=0, batch_size=64, align=True)
    dm.setup("fit")
    spec, norm = dm.spec, dm.normalizers()["weight_normalizer"]
    task = source_task(json.loads(dm.source_json)["config"])
    train = norm(dm.weights("train")).flatten()
    val = norm(dm.weights("val")).flatten()

    def accuracy(flat: torch.Tensor) -> float:
        """Mean accuracy on the task's validation examples of normalized flat weights (non-finite: 0)."""
        wb = norm.inverse(WeightBatch.from_flat(spec, flat.float()))
        return float(np.nan_to_num(evaluate_networks(spec, wb, task, splits=("val",))["val_acc"], nan=0.0).mean())

    def mse(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(((a - b) ** 2).mean())

    rows = [{"code": "original networks", "dims": spec.num_params, "val_mse": 0.0, "val_acc": accuracy(val)}]
    print(f"{args.zoo}: {len(train)} training and {len(val)} validation networks, {spec.num_params} weights; "
          f"originals' validation accuracy {rows[0]['val_acc']:.3f}", flush=True)
    mean = train.double().mean(0)
    _, _, vt = torch.linalg.svd(train.double() - mean, full_matrices=False)
    for k in sorted({*[c for c in args.components if c < len(vt)], len(vt)}):
        basis = vt[:k]
        rec = ((val.double() - mean) @ basis.T @ basis + mean).float()
        rows.append({"code": f"training span, top {k} components", "dims": k, "val_mse": mse(rec, val),
                     "val_acc": accuracy(rec)})
        print(f"  {rows[-1]['code']:<40} val mse {rows[-1]['val_mse']:.3f}  reconstructions' val acc "
              f"{rows[-1]['val_acc']:.3f}", flush=True)
    for width in args.latent_dims:
        ae = WeightAutoencoder(spec, latent_dim=width, d_model=args.d_model)
        opt = torch.optim.AdamW(ae.parameters(), lr=1e-3)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < 60 * args.minutes:
            for batch in dm.train_dataloader():
                loss = ae.loss(batch[0].flatten()).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps += 1
                if time.perf_counter() - start >= 60 * args.minutes:
                    break
        ae.eval()
        with torch.no_grad():
            rec, rec_train = ae.decode(ae.encode(val)), ae.decode(ae.encode(train))
        dims = int(np.prod(ae.code_shape))
        rows.append({"code": f"autoencoder, {width} per neuron", "dims": dims, "steps": steps,
                     "train_mse": mse(rec_train, train), "val_mse": mse(rec, val), "val_acc": accuracy(rec)})
        print(f"  {rows[-1]['code']:<40} val mse {rows[-1]['val_mse']:.3f}  reconstructions' val acc "
              f"{rows[-1]['val_acc']:.3f}  ({dims} code dims, {steps} steps; train mse "
              f"{rows[-1]['train_mse']:.3f})", flush=True)
    print("\n| code | dims | val MSE (normalized) | reconstructions' val accuracy |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['code']} | {r['dims']} | {r['val_mse']:.3f} | {r['val_acc']:.3f} |")
    print(json.dumps({"benchmark": "latent_capacity", "zoo": args.zoo, "minutes_per_autoencoder": args.minutes,
                      "val_variance": float(val.var(0).mean()), "rows": rows}))


if __name__ == "__main__":
    main()

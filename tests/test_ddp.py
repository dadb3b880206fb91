"""``wsl fit`` under Lightning's DDP strategy with 2 CPU processes (gloo): training runs, each rank
serves its share of the (streamed) zoo, and the validation metrics are gathered over the whole
validation split: Kendall tau equals the single-process tau of the same model."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from conftest import generate_zoo
from wsl.data import PropertyDataModule
from wsl.core.checkpoint import model_from_checkpoint, read_checkpoint
from wsl.prediction.model import PropertyPredictor
from wsl.core.trainer import gather_lists, make_trainer

RAW = {
    "name": "ddp", "seed": 7, "num_models": 120, "epochs": 2, "checkpoints": [0, 1, 2],
    "task": {"name": "digits", "n_train": 200, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [8, 8]},
    "hparams": {"lr": {"log_uniform": [0.003, 0.3]}, "optimizer": {"choice": ["sgd", "adam"]}},
    "training": {"chunk_size": 120},
}
DATA = {"target": "test_acc", "checkpoints": "all", "split": [0.6, 0.2, 0.2], "split_seed": 0, "batch_size": 16}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return generate_zoo(RAW, tmp_path_factory.mktemp("ddp") / "zoo.h5")


def _gather_in_rank(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank of a gloo world: gather lists of different lengths per rank, write what it got."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        got = gather_lists([f"rank{rank}-item{k}" for k in range(rank + 1)])
        Path(out_dir, f"{rank}.json").write_text(json.dumps(got))
    finally:
        dist.destroy_process_group()


def test_gather_lists_joins_every_ranks_list_in_rank_order(tmp_path):
    with socket.socket() as s:  # a free port for the process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_gather_in_rank, args=(2, port, str(tmp_path)), nprocs=2, start_method="spawn")
    expected = ["rank0-item0", "rank1-item0", "rank1-item1"]
    assert [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)] == [expected, expected]
    assert gather_lists([1, 2]) == [1, 2]  # without a process group: the list itself


def test_two_process_fit_gathers_validation_tau_over_ranks(zoo, tmp_path):
    # the 2-process run streams its data (a cache smaller than the zoo's checkpoints)
    config = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 4, "default_root_dir": str(tmp_path / "runs"), "accelerator": "cpu",
                    "devices": 2, "strategy": "ddp", "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path / "logs"), "name": "ddp"}}},
        "data": {"class_path": "wsl.data.PropertyDataModule", "init_args": {"zoos": [zoo], **DATA, "cache_mb": 0.2}},
        "model": {"class_path": "wsl.prediction.model.PropertyPredictor",
                  "init_args": {"encoder": "deepsets", "encoder_kwargs": {"hidden": 16}, "lr": 0.01}},
    }
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-m", "wsl.cli", "fit", "--config", str(cfg)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "logs" / "ddp" / "version_0" / "metrics.csv")))
    logged = [float(r["val/tau"]) for r in rows if r.get("val/tau")]
    assert len(logged) == 4  # one value per epoch, not one per rank
    last = next(tmp_path.rglob("last.ckpt"))

    # the same model, validated in one process on the data held in memory
    ckpt = read_checkpoint(last, PropertyPredictor)
    model = model_from_checkpoint(ckpt, last, PropertyPredictor)
    dm = PropertyDataModule([zoo], **DATA, cache_mb=None)
    dm.setup("fit")
    dm.load_state_dict(ckpt["PropertyDataModule"])
    [single] = make_trainer(1, accelerator="cpu").validate(model, datamodule=dm, verbose=False)
    assert logged[-1] == pytest.approx(single["val/tau"], abs=1e-6)
    assert single["val/tau"] > 0.2  # a trained model: not a degenerate tau

"""scripts/benchmark_transfer.py end to end on two tiny zoos of one weight space and different
hyperparameter distributions; the shipped transfer configs parse and pair up."""
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import generate_zoo
from zoo.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import benchmark_transfer as bt  # noqa: E402

BASE = {
    "name": "train", "seed": 3, "num_models": 48, "epochs": 2, "checkpoints": [0, 1, 2],
    "task": {"name": "digits", "n_train": 200, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [8, 8]},
    "hparams": {"lr": {"log_uniform": [0.003, 0.3]}, "optimizer": {"choice": ["sgd", "adam"]},
                "activation": {"choice": ["relu", "tanh"]}},
    "training": {"chunk_size": 48},
}
SHIFTED = {**BASE, "name": "shifted", "seed": 5, "num_models": 24, "epochs": 3, "checkpoints": [0, 1, 3],
           "hparams": {"lr": {"log_uniform": [0.001, 0.03]}, "optimizer": "adamw", "momentum": 0.5,
                       "batch_size": 64, "activation": {"choice": ["relu", "tanh"]}}}
TINY = {"probe": {"lr": 1e-3, "encoder_kwargs": {"probes": 8, "hidden": 16, "layers": 2}}}


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    d = tmp_path_factory.mktemp("transfer")
    return (generate_zoo(BASE, d / "a.h5"),
            generate_zoo(SHIFTED, d / "c.h5"))


def test_shifted_data_is_every_trained_checkpoint_of_every_done_run(zoos):
    from zoo.store import Zoo
    shifted = bt.shifted_data(zoos[1])
    with Zoo(zoos[1]) as z:
        done = int(z.done.sum())
    assert shifted["runs"] == done
    assert len(shifted["truth"]) == len(shifted["weights"]) == len(shifted["stats"]) == 2 * done  # epochs 1, 3
    assert shifted["weights"].activation is not None  # per-network activations travel with the weights


def test_run_training_set_gives_finite_taus(zoos):
    shifted = bt.shifted_data(zoos[1])
    out = bt.run_training_set([zoos[0]], shifted, [bt.TREES, "probe"], TINY, seed=0, epochs=1, tree_iters=10,
                              batch_size=16, log=lambda s: None)
    for name in (bt.TREES, "probe"):
        assert "error" not in out[name], out[name]
        for key in bt.KEYS:
            assert np.isfinite(out[name][key]), (name, key, out[name])
    lines = bt.table_lines({"A": {n: {0: r} for n, r in out.items()}})
    assert len(lines) == 4 and "probe" in lines[-1]


def test_probe_fn_is_the_probe_without_weight_statistics():
    encoder, settings = bt.predictor_settings("probe-fn", bt.bp.PREDICTORS)
    assert encoder == "probe" and settings["encoder_kwargs"]["weight_stats"] is False
    assert bt.bp.PREDICTORS["probe"]["encoder_kwargs"]["weight_stats"] is True  # not changed in place


def test_transfer_zoo_configs_share_the_demo_architecture():
    raw = {n: yaml.safe_load((ROOT / "configs" / "zoo" / f"{n}.yaml").read_text())
           for n in ("digits_mlp", "digits_mlp_wide", "digits_mlp_shifted")}
    configs = {n: parse_config(r, n) for n, r in raw.items()}
    for n in ("digits_mlp_wide", "digits_mlp_shifted"):
        assert configs[n].architecture == configs["digits_mlp"].architecture
        assert configs[n].task == configs["digits_mlp"].task
    predict = yaml.safe_load((ROOT / "configs" / "predict" / "digits_transfer_probe.yaml").read_text())
    assert predict["data"]["init_args"]["zoos"] == ["zoos/digits_mlp.h5", "zoos/digits_mlp_wide.h5"]

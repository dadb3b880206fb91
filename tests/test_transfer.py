"""scripts/benchmark_transfer.py end to end on tiny zoos of one weight space and different
hyperparameter distributions (a mixture to train on, several shifted zoos to score); the shipped
transfer configs parse and pair up, and the shifted ones move one axis each."""
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


# a second shifted zoo: the activation fixed (relu) where the training zoo's varies, another last epoch
SHIFTED_RELU = {**SHIFTED, "name": "shifted_relu", "seed": 6, "num_models": 16, "epochs": 2, "checkpoints": [0, 2],
                "hparams": {**SHIFTED["hparams"], "activation": "relu"}}
# a training zoo of the same weight space ending at another epoch than BASE: a mixture's final checkpoints
OTHER = {**BASE, "name": "other", "seed": 7, "num_models": 32, "epochs": 3, "checkpoints": [0, 1, 3]}


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    d = tmp_path_factory.mktemp("transfer")
    return (generate_zoo(BASE, d / "a.h5"),
            generate_zoo(SHIFTED, d / "c.h5"),
            generate_zoo(SHIFTED_RELU, d / "c_relu.h5"),
            generate_zoo(OTHER, d / "b.h5"))


def test_shifted_data_is_every_trained_checkpoint_of_every_done_run(zoos):
    from zoo.store import Zoo
    shifted = bt.shifted_data(zoos[1])
    with Zoo(zoos[1]) as z:
        done = int(z.done.sum())
    assert shifted["runs"] == done and shifted["name"] == "c"
    assert len(shifted["truth"]) == len(shifted["weights"]) == len(shifted["stats"]) == 2 * done  # epochs 1, 3
    assert shifted["last"].sum() == done  # one final (epoch 3) checkpoint per run
    assert shifted["weights"].activation is not None  # per-network activations travel with the weights


def test_final_checkpoints_are_at_the_last_epoch_of_each_runs_zoo():
    one = {"runs": [4, 4, 7, 7], "epochs": [1, 3, 1, 3]}
    assert bt.final_checkpoints(one).tolist() == [False, True, False, True]
    # a mixture: zoo 0 ends at epoch 2, zoo 1 at epoch 3
    mixed = {"runs": [(0, 1), (0, 1), (1, 1), (1, 1), (1, 2)], "epochs": [1, 2, 2, 3, 3]}
    assert bt.final_checkpoints(mixed).tolist() == [False, True, False, True, True]


def test_run_training_set_scores_every_shifted_zoo_with_trust(zoos, tmp_path):
    """The multi-zoo path: a mixture of two training zoos with different last epochs, two shifted
    zoos (one with a fixed activation); every score finite, the trust figures in range, and the
    report's tables and JSON line written."""
    shifted = [bt.shifted_data(zoos[1]), bt.shifted_data(zoos[2])]
    out = bt.run_training_set([zoos[0], zoos[3]], shifted, [bt.TREES, "probe"], TINY, seed=0, epochs=1,
                              tree_iters=10, batch_size=16, log=lambda s: None)
    columns = [bt.IN_DIST, "c", "c_relu"]
    for name in (bt.TREES, "probe"):
        assert "error" not in out[name], out[name]
        assert list(out[name]["scores"]) == columns
        for column in columns:
            for key in bt.RANK_KEYS:
                assert np.isfinite(out[name]["scores"][column][key]), (name, column, key)
    assert "cover" not in out[bt.TREES]["scores"]["c"]  # trees give no intervals
    for column in columns:
        s = out["probe"]["scores"][column]
        for key in ("cover", "width", "last_cover", "flagged", "last_flagged"):
            assert 0 <= s[key] <= (np.inf if "width" in key else 1), (column, key, s[key])
        assert (s["last_cover_flagged"] is None) == (s["last_flagged"] == 0)
    for column in columns[1:]:
        assert 0 <= out["probe"]["scores"][column]["last_auroc"] <= 1
    results = {"A+B": {n: {0: r} for n, r in out.items()}}
    summary = bt.summarize(results["A+B"]["probe"])
    assert summary["n_ok"] == 1 and summary["scores"]["c_relu"]["last_tau"]["n"] == 1
    report = {"command": "python scripts/benchmark_transfer.py --quick", "date": "today", "device": "cpu",
              "settings": {"training_sets": {"A+B": [zoos[0], zoos[3]]}, "seeds": [0], "epochs": 1,
                           "augment": bt.bp.AUGMENT, "level": bt.LEVEL, "ood_alpha": bt.OOD_ALPHA},
              "shifted_zoos": {z["name"]: bt.zoo_info(z) for z in shifted}, "results": results}
    bt.write_markdown(tmp_path / "transfer.md", report)
    text = (tmp_path / "transfer.md").read_text()
    assert "| A+B | probe | c_relu |" in text and f"| A+B | {bt.TREES} |" in text
    trust_rows = [line for line in text.splitlines() if line.startswith("| A+B | StatNN + trees | c")]
    assert not trust_rows  # the trees have no row in the trust table


def test_main_writes_one_json_line_with_every_figure(zoos, tmp_path, capsys):
    import json
    bt.main(["--train-zoos", zoos[0], "--test-zoos", zoos[1], zoos[2], "--no-mixture", "--encoders", "probe",
             "--no-references", "--quick", "--seeds", "0", "--epochs", "1", "--out-md", str(tmp_path / "t.md")])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["shifted_zoos"]) == {"c", "c_relu"}
    scores = report["summary"]["A"]["probe"]["scores"]
    assert set(scores) == {bt.IN_DIST, "c", "c_relu"} and scores["c"]["last_auroc"]["n"] == 1


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


def test_shift_zoo_configs_move_one_axis_each_off_the_demo_zoo():
    """The default --test-zoos: one shipped config per axis, the demo zoo's task and architecture,
    1,000 runs of 20 epochs each with its own seed."""
    demo = parse_config(yaml.safe_load((ROOT / "configs" / "zoo" / "digits_mlp.yaml").read_text()), "digits_mlp")
    seeds = {demo.seed}
    for axis in bt.SHIFT_AXES:
        name = f"digits_mlp_shift_{axis}"
        c = parse_config(yaml.safe_load((ROOT / "configs" / "zoo" / f"{name}.yaml").read_text()), name)
        assert c.name == name and f"zoos/{name}.h5" in bt.TEST_ZOOS
        assert c.architecture == demo.architecture and c.task == demo.task
        assert (c.num_models, c.epochs, c.checkpoints) == (1000, 20, [0, 1, 2, 5, 10, 20])
        assert c.seed not in seeds
        seeds.add(c.seed)
        if axis != "user":  # one axis moved, every other hyperparameter as in the demo zoo
            moved = {"optimizer": {"optimizer", "momentum"}, "batch": {"batch_size"}, "data": {"data_fraction"},
                     "noise": {"label_noise"}, "init": {"init_scale"}}[axis]
            assert {k for k in c.hparams if c.hparams[k] != demo.hparams[k]} == moved, axis

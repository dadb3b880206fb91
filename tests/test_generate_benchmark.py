"""``scripts/benchmark_generate.py``'s data-scale study, generated initialisations and throughput,
end to end on two tiny nested zoos; and the helpers its verdicts rest on."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import load_script
from zoo.config import load_config, parse_config
from zoo.generate import generate
from zoo.store import Zoo



def _bench():
    return load_script("benchmark_generate")


def tiny_good(num_models: int) -> dict:
    return {"name": f"tiny_good_{num_models}", "seed": 0, "num_models": num_models, "epochs": 3,
            "checkpoints": [0, 3], "task": {"name": "digits"},
            "architecture": {"name": "mlp", "hidden": [8], "activation": "relu"},
            "hparams": {"optimizer": "sgd", "momentum": 0.9, "lr": {"log_uniform": [0.02, 0.05]}, "batch_size": 32}}


def test_epochs_to_target_and_the_scale_verdict():
    bench = _bench()
    acc = np.array([[0.5, 0.95, 0.97], [0.91, 0.2, 0.95], [0.1, 0.2, 0.3]])
    assert bench.epochs_to(acc, [0, 3, 6], 0.9).tolist() == [3, 0, np.inf]
    row = {"gen_quality_mean": 0.92, "weight_novelty_median": 5.0, "reference_nn_distance_median": 4.0,
           "matched_noise_quality_mean": 0.80, "train_quality_mean": 0.95}
    assert bench.scale_targets(row) == {"accurate": True, "as_novel_as_training_networks": True,
                                        "noise_there_loses_10_points": True}
    row |= {"weight_novelty_median": 3.0, "matched_noise_quality_mean": 0.9}
    assert bench.scale_targets(row) == {"accurate": True, "as_novel_as_training_networks": False,
                                        "noise_there_loses_10_points": False}


def test_scale_study_init_study_and_throughput_end_to_end(tmp_path, one_thread):
    bench = _bench()
    zoos = []
    for n in (30, 60):
        cfg = tmp_path / f"tiny_good_{n}.yaml"
        cfg.write_text(yaml.safe_dump(tiny_good(n)))
        zoos.append(str(tmp_path / f"tiny_good_{n}.h5"))
        generate(load_config(cfg), zoos[-1], progress=False)
    with Zoo(zoos[0]) as a, Zoo(zoos[1]) as b:  # one seed: the smaller zoo is the first runs of the larger
        assert np.array_equal(a.batch(np.arange(30), 0)["layers.0.weight"], b.batch(np.arange(30), 0)["layers.0.weight"])
    out = tmp_path / "bench"
    res = bench.main(["--scales", *zoos, "--generators", "flat", "--seeds", "0", "--minutes", "0.1", "--num", "8",
                      "--val-steps", "5", "--init-epochs", "2", "--throughput", "40", "--out-dir", str(out)])
    by_size = res["scale"]["summary"]["flat"]
    assert [by_size[z]["train_runs"] for z in zoos] == [21, 42]  # 70% of each zoo trains the generator
    for run in res["scale"]["runs"]:
        assert np.isfinite(run["reference_nn_distance_median"]) and 0 <= run["gen_quality_mean"] <= 1
        novelty = [n for _, n, _ in run["noise_curve"]]
        assert len(novelty) == 5 and novelty == sorted(novelty)  # more noise, farther from the training nets
    assert (out / "scale_flat.png").stat().st_size > 0
    assert len(by_size["targets_on_largest"]) == 1

    init = res["generated_init"]["summary"]
    assert set(init) == set(bench.INIT_SETTINGS)
    generated = out / f"scale_{Path(zoos[-1]).stem}" / "flat_seed0" / "generated.h5"
    with Zoo(generated) as g:  # the generated start is the generated networks, as wsl sample scored them
        start = float(g.metric("test_acc")[g.done, -1].mean())
    assert init["all data"]["generated"]["start_acc"] == pytest.approx(start, abs=1e-6)
    assert {k.split(" (")[0] for k in init["all data"]} == {"random", "generated", "training nets + noise"}
    ratio = init["all data"]["random"]["epochs_ratio_to_random"]
    assert ratio == 1.0 or np.isnan(ratio)  # nan: random starts never reached 0.9

    speed = res["throughput"]
    assert speed["networks"] == 40 and 0 <= speed["finite"] <= 40 and speed["networks_per_minute"] > 0
    half = speed["half_steps"]
    assert (speed["sample_steps"], half["sample_steps"]) == (50, 25) and half["networks"] == 40
    with Zoo(out / f"scale_{Path(zoos[-1]).stem}" / "flat_seed0" / "throughput_25.h5") as z:
        assert z.generated["steps"] == 25
        assert half["test_acc_mean"] == pytest.approx(float(np.nanmean(z.column("test_acc"))))


def test_canonical_order_is_kept_at_low_noise_and_lost_at_high(tmp_path, one_thread):
    """The diagnostic behind the canonical generator's conditional figures: near-clean networks keep
    their canonical order, pure noise sets its own (chance: 1 / width)."""
    bench = _bench()
    cfg = tiny_good(60) | {"architecture": {"name": "mlp", "hidden": [16, 16], "activation": "relu"}}
    zoo = tmp_path / "tiny.h5"
    generate(parse_config(cfg), zoo, progress=False)
    best, _ = bench.fit("canonical", 0, str(zoo), 0.02, tmp_path / "canonical")
    from wsl.core.checkpoint import load_model
    from wsl.diffusion.model import WeightGenerator

    kept = bench.canonical_order_kept(load_model(best, WeightGenerator), str(zoo), best, num=40)
    assert list(kept) == list(bench.CANONICAL_LEVELS) and set(kept[8.0]) == {"hidden0", "hidden1"}
    for layer in ("hidden0", "hidden1"):
        assert kept[8.0][layer] > 0.6 and kept[-4.0][layer] < 0.35
        assert all(0 <= kept[lv][layer] <= 1 for lv in kept)

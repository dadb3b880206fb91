"""Generated zoos and the memorization suite: the file round-trips, the task is rebuilt, copies are
found (also when permuted), baselines behave, conditional agreement is computed right, the CLI
writes its report."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import generate_zoo, hidden_perms, random_weights, save_untrained_predictor
from wsl.cli import main
from wsl.data.runs import ZooRuns, check_same_space
from wsl.diffusion import evaluate_networks, source_task, write_generated_zoo, wrong_sets
from wsl.diffusion.memorization import evaluate_generated
from wsl.diffusion.novelty import behavioural_novelty, reference_index, weight_novelty
from wsl.diffusion.reference_baselines import average_baseline, calibrate_noise, gaussian_baseline, noise_baseline
from wsl.diffusion.scores import conditional_agreement
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute
from zoo.architectures import build_spec
from zoo.config import parse_config
from zoo.generate import build_task_and_spec
from zoo.store import STATUS_DIVERGED, STATUS_DONE, Zoo
from zoo.train import evaluate
from zoo.verify import verify

RAW = {"name": "gen_ref", "seed": 5, "num_models": 24, "epochs": 4, "checkpoints": [0, 4],
       "task": {"name": "digits", "n_train": 200, "n_val": 97},
       "architecture": {"name": "mlp", "hidden": [8, 8], "activation": "relu"},
       "hparams": {"lr": {"log_uniform": [0.02, 0.2]}, "momentum": 0.9}}
TRAIN_RUNS = list(range(16))  # the generator's "training" networks: the first 16 of the zoo


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Weight matching on tiny matrices: one thread (see conftest)."""


@pytest.fixture(scope="module")
def ref_zoo(tmp_path_factory):
    return generate_zoo(RAW, tmp_path_factory.mktemp("ref") / "ref.h5")


@pytest.fixture(scope="module")
def setup(ref_zoo):
    """The reference zoo's networks at the last checkpoint, its spec, config and rebuilt task."""
    with Zoo(ref_zoo) as z:
        wb = WeightBatch.from_params(z.spec, z.batch(np.arange(len(z)), -1))
        config, spec = z.config, z.spec
    return {"wb": wb, "spec": spec, "config": config, "task": source_task(config)}


def _provenance(**over):
    return {"generator": "gen.ckpt", "generator_sha256": "ab" * 32, "seed": 7, "guidance": 1.0,
            "conditions": ["test_acc=0.5"], "source_zoo": "ref.h5", "select": {"activation": "relu"},
            "train_runs": np.asarray(TRAIN_RUNS), "checkpoint_epoch": 4} | over


@pytest.fixture(scope="module")
def gen_zoo(setup, tmp_path_factory):
    """A stand-in generated zoo: held-out networks 16..23, one permuted copy of training network 2,
    and one network with NaN weights; requested_test_acc = achieved + known offsets."""
    wb = setup["wb"]
    copy = permute(wb[2], hidden_perms(setup["spec"], 1, seed=3))
    nan = wb[0].map(lambda t: torch.full_like(t, float("nan")))
    g = WeightBatch.cat([wb[torch.arange(16, 24)], copy, nan])
    acc = evaluate_networks(setup["spec"], g, setup["task"])["test_acc"]
    requested = np.nan_to_num(acc, nan=0.5) + np.linspace(-0.05, 0.05, len(g))
    path = tmp_path_factory.mktemp("gen") / "gen.h5"
    write_generated_zoo(path, name="gen", source_config=setup["config"], spec=setup["spec"], task=setup["task"],
                        wb=g, hparams={"requested_test_acc": requested.tolist()}, generated=_provenance(),
                        checkpoint_epoch=4)
    return str(path), g, requested


# --- the generated zoo file ------------------------------------------------------------------------

def test_source_task_rebuilds_the_zoo_task(setup):
    task, _ = build_task_and_spec(parse_config(RAW))
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(setup["task"], f"x_{split}"), getattr(task, f"x_{split}"))
        assert torch.equal(getattr(setup["task"], f"y_{split}"), getattr(task, f"y_{split}"))


def test_generated_zoo_round_trips(gen_zoo, setup):
    path, g, requested = gen_zoo
    with Zoo(path) as z:
        assert z.generated == _provenance(train_runs=TRAIN_RUNS)
        assert z.config_hash.startswith("generated-") and z.config == setup["config"]
        assert z.checkpoint_epochs == [4]
        assert z.status.tolist() == [STATUS_DONE] * 9 + [STATUS_DIVERGED]
        assert z.diverged_epoch[-1] == 4
        back = z.batch(np.arange(len(z)), -1)
        for p, t in zip(setup["spec"].params, g.params()):
            np.testing.assert_array_equal(back[p.name].numpy(), t.numpy())
        np.testing.assert_allclose(z.hparam("requested_test_acc"), requested)
        # every metric is what the population forward gives, for the finite networks
        ok = [k for k in range(len(g) - 1)]
        for split in ("train", "val", "test"):
            direct = evaluate(setup["spec"], [t[ok] for t in g.params()], setup["task"],
                              getattr(setup["task"], f"x_{split}"), getattr(setup["task"], f"y_{split}"))
            for k, v in direct.items():
                stored = z.metric(f"{split}_{k}")[:, 0]
                np.testing.assert_allclose(stored[ok], v.numpy(), rtol=1e-6)
                assert np.isnan(stored[-1])
        summary = z.summary()
    assert "generated  " in summary and "train_runs [16 values]" in summary
    assert verify(path) == []
    # what wsl predict and the data modules read: the done runs, their weights
    runs = ZooRuns(path)
    assert len(runs.done) == 9
    params = runs.read_weights(runs.items(runs.done, [[0]]))
    np.testing.assert_array_equal(params[0].numpy(), g.params()[0][:9].numpy())


def test_write_generated_zoo_never_overwrites_a_trained_zoo(setup, ref_zoo, gen_zoo):
    from zoo.store import ZooFileError

    kw = dict(name="g", source_config=setup["config"], spec=setup["spec"], task=setup["task"], wb=setup["wb"][0],
              hparams={}, generated={"seed": 1}, checkpoint_epoch=4)
    with pytest.raises(ZooFileError, match="not a generated zoo"):
        write_generated_zoo(ref_zoo, **kw)
    with Zoo(ref_zoo) as z:
        assert z.generated is None and len(z) == 24


def test_cli_info_and_verify_accept_a_generated_zoo(gen_zoo, capsys):
    assert main(["zoo", "info", gen_zoo[0]]) == 0
    assert "generated" in capsys.readouterr().out
    assert main(["zoo", "verify", gen_zoo[0]]) == 0


def test_nonfinite_weights_give_nan_metrics(setup):
    wb = setup["wb"][torch.arange(3)]
    wb.weights[1][1, 0, 0] = float("inf")
    m = evaluate_networks(setup["spec"], wb, setup["task"])
    assert np.isnan(m["test_acc"][1]) and np.isfinite(m["test_acc"][[0, 2]]).all()
    wrong = wrong_sets(setup["spec"], wb, setup["task"])
    assert wrong[1].all()
    np.testing.assert_allclose(1 - wrong[[0, 2]].mean(1), m["test_acc"][[0, 2]], rtol=1e-6)


# --- novelty ---------------------------------------------------------------------------------------

def test_copies_have_zero_weight_novelty_and_permuted_copies_zero_only_after_alignment(setup):
    ref = setup["wb"][torch.arange(16)]
    exact = ref[4]
    permuted = permute(ref[9], hidden_perms(setup["spec"], 1, seed=1))
    out = weight_novelty(WeightBatch.cat([exact, permuted]), ref, candidates=4)
    assert out["nearest"].tolist() == [4, 9]
    assert out["distance"].max() < 1e-9
    assert out["distance_unaligned"][0] < 1e-9
    assert out["distance_unaligned"][1] > 0.1  # before alignment the permuted copy looks like another network


def test_weight_matching_lowers_the_pruning_bound(setup):
    """Held-out networks: weight matching only lowers the frame distance, and does for some."""
    ref, held = setup["wb"][torch.arange(16)], setup["wb"][torch.arange(16, 24)]
    out = weight_novelty(held, ref, candidates=4)
    assert (out["distance"] <= out["distance_pruning"] + 1e-9).all()
    assert (out["distance"] < out["distance_pruning"] - 1e-6).any()
    assert (out["distance"] > 1e-3).all()


def test_weight_novelty_excludes_self_and_sees_nan(setup):
    ref = setup["wb"][torch.arange(16)]
    own = weight_novelty(ref, ref, candidates=4, exclude=np.arange(16))
    assert (own["distance"] > 1e-3).all() and (own["nearest"] != np.arange(16)).all()
    nan = ref[0].map(lambda t: torch.full_like(t, float("nan")))
    out = weight_novelty(WeightBatch.cat([nan, ref[1]]), ref, candidates=4)
    assert np.isnan(out["distance"][0]) and out["nearest"][0] == -1 and out["distance"][1] < 1e-9


def test_reference_index_is_reused_only_for_the_same_networks_and_settings(setup):
    ref = setup["wb"][torch.arange(16)]
    first = reference_index(ref, anchors=2, seed=0)
    assert reference_index(ref[torch.arange(16)], anchors=2, seed=0) is first  # same content, another object
    held = setup["wb"][torch.arange(16, 20)]
    fresh = weight_novelty(held, ref, candidates=4, anchors=2, seed=0)
    cached = weight_novelty(held, ref, candidates=4, seed=0, index=reference_index(ref, anchors=2, seed=0))
    np.testing.assert_array_equal(fresh["distance"], cached["distance"])
    other_seed = reference_index(ref, anchors=2, seed=1)
    assert other_seed is not first
    changed = ref.map(lambda t: t.clone())
    changed.weights[0][3, 0, 0] += 1e-3  # one weight of one network
    assert reference_index(changed, anchors=2, seed=1) is not other_seed


def test_behavioural_novelty_of_a_copy_is_one(setup):
    ref = setup["wb"][torch.arange(16)]
    ref_wrong = wrong_sets(setup["spec"], ref, setup["task"])
    copy = permute(ref[5], hidden_perms(setup["spec"], 1, seed=2))
    assert behavioural_novelty(wrong_sets(setup["spec"], copy, setup["task"]), ref_wrong)[0] == 1.0
    own = behavioural_novelty(ref_wrong, ref_wrong, exclude=np.arange(16))
    assert (own < 1).any()
    # IoU on constructed sets: {0, 1} vs {1, 2} = 1/3, vs {0, 1, 2, 3} = 1/2
    a = np.array([[1, 1, 0, 0]], bool)
    assert behavioural_novelty(a, np.array([[0, 1, 1, 0]], bool))[0] == pytest.approx(1 / 3)
    assert behavioural_novelty(a, np.array([[0, 1, 1, 0], [1, 1, 1, 1]], bool))[0] == pytest.approx(1 / 2)


# --- baselines -------------------------------------------------------------------------------------

def test_noise_baseline_novelty_grows_with_sigma(setup):
    ref = setup["wb"][torch.arange(16)]
    medians = [np.median(weight_novelty(noise_baseline(ref, 8, s, seed=0), ref, candidates=4)["distance"])
               for s in (0.0, 0.01, 0.1, 1.0)]
    assert medians[0] < 1e-9
    assert np.all(np.diff(medians) > 0), medians
    # sigma is relative to each tensor's RMS: the noise's norm is sigma times the source's norm
    src = noise_baseline(ref, 8, 0.0, seed=0)
    noisy = noise_baseline(ref, 8, 0.1, seed=0)
    ratio = (noisy.flatten() - src.flatten()).norm(dim=1) / src.flatten().norm(dim=1)
    assert ratio.mean().item() == pytest.approx(0.1, rel=0.2)


def test_calibrated_noise_matches_a_target_novelty(setup):
    ref = setup["wb"][torch.arange(16)]

    def median(wb):
        return float(np.median(weight_novelty(wb, ref, candidates=4)["distance"]))

    target = median(noise_baseline(ref, 8, 0.2, seed=0))
    cal = calibrate_noise(ref, 8, target, median, seed=0, known={0.01: median(noise_baseline(ref, 8, 0.01, seed=0))})
    assert cal["converged"] and abs(cal["median_weight_novelty"] - target) <= 0.02 * target
    assert cal["sigma"] == pytest.approx(0.2, rel=0.1) and cal["evaluations"] >= 1
    low = calibrate_noise(ref, 8, 0.0, median, seed=0)  # a memorizing generator: below any noise
    assert not low["converged"] and "more novelty" in low["note"]


def test_average_baseline(setup):
    ref = setup["wb"][torch.arange(16)]
    one = average_baseline(ref, 10, 1, aligned=True, seed=0)
    dist = torch.cdist(one.flatten().double(), ref.flatten().double())
    assert dist.min(1).values.max().item() == 0  # k=1: each network is a reference network, exactly
    # a network and its permuted copy: aligned, their average is the network; unaligned it is not
    pair = WeightBatch.cat([ref[3], permute(ref[3], hidden_perms(setup["spec"], 1, seed=4))]).to(torch.float64)
    aligned = average_baseline(pair, 4, 2, aligned=True, seed=0)
    assert weight_novelty(aligned, pair, candidates=2)["distance"].max() < 1e-9
    unaligned = average_baseline(pair, 4, 2, aligned=False, seed=0)
    assert weight_novelty(unaligned, pair, candidates=2)["distance"].min() > 0.1
    with pytest.raises(ValueError, match="k=3"):
        average_baseline(pair, 1, 3, aligned=False)


def test_gaussian_baseline_matches_the_references_statistics(setup):
    ref = setup["wb"][torch.arange(16)].to(torch.float64)
    draws = gaussian_baseline(ref, 4000, aligned=False, seed=0)
    assert len(draws) == 4000
    flat, rflat = draws.flatten(), ref.flatten()
    assert (flat.mean(0) - rflat.mean(0)).abs().max() < 5 * rflat.std(0).max() / np.sqrt(4000) + 1e-12
    np.testing.assert_allclose(flat.std(0), rflat.std(0, correction=0), rtol=0.1, atol=1e-9)
    again = gaussian_baseline(ref, 4, aligned=True, seed=1)
    assert torch.equal(again.flatten(), gaussian_baseline(ref, 4, aligned=True, seed=1).flatten())


# --- conditional, errors, the report --------------------------------------------------------------

def test_conditional_agreement_on_a_constructed_case():
    req = np.array([0.1, 0.2, 0.3, 0.4, 0.5, np.nan])
    ach = np.array([0.15, 0.1, 0.35, 0.6, 0.55, 0.3])
    c = conditional_agreement(req, ach)
    r, a = req[:5], ach[:5]
    assert c["n"] == 5 and c["n_left_out"] == 1
    assert c["pearson"] == pytest.approx(np.corrcoef(r, a)[0, 1])
    assert c["spearman"] == pytest.approx(np.corrcoef([1, 2, 3, 4, 5], [2, 1, 3, 5, 4])[0, 1])  # ranks of ach
    assert c["mae"] == pytest.approx(np.abs(r - a).mean())
    assert np.isnan(conditional_agreement([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])["pearson"])


def test_mismatched_weight_space_is_a_clear_error(setup, ref_zoo, tmp_path):
    other = build_spec("mlp", (64,), 10, hidden=[4], activation="relu")
    with pytest.raises(ValueError, match=r"layers.0.weight \[4, 64\].*layers.0.weight \[8, 64\]"):
        check_same_space(other, setup["spec"])
    path = tmp_path / "other.h5"
    write_generated_zoo(path, name="other", source_config=setup["config"], spec=other, task=setup["task"],
                        wb=random_weights(other, n=3, dtype=torch.float32, std=0.1), hparams={},
                        generated={"seed": 0}, checkpoint_epoch=4)
    with pytest.raises(ValueError, match=rf"{path}.*\[4, 64\].*{ref_zoo}.*\[8, 64\]"):
        evaluate_generated(path, ref_zoo, tmp_path / "report")


def test_cli_writes_the_report(gen_zoo, ref_zoo, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["evaluate-generated", gen_zoo[0], "--reference", ref_zoo, "--out-dir", str(out),
                 "--candidates", "4"]) == 0
    printed = capsys.readouterr().out
    assert "| generator | 10 |" in printed and "report.md" in printed
    for name in ("report.json", "report.md", "accuracy_vs_novelty.png", "conditional.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["n_reference"] == len(TRAIN_RUNS) and report["reference_selection"]["checkpoint_epoch"] == 4
    assert report["reference_metric_check"]["agrees"] and report["methods"]["reference (all)"]["n"] == 16
    gen = report["methods"]["generator"]
    assert gen["quality"]["n_nonfinite"] == 1
    # the permuted copy of training network 2 is found: novelty 0, errs exactly like it
    nets = report["generator_networks"]
    assert nets["weight_novelty"][8] < 1e-6 and nets["nearest_reference_model"][8] == 2
    assert nets["behavioural_novelty"][8] == 1.0 and nets["weight_novelty"][9] is None
    for name in ("noise sigma=0.01", "noise sigma=1", "noise sigma=matched", "average k=2 aligned", "average k=4",
                 "gaussian", "gaussian aligned", "reference (nearest other reference)"):
        assert report["methods"][name]["n"] > 0, name
    assert report["noise_calibration"]["sigma"] > 0
    cond = report["conditional"]["test_acc"]
    assert cond["n"] == 9 and cond["mae"] == pytest.approx(np.abs(np.linspace(-0.05, 0.05, 10)[:9]).mean(), rel=1e-4)
    assert "| generator |" in (out / "report.md").read_text()


def test_wsl_predict_reads_a_generated_zoo(gen_zoo, tmp_path, capsys):
    """A predictor (untrained: only reading matters here) predicts the generated zoo's done networks."""
    ckpt = save_untrained_predictor(gen_zoo[0], tmp_path / "p.ckpt", trained_on="/nowhere/ref.h5")
    csv = tmp_path / "p.csv"
    assert main(["predict", "--model", str(ckpt), gen_zoo[0], "--csv", str(csv)]) == 0
    assert len(csv.read_text().strip().splitlines()) == 1 + 9  # header + the 9 done networks


def test_merge_keeps_the_provenance(gen_zoo, tmp_path):
    from zoo.merge import merge

    path, g, _ = gen_zoo
    out = merge([path], tmp_path / "merged.h5")
    with Zoo(path) as a, Zoo(out) as b:
        assert b.generated == a.generated and b.generated["seed"] == 7
        assert np.array_equal(b.status, a.status)


# --- INR zoos: generated INRs judged against held-out images ---------------------------------------
INR_RAW = {"name": "inr_ref", "seed": 0, "num_models": 40, "epochs": 200, "checkpoints": [0, 200],
           "task": {"name": "digits-inr", "n_train": 24, "n_val": 8, "n_test": 8},
           "architecture": {"name": "siren", "hidden": [16, 16], "omega_0": 30},
           "hparams": {"lr": 0.005, "optimizer": "adam"}}


@pytest.fixture(scope="module")
def inr_setup(tmp_path_factory):
    """A tiny digits-INR zoo; its training INRs are the references, and a stand-in generated zoo
    holds a permuted copy of training INR 3, a test INR, and a constant (all-zero) INR."""
    ref = generate_zoo(INR_RAW, tmp_path_factory.mktemp("inr") / "inr_ref.h5")
    with Zoo(ref) as z:
        wb = WeightBatch.from_params(z.spec, z.batch(np.arange(len(z)), -1))
        config, spec, split = z.config, z.spec, z.signal("split").astype(str)
        labels, signal_of = z.signal("label"), z.signal("signal")
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    copy = permute(wb[int(train[3])], hidden_perms(spec, 1, seed=1))
    zero = wb[0].map(torch.zeros_like)
    g = WeightBatch.cat([copy, wb[int(test[0])], zero])
    requested = [int(labels[train[3]]), int(labels[test[0]]), 0]
    path = tmp_path_factory.mktemp("inrgen") / "gen.h5"
    write_generated_zoo(path, name="gen", source_config=config, spec=spec, task=source_task(config), wb=g,
                        hparams={"requested_label": requested},
                        generated=_provenance(train_runs=train, checkpoint_epoch=200, select={}), checkpoint_epoch=200)
    return {"ref": ref, "gen": str(path), "g": g, "wb": wb, "spec": spec, "config": config, "train": train,
            "test": test, "signal_of": signal_of, "task": source_task(config)}


def test_generated_inr_zoo_stores_the_nearest_test_image_as_its_signal(inr_setup):
    from wsl.diffusion.networks import render
    from zoo.inr import psnr

    task, g = inr_setup["task"], inr_setup["g"]
    test_signals = task.values[torch.as_tensor(inr_setup["test"])]
    outputs = render(inr_setup["spec"], g, task.coords)
    with Zoo(inr_setup["gen"]) as z:
        assert z.is_inr and z.done.all() and z.metric_names == ["mse", "psnr"]
        stored = torch.as_tensor(z.file["signals/values"][()])
        which = z.signal("signal")
        assert (z.signal("split").astype(str) == "test").all()
        np.testing.assert_array_equal(z.signal("label"), np.asarray(task.fields["label"])[which])
        for k in range(len(g)):
            errors = (outputs[k] - test_signals).pow(2).mean((1, 2))
            assert torch.equal(stored[k], task.values[which[k]])  # the nearest test image, stored as its signal
            assert float((outputs[k] - stored[k]).pow(2).mean()) == pytest.approx(float(errors.min()), rel=1e-5)
            assert z.metric("mse")[k, -1] == pytest.approx(float(errors.min()), rel=1e-4)
            assert z.metric("psnr")[k, -1] == pytest.approx(float(psnr(errors.min(), task.peak)), rel=1e-4)
        assert which[1] == inr_setup["signal_of"][inr_setup["test"][0]]  # a test INR's nearest test image: its own
    out = Path(inr_setup["gen"]).with_suffix(".png")
    assert main(["zoo", "render", inr_setup["gen"], "--split", "all", "--out", str(out)]) == 0 and out.exists()


def test_suite_on_inrs_finds_the_copy_and_scores_against_held_out_images(inr_setup, tmp_path):
    report = evaluate_generated(inr_setup["gen"], inr_setup["ref"], tmp_path, max_reference=None, sigmas=(0.1,),
                                average_ks=(2,), self_subset=8)
    g = report["generator_networks"]
    assert report["metric"] == "test_psnr" and report["higher_is_better"]
    assert g["weight_novelty"][0] == pytest.approx(0.0, abs=1e-4)  # the permuted copy, found after alignment
    assert g["nearest_reference_model"][0] == inr_setup["train"][3]
    assert g["behavioural_novelty"][0] > 100  # renders exactly like a reference: hundreds of dB
    assert g["behavioural_novelty"][1] < 60  # a held-out INR draws an image no reference draws
    assert g["metric"][2] < g["metric"][1]  # the blank INR is further from every test image
    cond = report["conditional"]["label"]
    assert cond["n"] == 3 and 0 <= cond["exact"] <= 1
    assert "PSNR (dB) between their renderings" in Path(report["files"]["markdown"]).read_text()


def test_nearest_signal_skips_the_excluded_one():
    from wsl.diffusion.networks import nearest_signal

    signals = torch.arange(4.0).view(4, 1, 1).expand(4, 3, 1)
    index, mse = nearest_signal(signals.clone(), signals, exclude=np.asarray([0, -1, 2, 3]))
    assert index.tolist() == [1, 1, 1, 2] and mse.tolist() == [1.0, 0.0, 1.0, 1.0]
    index, mse = nearest_signal(torch.full((1, 3, 1), float("nan")), signals)
    assert index.tolist() == [-1] and np.isnan(mse).all()

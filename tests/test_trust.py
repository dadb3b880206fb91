"""Predictions a user can trust: conformal intervals and sets, the out-of-distribution score, and
both carried by a predictor's checkpoint into wsl predict."""
import csv

import pytest
import torch

from conftest import generate_zoo, hidden_perms, random_weights
from wsl.cli import main
from wsl.core.checkpoint import load_model
from wsl.data import PropertyDataModule
from wsl.prediction.conformal import ConformalCalibration, conformal_quantile
from wsl.prediction.fit import fit_predictor
from wsl.prediction.model import PropertyPredictor
from wsl.prediction.ood import OODScore
from wsl.prediction.predict import predict_trust, run_predict
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute
from zoo.architectures import build_spec
from zoo.errors import InputError
from zoo.store import Zoo


# --- conformal intervals and sets -------------------------------------------------------------------
def test_conformal_quantile_is_the_finite_sample_order_statistic():
    scores = torch.tensor([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0])  # n = 9
    assert conformal_quantile(scores, 0.9) == 9.0  # ceil(10 * 0.9) = 9th smallest
    assert conformal_quantile(scores, 0.5) == 5.0  # ceil(10 * 0.5) = 5th
    assert conformal_quantile(scores, 0.95) == float("inf")  # ceil(9.5) = 10 > n: no finite interval


def _heteroscedastic(n, seed):
    gen = torch.Generator().manual_seed(seed)
    predicted = torch.rand(n, generator=gen)
    truth = predicted + (0.01 + 0.2 * predicted) * torch.randn(n, generator=gen)  # noise grows with the value
    return predicted, truth


def test_intervals_cover_their_level_overall_and_within_each_range_of_predictions():
    cal = ConformalCalibration(regression=True, min_per_bin=200, max_bins=5)
    cal.calibrate(*_heteroscedastic(2000, seed=0))
    predicted, truth = _heteroscedastic(40000, seed=1)
    low, high = cal.interval(predicted, 0.9)
    covered = (truth >= low) & (truth <= high)
    assert 0.88 <= covered.float().mean() <= 0.92
    low_range, high_range = predicted < 0.2, predicted > 0.8
    for part in (low_range, high_range):  # Mondrian: the guarantee holds per bin of predicted value
        assert 0.87 <= covered[part].float().mean() <= 0.93
    width = high - low
    assert width[high_range].mean() > 4 * width[low_range].mean()  # narrow where the noise is small
    assert (cal.interval(predicted, 0.5)[1] - cal.interval(predicted, 0.5)[0]).mean() < width.mean()


def test_prediction_sets_cover_their_level_for_a_calibrated_classifier():
    gen = torch.Generator().manual_seed(0)

    def draw(n):
        probs = torch.distributions.Dirichlet(torch.full((5,), 0.7)).sample((n,))
        return probs, torch.multinomial(probs, 1, generator=gen).squeeze(1)

    cal = ConformalCalibration(regression=False)
    cal.calibrate(*draw(3000))
    probs, labels = draw(30000)
    sets = cal.prediction_sets(probs, 0.9)
    assert 0.88 <= sets[torch.arange(len(labels)), labels].float().mean() <= 0.92
    assert sets.sum(1).float().mean() < 5  # smaller than the trivial set
    assert (sets.sum(1)[probs.max(1).values > 0.95] == 1).all()  # a confident prediction is a set of one


def test_bad_levels_and_missing_calibration_are_clear_errors():
    cal = ConformalCalibration(regression=True)
    with pytest.raises(InputError, match="carries no conformal calibration"):
        cal.interval(torch.zeros(3), 0.9)
    cal.calibrate(torch.zeros(10), torch.ones(10))
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        cal.interval(torch.zeros(3), 1.5)
    with pytest.raises(InputError, match="12 predictions but 11 true values"):
        cal.calibrate(torch.zeros(12), torch.ones(11))


# --- the out-of-distribution score --------------------------------------------------------------------
SPEC = build_spec("mlp", (6,), 3, hidden=[8, 8], activation="relu")


def test_ood_p_values_are_valid_in_distribution_and_small_for_shifted_networks():
    ood = OODScore(SPEC, k=5)
    ood.fit(random_weights(SPEC, seed=0, n=800, dtype=torch.float32))
    ood.calibrate(ood.features(random_weights(SPEC, seed=1, n=400, dtype=torch.float32)))
    in_dist = ood.p_value(ood.score(random_weights(SPEC, seed=2, n=2000, dtype=torch.float32)))
    assert 0.07 <= (in_dist <= 0.1).float().mean() <= 0.13  # P(p <= a) <= a: about a, for exchangeable networks
    shifted = ood.p_value(ood.score(random_weights(SPEC, seed=3, n=200, dtype=torch.float32, std=2.0)))
    assert (shifted < 0.01).all()


def test_ood_score_is_invariant_to_hidden_neuron_permutations():
    ood = OODScore(SPEC, k=5)
    ood.fit(random_weights(SPEC, seed=0, n=300, dtype=torch.float32))
    wb = random_weights(SPEC, seed=4, n=4, dtype=torch.float32)
    torch.testing.assert_close(ood.score(permute(wb, hidden_perms(SPEC, n=4))), ood.score(wb))
    assert not torch.allclose(ood.score(wb), ood.score(wb.map(lambda t: 1.5 * t)))


def test_ood_score_without_a_reference_is_a_clear_error():
    with pytest.raises(InputError, match="no out-of-distribution reference"):
        OODScore(SPEC).score(random_weights(SPEC, n=2, dtype=torch.float32))


# --- in a fitted predictor and wsl predict ------------------------------------------------------------
@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trust")
    zoo = generate_zoo({
        "name": "tiny", "seed": 0, "num_models": 60, "epochs": 2, "checkpoints": [0, 1, 2],
        "task": {"name": "digits", "n_train": 200, "n_val": 97},
        "architecture": {"name": "mlp", "hidden": [8, 8], "activation": "relu"},
        "hparams": {"lr": {"log_uniform": [0.001, 0.5]}, "optimizer": {"choice": ["sgd", "adam"]}},
        "training": {"chunk_size": 64}}, tmp / "tiny.h5")
    dm = PropertyDataModule([zoo], target="test_acc", checkpoints="all", batch_size=16)
    fitted = fit_predictor(dm, "statnn", {}, 3e-3, 2, tmp / "fit", enable_progress_bar=False, logger=False)
    return tmp, zoo, dm, fitted


def test_a_fitted_predictor_is_calibrated_on_its_validation_runs_and_its_checkpoint_keeps_it(trusted):
    _, _, dm, fitted = trusted
    model = fitted.model
    assert model.conformal.calibrated and model.ood.calibrated
    assert model.conformal.size == len(dm.items("val")["targets"])  # every validation checkpoint, once
    assert len(model.ood.calibration) == len(dm.items("val")["targets"])
    assert len(model.ood.reference) == len(dm.items("train")["targets"])  # under max_reference: all of them
    wb = dm.weights("test")
    trust = predict_trust(model, wb, batch_size=7, level=0.8)  # batches joined
    assert ((trust.low <= trust.values) & (trust.values <= trust.high)).all()
    assert ((trust.low >= 0) & (trust.high <= 1)).all()  # accuracy intervals stay in [0, 1]
    assert ((trust.ood_p > 0) & (trust.ood_p <= 1)).all()
    again = load_model(fitted.checkpoint, PropertyPredictor).trust(wb, 0.8)
    for key in ("values", "low", "high", "ood_score", "ood_p"):
        torch.testing.assert_close(getattr(again, key), getattr(trust, key), msg=key)


def test_a_checkpoint_written_before_calibration_loads_and_says_so(trusted, tmp_path, capsys):
    _, zoo, _, fitted = trusted
    ckpt = torch.load(fitted.checkpoint, weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.endswith("_extra_state")}
    torch.save(ckpt, tmp_path / "old.ckpt")
    old = load_model(tmp_path / "old.ckpt", PropertyPredictor)
    assert not old.conformal.calibrated and not old.ood.fitted
    preds = run_predict(str(tmp_path / "old.ckpt"), [zoo], max_rows=2)
    assert preds[0].low is None and preds[0].ood_p is None
    err = capsys.readouterr().err
    assert "no conformal calibration" in err and "no calibrated out-of-distribution score" in err


def test_wsl_predict_prints_and_writes_intervals_and_flags_unlike_networks(trusted, tmp_path, capsys):
    _, zoo, _, fitted = trusted
    with Zoo(zoo) as z:
        sd = z.state_dict(int(z.select()[0]))
    torch.save(sd, tmp_path / "like.pt")
    torch.save({k: 25.0 * v for k, v in sd.items()}, tmp_path / "unlike.pt")  # weights far outside the zoo's
    out_csv = tmp_path / "p.csv"
    assert main(["predict", "--model", str(fitted.checkpoint), str(tmp_path / "like.pt"), str(tmp_path / "unlike.pt"),
                 zoo, "--split", "test", "--csv", str(out_csv), "--level", "0.8", "--ood-alpha", "0.1"]) == 0
    out, err = capsys.readouterr()
    assert "80% interval" in out and "OOD p" in out and "lies in its interval or set" in out
    assert "unlike the predictor's training zoo" in err
    rows = {r["input"]: r for r in csv.DictReader(open(out_csv))}
    unlike, like = rows.pop(str(tmp_path / "unlike.pt")), rows[str(tmp_path / "like.pt")]
    assert unlike["ood_flag"] == "1" and float(unlike["ood_score"]) > max(float(r["ood_score"]) for r in rows.values())
    assert float(like["interval_low"]) <= float(like["predicted_test_acc"]) <= float(like["interval_high"])
    assert main(["predict", "--model", str(fitted.checkpoint), str(tmp_path / "unlike.pt")]) == 0  # alpha 0.01
    assert "flags nothing" in capsys.readouterr().err  # a tiny zoo's p-values never fall that low
    assert main(["predict", "--model", str(fitted.checkpoint), zoo, "--level", "1"]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err


def test_classification_predictors_give_prediction_sets(trusted, tmp_path):
    _, zoo, _, _ = trusted
    dm = PropertyDataModule([zoo], target="optimizer", checkpoints="all", batch_size=16)
    fitted = fit_predictor(dm, "statnn", {}, 3e-3, 1, tmp_path, enable_progress_bar=False, logger=False)
    preds = run_predict(str(fitted.checkpoint), [zoo], max_rows=0)
    assert all(p.classes is not None and set(p.classes) <= {"sgd", "adam"} for p in preds)
    assert all(p.value in p.classes for p in preds if p.classes)  # the most probable class enters any set first


def test_a_limited_reference_is_a_seeded_subset_in_loader_order(trusted):
    _, _, dm, _ = trusted
    every = dm.weights("train")
    some = dm.weights("train", limit=7, seed=3)
    assert len(some) == 7 and len(dm.weights("train", limit=10 ** 6)) == len(every)
    rows = [next(i for i in range(len(every)) if torch.equal(every.params()[0][i], w)) for w in some.params()[0]]
    assert rows == sorted(rows)  # the loader's order kept
    torch.testing.assert_close(dm.weights("train", limit=7, seed=3).params()[0], some.params()[0])
    ood = OODScore(dm.spec, k=3, max_reference=5)
    ood.fit(every)
    assert ood.reference.shape == (5, ood.mean.numel())  # at most max_reference training checkpoints kept

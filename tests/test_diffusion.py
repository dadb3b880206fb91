"""Diffusion weight generators: the schedule and sampler, equivariant denoisers, the neuron-token
autoencoder, training through Lightning on a zoo, and sampling to a zoo file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SPECS, generate_zoo, hidden_perms, max_diff, random_weights
from wsl.diffusion.autoencoder import NeuronTokens, WeightAutoencoder
from wsl.diffusion.denoisers import CanonicalDenoiser, EquivariantDenoiser, MLPDenoiser
from wsl.diffusion.process import Diffusion
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute


def test_schedule_runs_from_clean_to_noise():
    d = Diffusion()
    t = torch.linspace(0, 1, 11)
    ls = d.logsnr(t)
    assert torch.all(ls[1:] < ls[:-1])  # noisier with time
    assert ls[0].item() == pytest.approx(15, abs=1e-3) and ls[-1].item() == pytest.approx(-15, abs=1e-3)
    a, s = d.alpha_sigma(ls)
    torch.testing.assert_close(a ** 2 + s ** 2, torch.ones(11))


@pytest.mark.parametrize("prediction", ["v", "eps", "x0"])
def test_sampler_with_the_exact_denoiser_returns_the_data_point(prediction):
    """For data that is one point x*, the ideal denoiser is known in closed form; DDIM with it must
    land on x* from any noise, which checks the parametrisation and every step of the sampler."""
    d = Diffusion(prediction)
    target = torch.tensor([[0.5, -1.0, 2.0]])

    def ideal(xt, logsnr, cond, drop):
        a, s = (v.unsqueeze(1) for v in d.alpha_sigma(logsnr))
        eps = (xt - a * target) / s
        return {"v": a * eps - s * target, "eps": eps, "x0": target.expand_as(xt)}[prediction]

    for eta in (0.0, 1.0):
        x = d.sample(ideal, (4, 3), steps=10, eta=eta, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(x, target.expand(4, 3), atol=1e-4, rtol=0)
    # and the training loss of the ideal denoiser is zero
    assert d.loss(ideal, target.expand(8, 3)).abs().max() < 1e-8


def test_guidance_mixes_conditional_and_unconditional_predictions():
    d = Diffusion("eps")
    calls = []

    def den(xt, logsnr, cond, drop):
        calls.append(drop)
        out = torch.zeros_like(xt)
        if drop is None:
            return out + 1.0
        return torch.where(drop.unsqueeze(1), torch.full_like(xt, 1.0), torch.full_like(xt, 3.0))

    x0, eps = d._predict(den, torch.zeros(2, 3), torch.tensor([0.0]), torch.zeros(2, 1), guidance=2.0)
    torch.testing.assert_close(eps, torch.full((2, 3), 1.0 + 2.0 * (3.0 - 1.0)))
    assert calls[-1].tolist() == [False, False, True, True]


def _equivariant_denoiser(spec, kind: str, num_conditions: int = 0):
    """A small equivariant denoiser in float64 with every parameter drawn (FiLM and the MLP's output
    layer start at zero: give them weight so the tests cover them)."""
    torch.manual_seed(0)
    if kind == "canonical":
        den = CanonicalDenoiser(spec, num_conditions=num_conditions, hidden=32, layers=2, emb_dim=16).double()
        den.set_reference(random_weights(spec, seed=9, n=1).flatten())
    else:
        den = EquivariantDenoiser(spec, kind, channels=8, layers=2, emb_dim=16, num_conditions=num_conditions).double()
    for p in den.parameters():
        p.data.normal_(0, 0.3)
    return den


@pytest.mark.parametrize("backbone,space", [("hnp", "mlp"), ("np", "mlp"), ("dwsnet", "mlp"), ("ngnn", "mlp"),
                                            ("canonical", "mlp"), ("canonical", "cnn"), ("hnp", "cnn")])
def test_equivariant_denoiser_commutes_with_hidden_permutations(backbone, space):
    """Hidden neurons of an MLP, channels of a CNN: permuted in, permuted out."""
    spec = SPECS[space]
    den = _equivariant_denoiser(spec, backbone, num_conditions=1)
    wb = random_weights(spec, n=3)
    perms = hidden_perms(spec, n=3)
    ls, cond = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    out = WeightBatch.from_flat(spec, den(wb.flatten(), ls, cond, None))
    out_p = WeightBatch.from_flat(spec, den(permute(wb, perms).flatten(), ls, cond, None))
    assert max_diff(permute(out, perms), out_p) < 1e-9
    # and it does depend on the noise level and on the condition
    assert (den(wb.flatten(), ls + 1, cond, None) - out.flatten()).abs().max() > 1e-4
    assert (den(wb.flatten(), ls, cond + 1, None) - out.flatten()).abs().max() > 1e-4


def test_dropped_condition_is_the_unconditional_embedding():
    den = MLPDenoiser(5, hidden=16, layers=2, emb_dim=8, num_conditions=2)
    for p in den.parameters():
        p.data.normal_(0, 0.3)
    x, ls = torch.randn(3, 5), torch.zeros(3)
    dropped = den(x, ls, torch.randn(3, 2), torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(dropped, den(x, ls, None, None))
    assert (den(x, ls, torch.randn(3, 2), None) - dropped).abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["mlp", "hnp"])
def test_shared_noise_level_embeds_once_with_the_same_prediction(kind):
    """Sampling gives every network one noise level: the embedding is then computed once and
    broadcast, which must predict what each network alone gets."""
    torch.manual_seed(0)
    spec = SPECS["mlp"]
    den = (MLPDenoiser(spec.num_params, hidden=16, layers=2, emb_dim=8, num_conditions=1) if kind == "mlp"
           else EquivariantDenoiser(spec, "hnp", channels=4, layers=2, emb_dim=8, num_conditions=1))
    for p in den.parameters():
        p.data.normal_(0, 0.3)
    x, ls = random_weights(spec, n=4, dtype=torch.float32).flatten(), torch.full((4,), 1.5)
    together = den(x, ls, None, None)
    alone = torch.cat([den(x[i:i + 1], ls[i:i + 1], None, None) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # one level apart: the embedding is per network again, and that network's prediction changes
    ls[2] = -1.0
    moved = den(x, ls, None, None)
    torch.testing.assert_close(moved[[0, 1, 3]], alone[[0, 1, 3]], rtol=1e-5, atol=1e-5)
    assert (moved[2] - alone[2]).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_neuron_tokens_round_trip(name):
    spec = SPECS[name]
    wb = random_weights(spec, n=3, dtype=torch.float32)
    tok = NeuronTokens(spec)
    tokens = tok.tokens(wb.flatten())
    assert tokens.shape == (3, sum(l.out_features for l in spec.layers), tok.width)
    torch.testing.assert_close(tok.flat(tokens), wb.flatten())
    # token k of the first layer is neuron k's incoming weights and bias
    first = spec.layers[0]
    torch.testing.assert_close(tokens[:, 1, :first.weight.numel // first.out_features],
                               wb.weights[0][:, 1].reshape(3, -1))


def test_autoencoder_codes_and_reconstruction_shapes():
    spec = SPECS["mlp"]
    ae = WeightAutoencoder(spec, latent_dim=3, d_model=16, layers=1, heads=2).eval()
    flat = random_weights(spec, n=5, dtype=torch.float32).flatten()
    z = ae.encode(flat)
    assert z.shape == (5, *ae.code_shape) == (5, 6 + 5 + 3, 3)
    assert ae.decode(z).shape == flat.shape
    assert ae.loss(flat).shape == (5,)


def test_autoencoder_learns_to_reconstruct():
    torch.manual_seed(0)
    spec = SPECS["mlp"]
    ae = WeightAutoencoder(spec, latent_dim=4, d_model=32, layers=1, heads=2, latent_noise=0.0)
    flat = random_weights(spec, n=16, dtype=torch.float32).flatten()
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = ae.loss(flat).mean().item()
    for _ in range(200):
        opt.zero_grad()
        loss = ae.loss(flat).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


# --- training on a zoo through Lightning, sampling to a zoo file --------------------------------------
ZOO = {
    "name": "gen", "seed": 5, "num_models": 24, "epochs": 2, "checkpoints": [0, 1, 2],
    "task": {"name": "digits", "n_train": 200, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [6, 6]},
    "hparams": {"lr": {"log_uniform": [0.01, 0.3]}, "optimizer": "adam",
                "activation": {"choice": ["relu", "tanh"]}},
    "training": {"chunk_size": 24},
}


@pytest.fixture(scope="module")
def gen_zoo(tmp_path_factory):
    return generate_zoo(ZOO, tmp_path_factory.mktemp("genzoo") / "gen.h5")


@pytest.fixture(scope="module")
def inr_zoo(tmp_path_factory):
    """28 digit INRs (2-8-8-1 SIRENs), images split 16 / 6 / 6."""
    return generate_zoo({
        "name": "gen_inr", "seed": 0, "num_models": 28, "epochs": 10, "checkpoints": [0, 10],
        "task": {"name": "digits-inr", "n_train": 16, "n_val": 6, "n_test": 6},
        "architecture": {"name": "siren", "hidden": [8, 8], "omega_0": 30},
        "hparams": {"lr": 0.001, "optimizer": "adam"}}, tmp_path_factory.mktemp("geninr") / "inr.h5")


def _fit(model, dm, tmp_path, epochs=2):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from wsl.core.trainer import make_trainer

    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", filename="best")
    dm.setup("fit")
    model.set_normalizers(**dm.normalizers())
    make_trainer(epochs, [ckpt], enable_checkpointing=True).fit(model, dm)
    return ckpt.best_model_path


@pytest.mark.parametrize("kind", ["hnp", "canonical", "latent"])
def test_generator_trains_saves_and_samples_a_zoo(gen_zoo, tmp_path, kind, one_thread):
    from wsl.data import WeightDataModule
    from wsl.diffusion.scores import conditional_agreement
    from wsl.diffusion.model import LatentDiffusion, WeightDiffusion
    from wsl.diffusion.networks import evaluate_networks
    from wsl.core.checkpoint import load_model
    from wsl.diffusion.model import WeightGenerator
    from wsl.diffusion.sample import run_sample
    from zoo.store import Zoo

    dm = WeightDataModule([gen_zoo], select={"activation": "relu"}, conditions=["test_acc"], batch_size=8,
                          checkpoints="all", split=[0.6, 0.2, 0.2])
    common = dict(spec_json=dm.spec_json, source_json=dm.source_json, conditions=dm.conditions,
                  eval_samples=4, sample_steps=3)
    if kind == "hnp":
        model = WeightDiffusion(denoiser="hnp", denoiser_kwargs={"channels": 4, "layers": 2}, **common)
    elif kind == "canonical":
        model = WeightDiffusion(denoiser="canonical", denoiser_kwargs={"hidden": 16, "layers": 1}, **common)
    else:
        model = LatentDiffusion(autoencoder_kwargs={"latent_dim": 2, "d_model": 8, "layers": 1, "heads": 2},
                                autoencoder_epochs=1, denoiser_kwargs={"hidden": 16, "layers": 1}, **common)
    assert dm.spec.activation == "relu"  # the selection fixed the activation of a mixed zoo
    best = _fit(model, dm, tmp_path)
    assert best.endswith("best.ckpt")
    loaded = load_model(best, WeightGenerator)
    assert type(loaded) is type(model) and loaded.conditions == ["test_acc"]
    if kind == "canonical":  # the reference network, set when fitting began, is saved with the denoiser
        reference = loaded.weight_normalizer(dm.reference_network()).flatten()
        for net in (loaded.net, loaded.averaged_net):
            assert bool(net.has_reference)
            torch.testing.assert_close(net.reference, reference)
    torch.testing.assert_close(loaded.condition_normalizer.mean, dm.condition_normalizer.mean)
    a = loaded.sample(3, torch.tensor([0.5]), guidance=2.0, seed=1)
    b = loaded.sample(3, torch.tensor([0.5]), guidance=2.0, seed=1)
    assert max_diff(a, b) == 0 and a.spec == dm.spec  # seeded
    requested = torch.tensor([[0.2], [0.4], [0.6], [0.8]])
    val_acc = evaluate_networks(dm.spec, loaded.sample(4, requested, guidance=3.0, seed=2), loaded.task,
                                splits=("val",))["val_acc"]
    expected = conditional_agreement(requested[:, 0].numpy(), np.nan_to_num(val_acc, nan=0.0))["pearson"]
    assert loaded.validation_agreement(requested, guidance=3.0, seed=2) == pytest.approx(expected, nan_ok=True)
    stochastic = evaluate_networks(dm.spec, loaded.sample(4, requested, guidance=3.0, seed=2, steps=2, eta=1.0),
                                   loaded.task, splits=("val",))["val_acc"]
    assert loaded.validation_quality(4, requested, guidance=3.0, seed=2, steps=2, eta=1.0) == \
        pytest.approx(float(np.nan_to_num(stochastic, nan=0.0).mean()))
    out = run_sample(best, 5, tmp_path / "sampled.h5", ["test_acc=0.2:0.6"], guidance=1.5, seed=0)
    with Zoo(out) as z:
        assert z.generated["generator_class"] == type(model).__name__
        assert sorted(z.generated["train_runs"]) == sorted(dm.split_runs["train"])
        assert z.hparam("requested_test_acc").tolist() == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
        assert z.spec.activation == "relu" and z.done.all()
        acc = z.metric("test_acc")[:, -1]
        assert np.isfinite(acc).all() and ((acc >= 0) & (acc <= 1)).all()


def test_inr_generator_validates_on_validation_images_and_samples_an_inr_zoo(inr_zoo, tmp_path, one_thread):
    """A class-conditional generator on an INR zoo: validation scores sampled INRs against images
    (``val/gen_psnr`` is the kept checkpoint's score), and `wsl sample` cycles through the
    requested classes into an INR zoo."""
    from wsl.data import WeightDataModule
    from wsl.diffusion.model import WeightDiffusion
    from wsl.diffusion.sample import run_sample
    from zoo.store import Zoo

    dm = WeightDataModule([inr_zoo], conditions=["label"], split="recorded", batch_size=8)
    model = WeightDiffusion(spec_json=dm.spec_json, source_json=dm.source_json, conditions=dm.conditions,
                            denoiser="mlp", denoiser_kwargs={"hidden": 16, "layers": 1}, eval_samples=4,
                            sample_steps=3)
    best = _fit(model, dm, tmp_path, epochs=1)
    logged = model.trainer.callback_metrics
    assert np.isfinite(float(logged["val/gen_psnr"])) and float(logged["val/score"]) == float(logged["val/gen_psnr"])
    assert 0 <= float(logged["val/cond_exact"]) <= 1
    out = run_sample(best, 5, tmp_path / "inrs.h5", ["label=0,1,2"], guidance=2.0)
    with Zoo(out) as z:
        assert z.is_inr and z.metric_names == ["mse", "psnr"]
        assert z.hparam("requested_label").tolist() == [0, 1, 2, 0, 1]
        assert (z.signal("split").astype(str) == "test").all()  # each beside its nearest test image
        assert z.generated["checkpoint_epoch"] == 10


def test_inr_generator_is_scored_on_validation_images_only(inr_zoo, one_thread):
    """Quality and class agreement of sampled INRs come from the validation images (the nearest
    one, its label), never the test images: what checkpoints and guidance scales are chosen by."""
    from wsl.data import WeightDataModule
    from wsl.diffusion.model import WeightDiffusion
    from wsl.diffusion.networks import inr_metrics

    dm = WeightDataModule([inr_zoo], split="recorded", batch_size=8, conditions=["label"])
    model = WeightDiffusion(spec_json=dm.spec_json, source_json=dm.source_json, conditions=dm.conditions,
                            denoiser="mlp", denoiser_kwargs={"hidden": 16, "layers": 1}, sample_steps=2)
    dm.setup("fit")
    model.set_normalizers(**dm.normalizers())
    requested = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    wb = model.sample(4, requested, guidance=2.0, seed=5)
    near = inr_metrics(model.spec, wb, model.task, splits=("val", "test"))
    quality, exact = model._validation_scores(wb, requested)
    np.testing.assert_allclose(quality, near["val_psnr"], rtol=1e-6)
    assert not np.allclose(quality, near["test_psnr"])
    labels = np.asarray(model.task.fields["label"])
    assert exact == pytest.approx(float(np.mean(labels[near["val_signal"]] == [0, 1, 2, 3])))
    assert model.validation_agreement(requested, guidance=2.0, seed=5) == pytest.approx(exact)


def test_sample_refuses_bad_requests_and_foreign_files(gen_zoo, tmp_path, one_thread, capsys):
    from wsl.cli.main import main
    from wsl.data import WeightDataModule
    from wsl.diffusion.model import WeightDiffusion

    dm = WeightDataModule([gen_zoo], select={"activation": "relu"}, batch_size=8, split=[0.6, 0.2, 0.2])
    model = WeightDiffusion(spec_json=dm.spec_json, source_json=dm.source_json, denoiser="mlp",
                            denoiser_kwargs={"hidden": 16, "layers": 1}, eval_samples=0)
    best = _fit(model, dm, tmp_path, epochs=1)
    cases = [
        (["--condition", "test_acc=0.9"], "conditioned on nothing"),
        (["--num", "0"], "--num must be >= 1"),
    ]
    for extra, message in cases:
        args = ["sample", "--model", best, "--num", "2", "--out", str(tmp_path / "x.h5"), *extra]
        assert main(args) == 2
        assert message in capsys.readouterr().err
    zoo_as_model = ["sample", "--model", gen_zoo, "--num", "2", "--out", str(tmp_path / "y.h5")]
    assert main(zoo_as_model) == 2
    assert "is an HDF5 file (a zoo?)" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, torch.tensor([0.5]))


@pytest.mark.parametrize("config", sorted((Path(__file__).resolve().parents[1] / "configs" / "diffusion").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_generator_configs_fit_through_the_cli(config, gen_zoo, inr_zoo, tmp_path, one_thread):
    """Every configs/diffusion/ file parses, links the data to the model and trains (one batch each
    of fit and validation: fast_dev_run) with `wsl fit`, on a small zoo of the same kind."""
    from wsl.cli.main import main

    zoo, split = (inr_zoo, "recorded") if "_inr_" in config.stem else (gen_zoo, "[0.6, 0.2, 0.2]")
    assert main(["fit", "--config", str(config), f"--data.zoos=[{zoo}]", "--data.batch_size=4",
                 f"--data.split={split}", "--trainer.fast_dev_run=true",
                 f"--trainer.default_root_dir={tmp_path}"]) == 0


@pytest.mark.parametrize("kind", ["hnp", "canonical"])
def test_equivariant_generation_permutes_with_its_starting_noise(kind):
    """Deterministic DDIM with an equivariant denoiser: permuting the hidden neurons of the starting
    noise permutes the generated network the same way, so no ordering of neurons is preferred."""
    spec = SPECS["mlp"]
    den = _equivariant_denoiser(spec, kind)
    d = Diffusion("x0")
    noise = random_weights(spec, n=3)
    perms = hidden_perms(spec, n=3)
    out = WeightBatch.from_flat(spec, d.sample(den, (3, spec.num_params), steps=4, start=noise.flatten()))
    out_p = WeightBatch.from_flat(spec, d.sample(den, (3, spec.num_params), steps=4,
                                                 start=permute(noise, perms).flatten()))
    assert max_diff(permute(out, perms), out_p) < 1e-9
    assert max_diff(out, out_p) > 1e-3  # and the permutation did change the network's weights


def test_canonical_denoiser_needs_its_reference_and_a_per_tensor_normalizer(gen_zoo):
    from wsl.data import WeightDataModule
    from wsl.diffusion.model import WeightDiffusion

    spec = SPECS["mlp"]
    den = CanonicalDenoiser(spec, hidden=8, layers=1, emb_dim=8)
    with pytest.raises(RuntimeError, match="no reference network"):
        den(torch.randn(2, spec.num_params), torch.zeros(2))
    with pytest.raises(ValueError, match=f"expected {spec.num_params} weights, found 3"):
        den.set_reference(torch.zeros(3))
    dm = WeightDataModule([gen_zoo], select={"activation": "relu"}, normalize="parameter", split=[0.6, 0.2, 0.2])
    dm.setup("fit")
    for denoiser in ("canonical", "hnp"):
        model = WeightDiffusion(spec_json=dm.spec_json, source_json=dm.source_json, denoiser=denoiser,
                                denoiser_kwargs={"hidden": 8, "layers": 1} if denoiser == "canonical" else
                                {"channels": 4, "layers": 1})
        with pytest.raises(ValueError, match="per-parameter normalization"):
            model.set_normalizers(**dm.normalizers())

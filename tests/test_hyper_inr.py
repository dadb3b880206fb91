"""The INR hypernetwork (image or class -> SIREN weights) and its SignalDataModule, on tiny INR zoos:
what batches hold, shapes, the population forward against a plain torch SIREN, the symmetries
the losses must respect, both training signals learning, validation PSNR as the zoo computes it,
checkpoints read back tensors-only, the shipped config, and clear errors."""
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import generate_zoo
from wsl.data.normalize import WeightNormalizer
from wsl.data.signal_datamodule import SignalDataModule
from wsl.hyper.inr import ImageEncoder, INRHyperNetwork
from wsl.core.checkpoint import CHECKPOINT_GLOBALS, load_model, load_torch_file
from wsl.core.trainer import make_trainer
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute, random_permutations, random_scales, scale
from zoo.architectures import TorchNet
from zoo.inr import psnr
from zoo.store import Zoo

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "hyper" / "digits_inr_image.yaml"
SIREN = {"name": "siren", "hidden": [16, 16], "omega_0": 30}
SMALL = dict(hidden=32, depth=1, embed_dim=16, encoder_width=4)  # a hypernetwork small enough for tests


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits_inr(tmp_path_factory):
    """28 digit images, one 2-16-16-1 SIREN each, images split 16 / 6 / 6."""
    return generate_zoo({
        "name": "digits_inr_tiny", "seed": 0, "num_models": 28, "epochs": 20, "checkpoints": [0, 20],
        "task": {"name": "digits-inr", "n_train": 16, "n_val": 6, "n_test": 6},
        "architecture": SIREN, "hparams": {"lr": 0.001, "optimizer": "adam"}},
        tmp_path_factory.mktemp("inr") / "digits_inr.h5")


@pytest.fixture(scope="module")
def sine_inr(tmp_path_factory):
    """1-D signals without a class."""
    return generate_zoo({
        "name": "sine_inr_tiny", "seed": 0, "num_models": 12, "epochs": 2, "checkpoints": [0, 2],
        "task": {"name": "sine-inr", "n_train": 8, "n_val": 2, "n_test": 2, "n_points": 16},
        "architecture": SIREN, "hparams": {"lr": 0.001, "optimizer": "adam"}},
        tmp_path_factory.mktemp("sine") / "sine_inr.h5")


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory):
    return generate_zoo({
        "name": "mlp_tiny", "seed": 0, "num_models": 4, "epochs": 1, "checkpoints": [0, 1],
        "task": {"name": "digits", "n_train": 50, "n_val": 20},
        "architecture": {"name": "mlp", "hidden": [4], "activation": "relu"}, "hparams": {"lr": 0.01}},
        tmp_path_factory.mktemp("mlp") / "mlp.h5")


@pytest.fixture(scope="module")
def dm(digits_inr):
    d = SignalDataModule(digits_inr, conditions=["image"], batch_size=8)
    d.setup("fit")
    return d


def model_for(dm, **kw):
    if dm.split_runs is None:
        dm.setup("fit")
    torch.manual_seed(0)
    m = INRHyperNetwork(dm.spec_json, dm.source_json, dm.conditions, **{**SMALL, **kw})
    m.set_normalizers(**dm.normalizers())
    return m


def all_batches(loader):
    parts = list(loader)
    return WeightBatch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])


# --- the data ---------------------------------------------------------------------------------------
def test_batches_hold_raw_weights_signals_and_labels_of_the_recorded_split(digits_inr, dm):
    with Zoo(digits_inr) as z:
        split, label, index = z.signal("split"), z.signal("label"), z.index
        values, weights = z.signal_values(), z.load(-1)
        coords = z.signal_coords()
    wb, v, y = all_batches(dm.val_dataloader())
    runs = dm.items("val")["runs"]
    rows = [int(np.flatnonzero(index == r)[0]) for r in runs]
    assert sorted(split[rows]) == ["val"] * 6 and len(runs) == 6
    assert v.shape == (6, 64, 1) and y.dtype == torch.long
    assert torch.equal(v, values[rows]) and torch.equal(y, torch.as_tensor(label[rows]))
    for p, t in zip(dm.spec.params, wb.params()):  # raw weights at the last checkpoint, not normalized
        assert torch.equal(t, torch.from_numpy(weights[p.name][rows]))
    assert torch.allclose(dm.coords, coords) and dm.signal_shape == (8, 8) and dm.peak == 2.0
    assert dm.num_classes == 10 and dm.conditions == ["image"]
    # the normalizer is fitted on training runs only
    (name, norm), = dm.normalizers().items()
    assert name == "weight_normalizer"
    assert torch.allclose(norm.scale, WeightNormalizer(dm.spec).fit(dm.weights("train")).scale)
    assert not torch.allclose(norm.scale, WeightNormalizer(dm.spec).fit(dm.weights("val")).scale)


def test_an_earlier_checkpoint_is_served_by_its_epoch(digits_inr, dm):
    init = SignalDataModule(digits_inr, checkpoint=0, batch_size=64)
    init.setup()
    with Zoo(digits_inr) as z:
        first = z.load(0)
    rows = [int(np.flatnonzero(z.index == r)[0]) for r in init.items("train")["runs"]]
    assert torch.equal(init.weights("train").weights[0], torch.from_numpy(first["layers.0.weight"][rows]))
    assert not torch.equal(init.weights("train").weights[0], dm.weights("train").weights[0])


# --- emitting ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("parametrization", ["plain", "mip"])
def test_emit_shapes_from_images_and_classes(digits_inr, dm, parametrization):
    _, v, y = next(iter(dm.train_dataloader()))
    m = model_for(dm, parametrization=parametrization)
    wb = m.emit(v)
    assert isinstance(wb, WeightBatch) and len(wb) == 8 and wb.flatten().shape == (8, dm.spec.num_params)
    assert torch.allclose(m.emit(v.reshape(8, 8, 8)).flatten(), wb.flatten())  # [B, H, W] images too
    cls = SignalDataModule(digits_inr, conditions=["class"])
    mc = model_for(cls, parametrization=parametrization)
    out = mc.emit(torch.tensor([3, 3, 7]))
    assert len(out) == 3 and torch.equal(out.flatten()[0], out.flatten()[1])
    if parametrization == "plain":  # different images or classes, different SIRENs
        assert not torch.allclose(wb.flatten()[0], wb.flatten()[1])
        assert not torch.allclose(out.flatten()[0], out.flatten()[2])
    else:  # MIP: a zero residual at first, so every condition starts at the base weights
        torch.testing.assert_close(wb.flatten(), m.emitter.base.detach().expand(8, -1))
        torch.testing.assert_close(out.flatten(), mc.emitter.base.detach().expand(3, -1))


def test_image_encoder_on_images_and_1d_signals():
    assert ImageEncoder((8, 8), 1, dim=16)(torch.randn(5, 64, 1)).shape == (5, 16)
    assert ImageEncoder((28, 28), 1, dim=16)(torch.randn(2, 784, 1)).shape == (2, 16)
    assert ImageEncoder((16,), 1, dim=16)(torch.randn(3, 16, 1)).shape == (3, 16)


def test_population_forward_of_emitted_sirens_equals_torch_sirens(dm):
    _, v, _ = next(iter(dm.train_dataloader()))
    m = model_for(dm)
    with torch.no_grad():
        wb = m.emit(v)
        out = m.render(wb)
    for i in range(len(wb)):
        net = TorchNet(dm.spec)
        net.load_state_dict(wb.state_dict(i))
        with torch.no_grad():
            ref = net(dm.coords)
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)
    # and the PSNR is the zoo's formula on that output
    torch.testing.assert_close(m.signal_psnr(wb, v), psnr((out - v).pow(2).mean((1, 2)), 2.0))


def test_losses_respect_the_sirens_symmetries(dm):
    teacher, v, _ = next(iter(dm.train_dataloader()))
    m = model_for(dm)
    with torch.no_grad():
        student = m.emit(v)
        g = torch.Generator().manual_seed(1)
        perms = random_permutations(dm.spec, len(v), g)
        signs = random_scales(dm.spec, len(v), "sine", generator=g)
        moved = scale(permute(student, perms), signs)
        # the functional loss sees the function only: hidden permutations and sign flips keep it
        torch.testing.assert_close(m.signal_mse(moved, v), m.signal_mse(student, v), rtol=1e-5, atol=1e-6)
        # distillation compares weights: moving both sides alike keeps it, moving one side does not
        base = m.distillation_loss(student, teacher)
        torch.testing.assert_close(m.distillation_loss(moved, scale(permute(teacher, perms), signs)), base)
        assert abs(float(m.distillation_loss(moved, teacher)) - float(base)) > 1e-3


# --- learning ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("signal", ["functional", "weights"])
def test_training_lowers_the_loss(dm, signal):
    teacher, v, y = all_batches(dm.train_dataloader())
    m = model_for(dm, signal=signal, lr=3e-3)
    opt = m.configure_optimizers()
    losses = []
    for step in range(40):
        loss = m.loss((teacher, v, y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < (0.5 if signal == "functional" else 0.75) * losses[0], losses[::8]


def test_validation_scores_psnr_of_validation_signals_and_checkpoint_reads_back(dm, tmp_path):
    m = model_for(dm, signal="functional")
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="last")  # the state after the last epoch
    trainer = make_trainer(2, [ckpt], limit_train_batches=2)
    trainer.fit(m, dm)
    (res,) = trainer.validate(m, dm, verbose=False)
    _, v, _ = all_batches(dm.val_dataloader())
    with torch.no_grad():
        expected = psnr((m.render(m.emit(v)) - v).pow(2).mean((1, 2)), dm.peak).mean()
    assert res["val/psnr"] == pytest.approx(float(expected), rel=1e-5)
    assert res["val/score"] == res["val/psnr"]

    raw = load_torch_file(ckpt.best_model_path, "an INR hypernetwork checkpoint", CHECKPOINT_GLOBALS)
    assert raw["wsl_model"] == {"class": "wsl.hyper.inr.INRHyperNetwork", "kind": "INR hypernetwork"}
    rebuilt = INRHyperNetwork(**raw["hyper_parameters"])
    rebuilt.load_state_dict(raw["state_dict"])
    loaded = load_model(ckpt.best_model_path, INRHyperNetwork)
    torch.testing.assert_close(loaded.weight_normalizer.scale, dm.normalizers()["weight_normalizer"].scale)
    assert raw["epoch"] == 1
    with torch.no_grad():
        now = m.emit(v).flatten()
        torch.testing.assert_close(rebuilt.emit(v).flatten(), now)
        torch.testing.assert_close(loaded.emit(v).flatten(), now)
        assert not torch.allclose(model_for(dm).emit(v).flatten(), now)  # training moved it


def test_the_shipped_config_builds_its_classes(digits_inr):
    raw = yaml.safe_load(CONFIG.read_text())
    assert raw["model"]["class_path"] == "wsl.hyper.inr.INRHyperNetwork"
    assert raw["data"]["class_path"] == "wsl.data.signal_datamodule.SignalDataModule"
    data_args = dict(raw["data"]["init_args"], zoo=digits_inr)
    d = SignalDataModule(**data_args)
    m = INRHyperNetwork(spec_json=d.spec_json, source_json=d.source_json, conditions=d.conditions,
                        **raw["model"]["init_args"])
    d.setup()
    m.set_normalizers(**d.normalizers())
    _, v, _ = next(iter(d.train_dataloader()))
    assert len(m.emit(v)) == len(v)


# --- errors -----------------------------------------------------------------------------------------
def test_a_zoo_that_is_not_inr_is_refused_naming_it(mlp_zoo, sine_inr):
    with pytest.raises(ValueError, match=r"mlp\.h5: expected an INR zoo .* found a mlp zoo on task 'digits'"):
        SignalDataModule(mlp_zoo)
    with pytest.raises(ValueError, match=r"sine_inr\.h5: condition 'class' needs the signal field 'label'.*"
                                         r"fields \['frequency', 'phase'"):
        SignalDataModule(sine_inr, conditions=["class"])
    with pytest.raises(ValueError, match=r"conditions must be one of \[\['image'\], \['class'\]\], found \['label'\]"):
        SignalDataModule(sine_inr, conditions=["label"])
    with pytest.raises(FileNotFoundError, match="nowhere.h5: not found"):
        SignalDataModule("nowhere.h5")
    sine = SignalDataModule(sine_inr)  # 1-D signals with no class: labels served as -1
    sine.setup()
    _, v, y = next(iter(sine.train_dataloader()))
    assert v.shape[1:] == (16, 1) and bool((y == -1).all())
    assert len(model_for(sine).emit(v)) == len(v)


def test_bad_images_and_labels_are_refused(digits_inr, dm):
    m = model_for(dm)
    with pytest.raises(ValueError, match=r"images: expected \[B, 64, 1\] values on the signal grid, or "
                                         r"\[B, 8, 8\] images, found \[2, 7, 7\]"):
        m.emit(torch.zeros(2, 7, 7))
    mc = model_for(SignalDataModule(digits_inr, conditions=["class"]))
    with pytest.raises(ValueError, match=r"class labels: labels must lie in \[0, 10\), found 0\.\.10"):
        mc.emit(torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"class labels: expected integers \[B\] in \[0, 10\), found torch.float32"):
        mc.emit(torch.tensor([1.0, 2.0]))


def test_distillation_without_the_datas_normalizer_and_foreign_checkpoints_are_refused(dm, tmp_path):
    m = INRHyperNetwork(dm.spec_json, dm.source_json, dm.conditions, signal="weights", **SMALL)
    with pytest.raises(ValueError, match="set_normalizers"):
        m.on_fit_start()
    with pytest.raises(ValueError, match="source_json: expected a 'signals' entry"):
        INRHyperNetwork(dm.spec_json, '{"zoo": "x.h5"}', ["image"])
    path = tmp_path / "other.ckpt"
    torch.save({"hyper_parameters": {"spec_json": dm.spec_json}, "state_dict": {}}, path)
    with pytest.raises(ValueError, match=r"other\.ckpt: expected an INR hypernetwork checkpoint .* "
                                         r"found a Lightning checkpoint of another model"):
        load_model(path, INRHyperNetwork)

"""WeightNormalizer / TargetNormalizer and PropertyDataModule: splits by run, targets, batches, state."""
import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from conftest import generate_zoo
from wsl.data import PropertyDataModule, WeightDataModule
from wsl.data.normalize import TargetNormalizer, WeightNormalizer
from wsl.weights import WeightBatch
from zoo.architectures import build_spec
from zoo.store import Zoo

# lr 1e6 every tenth model: with SGD it diverges (status 2), with Adam it finishes with weights
# around 1e15..1e21, the blown-up networks the normalizer must survive.
BASE = {
    "name": "data", "seed": 3, "num_models": 40, "epochs": 2, "checkpoints": [0, 1, 2],
    "task": {"name": "digits", "n_train": 200, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [8, 8]},
    "hparams": {"lr": {"grid": [0.01, 0.03, 0.1, 0.05, 0.02, 0.003, 0.3, 0.07, 0.15, 1e6]},
                "optimizer": {"choice": ["sgd", "adam"]}, "momentum": {"choice": [0.0, 0.9]},
                "activation": "relu", "init_scale": {"uniform": [0.5, 2.0]}},
    "training": {"chunk_size": 40},
}


def make_zoo(path, **over):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE.items()}
    raw.update(over)
    return generate_zoo(raw, path)


@pytest.fixture(scope="session")
def zoo_path(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo") / "data.h5")


@pytest.fixture(scope="session")
def other_zoo_path(tmp_path_factory):
    """Same weight space, other seed: a second file of the same zoo family."""
    return make_zoo(tmp_path_factory.mktemp("zoo2") / "data2.h5", seed=4, num_models=8)


def dm_for(path, **kw):
    dm = PropertyDataModule(zoos=[path] if isinstance(path, str) else path, **kw)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="session")
def dm_all(zoo_path):
    return dm_for(zoo_path, checkpoints="all", batch_size=8)


def spec():
    return build_spec("mlp", (6,), 3, hidden=[5, 4], activation="tanh")


def random_wb(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = spec()
    return WeightBatch.from_params(s, [torch.randn(n, *p.shape, generator=g) * (0.1 + k) for k, p in enumerate(s.params)])


# ----------------------------------------------------------------------------------------------
# normalizers

def test_weight_normalizer_is_exactly_invertible():
    wb = random_wb()
    big = wb.map(lambda t: t * torch.logspace(-3, 5, len(t)).view(-1, *[1] * (t.dim() - 1)))
    norm = WeightNormalizer(wb.spec).fit(wb)
    for x in (wb, big):
        back = norm.inverse(norm(x))
        for a, b in zip(back.params(), x.params()):
            assert torch.allclose(a, b, rtol=1e-5, atol=0)


def test_weight_normalizer_is_robust_to_blown_up_networks():
    wb = random_wb(n=32)
    clean = WeightNormalizer(wb.spec).fit(wb).scale.clone()
    blown = WeightBatch.cat([wb[:31], wb[31].map(lambda t: t * 1e5)])
    norm = WeightNormalizer(wb.spec).fit(blown)
    assert torch.allclose(norm.scale, clean, rtol=0.15)
    plain_rms = torch.stack([t.flatten(1).pow(2).mean().sqrt() for t in blown.params()])
    assert (plain_rms > 100 * clean).all()  # what a pooled (mean/std-style) statistic would give
    out = norm(blown)
    for t in out.params():
        assert torch.isfinite(t).all() and t.abs().max() < 20
    assert max(t[:31].abs().max() for t in out.params()) < 6  # ordinary networks keep a unit scale
    assert max(t[:31].abs().std() for t in out.params()) > 0.2


def test_weight_normalizer_commutes_with_permutation_and_sign_flip():
    wb = random_wb(n=4)
    norm = WeightNormalizer(wb.spec).fit(random_wb(n=16, seed=1))
    perm = torch.tensor([3, 0, 4, 1, 2])
    sign = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0])

    def transform(x):  # permute and sign-flip the 5 hidden neurons of layer 0 (a tanh symmetry)
        p = x.to_dict()
        p["layers.0.weight"] = p["layers.0.weight"][:, perm] * sign.view(1, -1, 1)
        p["layers.0.bias"] = p["layers.0.bias"][:, perm] * sign
        p["layers.1.weight"] = p["layers.1.weight"][:, :, perm] * sign.view(1, 1, -1)
        return WeightBatch.from_params(x.spec, p)

    a, b = norm(transform(wb)), transform(norm(wb))
    for x, y in zip(a.params(), b.params()):
        assert torch.allclose(x, y, atol=1e-6)
    assert not torch.allclose(transform(wb).weights[0], wb.weights[0])


def test_normalizer_state_dict_round_trip():
    wb = random_wb()
    norm = WeightNormalizer(wb.spec).fit(wb)
    fresh = WeightNormalizer(wb.spec)
    assert not torch.equal(fresh.scale, norm.scale)
    fresh.load_state_dict(norm.state_dict())
    assert list(norm.state_dict()) == ["scale"]
    for x, y in zip(fresh(wb).params(), norm(wb).params()):
        assert torch.equal(x, y)

    y = torch.tensor([0.2, 0.5, 0.9, 0.4])
    tn = TargetNormalizer().fit(y)
    assert tn.mean.item() == pytest.approx(0.5) and tn.std.item() == pytest.approx(np.std([0.2, 0.5, 0.9, 0.4]))
    assert tn(y).mean().abs() < 1e-6 and tn(y).std(unbiased=False) == pytest.approx(1.0)
    assert torch.allclose(tn.inverse(tn(y)), y)
    t2 = TargetNormalizer()
    t2.load_state_dict(tn.state_dict())
    assert torch.equal(t2(y), tn(y))
    assert TargetNormalizer().fit(torch.full((5,), 3.0)).std.item() == 1.0  # constant: no division by 0


# ----------------------------------------------------------------------------------------------
# data module: splits

def test_splits_are_by_run_and_use_only_done_models(zoo_path, dm_all):
    with Zoo(zoo_path) as z:
        done = set(z.index[z.done].tolist())
        n_diverged = int((z.status == 2).sum())
    assert n_diverged > 0 and dm_all.excluded["diverged"] == n_diverged
    assert f"{n_diverged} diverged" in dm_all.info()
    runs = {s: dm_all.split_runs[s] for s in ("train", "val", "test")}
    assert set(runs["train"]).isdisjoint(runs["val"]) and set(runs["train"]).isdisjoint(runs["test"])
    assert set(runs["val"]).isdisjoint(runs["test"])
    assert set(runs["train"]) | set(runs["val"]) | set(runs["test"]) == done
    assert [len(runs[s]) for s in ("train", "val", "test")] == [round(0.7 * len(done)), round(0.1 * len(done)),
                                                               len(done) - round(0.7 * len(done)) - round(0.1 * len(done))]
    for s in ("train", "val", "test"):
        items = dm_all.items(s)
        assert set(items["runs"]) == set(runs[s])  # every checkpoint of a run is in the run's split
        for r in runs[s]:
            assert sorted(e for rr, e in zip(items["runs"], items["epochs"]) if rr == r) == [1, 2]


def test_split_seed(zoo_path, dm_all):
    again = dm_for(zoo_path, checkpoints="all", batch_size=8)
    other = dm_for(zoo_path, checkpoints="all", batch_size=8, split_seed=1)
    assert again.split_runs == dm_all.split_runs
    assert other.split_runs["train"] != dm_all.split_runs["train"]
    assert sorted(sum(other.split_runs.values(), [])) == sorted(sum(dm_all.split_runs.values(), []))


def test_checkpoint_selection(zoo_path, dm_all):
    n_runs = sum(len(v) for v in dm_all.split_runs.values())
    def count(dm):
        return sum(len(dm.items(s)["runs"]) for s in ("train", "val", "test"))

    last = dm_for(zoo_path)
    assert count(last) == n_runs and set(last.items("train")["epochs"]) == {2}
    assert count(dm_all) == 2 * n_runs
    init = dm_for(zoo_path, checkpoints="all", include_init=True)
    assert count(init) == 3 * n_runs and set(init.items("test")["epochs"]) == {0, 1, 2}
    assert set(dm_for(zoo_path, checkpoints=[1]).items("val")["epochs"]) == {1}
    with pytest.raises(KeyError, match="stored epochs"):
        PropertyDataModule(zoos=[zoo_path], checkpoints=[5])
    sub = dm_for(zoo_path, max_models=10)
    assert count(sub) == 10 and set(sub.split_runs["train"]) <= set(sum(dm_all.split_runs.values(), []))


# ----------------------------------------------------------------------------------------------
# targets and batches

def test_regression_batches_match_the_zoo(zoo_path, dm_all):
    assert dm_all.task_type == "regression" and dm_all.num_outputs == 1 and dm_all.class_names is None
    with Zoo(zoo_path) as z:
        assert dm_all.spec_json == z.spec.to_json()
        acc, row_of = z.metric("test_acc"), {int(i): r for r, i in enumerate(z.index)}
        loader = dm_all.val_dataloader()
        items = dm_all.items("val")
        assert len(loader) == -(-len(items["runs"]) // 8)
        batches = list(loader)
        wb, y = batches[0]
        assert isinstance(wb, WeightBatch) and len(wb) == 8 and y.dtype == torch.float32 and y.shape == (8,)
        ys = torch.cat([b[1] for b in batches])
        for k, (run, epoch) in enumerate(zip(items["runs"], items["epochs"])):
            c = z.checkpoint_epochs.index(epoch)
            assert ys[k].item() == acc[row_of[run], c]  # exact: float32 stored, float32 served
            if k < 8:
                stored = z.batch([row_of[run]], c)
                for name, t in wb.to_dict().items():
                    assert torch.equal(t[k], stored[name][0])


def test_train_loader_shuffles_reproducibly_and_covers_each_item_once(zoo_path, dm_all):
    n_train = len(dm_all.items("train")["runs"])
    first = list(dm_all.train_dataloader())
    assert sum(len(b[0]) for b in first) == n_train
    y1 = torch.cat([b[1] for b in first])
    assert torch.equal(y1.sort().values, dm_all.items("train")["targets"].sort().values)
    keys = torch.cat([b[0].flatten() for b in first])
    assert len(torch.unique(keys, dim=0)) == n_train  # no network served twice
    fresh = dm_for(zoo_path, checkpoints="all", batch_size=8)
    assert torch.equal(torch.cat([b[1] for b in fresh.train_dataloader()]), y1)  # same seed, same order
    loader = dm_all.train_dataloader()
    loader.sampler.set_epoch(1)
    assert not torch.equal(torch.cat([b[1] for b in loader]), y1)  # another epoch, another order


def test_classification_target(zoo_path):
    dm = dm_for(zoo_path, target="optimizer", batch_size=4)
    assert dm.task_type == "classification" and dm.num_outputs == 2 and dm.class_names == ["adam", "sgd"]
    with Zoo(zoo_path) as z:
        opt, row_of = z.hparam("optimizer"), {int(i): r for r, i in enumerate(z.index)}
    wb, y = next(iter(dm.test_dataloader()))
    assert y.dtype == torch.int64
    runs = dm.items("test")["runs"][:4]
    assert [dm.class_names[c] for c in y.tolist()] == [opt[row_of[r]] for r in runs]
    assert dm.target_normalizer.mean.item() == 0 and dm.target_normalizer.std.item() == 1  # unused
    assert dm_for(zoo_path, target="momentum").task_type == "regression"
    forced = PropertyDataModule(zoos=[zoo_path], target="momentum", task="classification")
    assert forced.class_names == ["0.0", "0.9"]
    with pytest.raises(ValueError, match="classification"):
        PropertyDataModule(zoos=[zoo_path], target="optimizer", task="regression")


def test_unknown_target_lists_valid_names(zoo_path):
    with pytest.raises(KeyError) as e:
        PropertyDataModule(zoos=[zoo_path], target="test_accuracy")
    assert "test_acc" in str(e.value) and "optimizer" in str(e.value)


def test_zoos_of_different_weight_spaces_are_refused(zoo_path, tmp_path):
    small = make_zoo(tmp_path / "small.h5", num_models=2, epochs=1, checkpoints=[0, 1],
                     architecture={"name": "mlp", "hidden": [8]})
    with pytest.raises(ValueError) as e:
        PropertyDataModule(zoos=[zoo_path, small])
    assert zoo_path in str(e.value) and small in str(e.value)


def test_two_zoo_files(zoo_path, other_zoo_path, dm_all):
    dm = dm_for([zoo_path, other_zoo_path], checkpoints="all")
    all_runs = [tuple(r) for s in ("train", "val", "test") for r in dm.split_runs[s]]
    assert len(set(all_runs)) == len(all_runs)
    assert {f for f, _ in all_runs} == {0, 1}
    with Zoo(other_zoo_path) as z:
        assert sorted(i for f, i in all_runs if f == 1) == sorted(z.index[z.done].tolist())
    by_zoo = dm.state_dict()["split_runs_by_zoo"]
    assert sorted(by_zoo[other_zoo_path]["train"]) == sorted(i for f, i in map(tuple, dm.split_runs["train"]) if f == 1)
    with pytest.raises(ValueError, match="zoo files"):
        dm_for(zoo_path).load_state_dict(dm.state_dict())


# ----------------------------------------------------------------------------------------------
# normalizers from the data module, state, augmentation, Lightning

def test_normalizers_are_fitted_on_train_only(dm_all):
    train = dm_all.items("train")["targets"]
    assert dm_all.target_normalizer.mean.item() == pytest.approx(train.double().mean().item(), rel=1e-6)
    everything = torch.cat([dm_all.items(s)["targets"] for s in ("train", "val", "test")])
    assert dm_all.target_normalizer.mean.item() != pytest.approx(everything.double().mean().item(), rel=1e-6)
    scale = dm_all.weight_normalizer.scale
    assert torch.isfinite(scale).all() and (scale > 0.01).all() and (scale < 10).all()  # blown-up nets ignored
    assert max(t.abs().max() for wb, _ in dm_all.train_dataloader() for t in wb.params()) > 1e5  # they are there
    for wb, _ in dm_all.train_dataloader():
        for t in dm_all.weight_normalizer(wb).params():
            assert torch.isfinite(t).all() and t.abs().max() < 60


def test_state_dict_round_trip_restores_the_split(zoo_path, dm_all):
    state = dm_all.state_dict()
    assert state["split_runs"] == dm_all.split_runs
    assert state["split_runs_by_zoo"][zoo_path] == dm_all.split_runs
    after = dm_for(zoo_path, checkpoints="all", split_seed=5)  # setup first, as Lightning does
    assert after.split_runs != dm_all.split_runs
    after.load_state_dict(state)
    assert after.split_runs == dm_all.split_runs
    assert torch.equal(after.items("val")["targets"], dm_all.items("val")["targets"])
    assert torch.equal(after.weight_normalizer.scale, dm_all.weight_normalizer.scale)
    before = PropertyDataModule(zoos=[zoo_path], checkpoints="all", split_seed=5)
    before.load_state_dict(state)
    before.setup("fit")
    assert before.split_runs == dm_all.split_runs
    bad = {**state, "split_runs": {**state["split_runs"], "test": state["split_runs"]["test"] + [10_000]}}
    fresh = PropertyDataModule(zoos=[zoo_path])
    with pytest.raises(ValueError, match="not done models"):  # refused when given, before any loading
        fresh.load_state_dict(bad)


def test_augmentations_apply_to_training_batches_only(zoo_path):
    dm = dm_for(zoo_path, batch_size=6, augment={"noise": 0.0})
    dm.augmentations = [lambda wb: wb.map(lambda t: t * 0 + 7)]
    wb, y = next(iter(dm.train_dataloader()))
    assert all((t == 7).all() for t in wb.params())
    wb, y = next(iter(dm.val_dataloader()))
    assert not any((t == 7).all() for t in wb.params())

    def mixup(wb):
        partner = torch.arange(len(wb)).roll(1)
        return wb, torch.full((len(wb),), 0.25), partner

    dm.augmentations, dm.mixup = [], mixup
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 4 and torch.equal(batch[3], torch.arange(6).roll(1)) and batch[2][0] == 0.25
    with pytest.raises(ValueError, match="valid keys"):
        PropertyDataModule(zoos=[zoo_path], augment={"rotation": True})


class _Mean(pl.LightningModule):
    """A minimal predictor: a linear map of the flattened normalised weights."""

    def __init__(self, num_params):
        super().__init__()
        self.lin = torch.nn.Linear(num_params, 1)

    def training_step(self, batch, batch_idx):
        wb, y = batch
        return torch.nn.functional.mse_loss(self.lin(wb.flatten().clamp(-10, 10)).squeeze(-1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def test_lightning_saves_the_split_in_checkpoints(zoo_path, tmp_path):
    dm = PropertyDataModule(zoos=[zoo_path], batch_size=16, split_seed=2)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(_Mean(dm.spec.num_params), datamodule=dm)
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert ckpt["PropertyDataModule"]["split_runs"] == dm.split_runs
    assert ckpt["datamodule_hyper_parameters"]["split_seed"] == 2


# --- runs, and weights without a target ----------------------------------------------------------
def test_runs_module_maps_rows_activations_and_splits(zoo_path, dm_all):
    from wsl.data import Split, ZooRuns

    runs = ZooRuns(zoo_path)
    with Zoo(zoo_path) as z:
        done = [(0, int(i)) for i in z.index[z.done]]
        assert runs.done == done
        assert runs.excluded["diverged"] == int((~z.done).sum())
        assert [runs.row(r) for r in done] == [int(np.flatnonzero(z.index == i)[0]) for _, i in done]
    assert runs.activations(done[:3]) == ["relu"] * 3
    with pytest.raises(KeyError, match="no model with index 999"):
        runs.row((0, 999))
    split = runs.split([0.7, 0.1, 0.2], seed=0)
    assert split.runs == dm_all._split.runs  # the DataModule asks the same module
    assert runs.restore(split.state(runs.paths)).runs == split.runs
    with pytest.raises(ValueError, match="two splits"):
        Split({"train": done[:2], "val": done[1:3], "test": []})


def test_weight_datamodule_serves_normalized_weights_without_target(zoo_path, dm_all):
    dm = WeightDataModule([zoo_path], checkpoints="all", batch_size=8)
    dm.setup("fit")
    assert dm.split_runs == dm_all.split_runs
    assert torch.equal(dm.weight_normalizer.scale, dm_all.weight_normalizer.scale)
    batches = list(dm.val_dataloader())
    assert all(len(b) == 1 for b in batches)  # weights only: what a generator trains on
    served = WeightBatch.cat([b[0] for b in batches])
    raw = dm.weights("val")
    torch.testing.assert_close(served.flatten(), dm.weight_normalizer(raw).flatten())
    torch.testing.assert_close(dm.weight_normalizer.inverse(served).flatten(), raw.flatten(), rtol=1e-5, atol=1e-6)


def test_weight_datamodule_conditions(zoo_path):
    dm = WeightDataModule([zoo_path], checkpoints="all", batch_size=1000, conditions=["test_acc", "lr"],
                          normalize=False)
    dm.setup("fit")
    (wb, cond), = list(dm.test_dataloader())
    items = dm.items("test")
    assert cond.shape == (len(items["runs"]), 2) and cond.dtype == torch.float32
    with Zoo(zoo_path) as z:
        for k in (0, len(items["runs"]) - 1):
            row = int(np.flatnonzero(z.index == items["runs"][k])[0])
            c = z.epoch_position(items["epochs"][k])
            assert cond[k, 0] == pytest.approx(float(z.metric("test_acc")[row, c]))
            assert cond[k, 1] == pytest.approx(float(z.hparam("lr")[row]), rel=1e-6)
            assert torch.equal(wb.weights[0][k], z.batch([row], c)["layers.0.weight"][0])
    with pytest.raises(KeyError, match="neither a stored metric"):
        WeightDataModule([zoo_path], conditions=["nope"])
    bad = WeightDataModule([zoo_path], conditions=["optimizer"])
    with pytest.raises(ValueError, match="condition 'optimizer' is not numeric"):
        bad.setup("fit")  # found when the split is made, not at the first batch
    # the conditions' normalizer is fitted on the training items, per column
    dm_n = WeightDataModule([zoo_path], checkpoints="all", conditions=["test_acc", "lr"])
    dm_n.setup("fit")
    norm = dm_n.normalizers()["condition_normalizer"]
    train_cond = torch.cat([c for _, c in dm_n.train_dataloader()])
    torch.testing.assert_close(norm(train_cond).mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm(train_cond).std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)


def test_select_keeps_only_matching_runs_and_fixes_the_activation(zoo_path):
    with Zoo(zoo_path) as z:
        opt = z.hparam("optimizer")
        wanted = set(z.index[z.done & (opt == "adam")].tolist())
    dm = WeightDataModule([zoo_path], select={"optimizer": "adam"})
    dm.setup("fit")
    used = {r for s in ("train", "val", "test") for r in dm.split_runs[s]}
    assert used == wanted and dm.excluded["not selected"] > 0
    with pytest.raises(ValueError, match="no done model"):
        WeightDataModule([zoo_path], select={"optimizer": "rmsprop"})
    with pytest.raises(KeyError, match="no checkpoint at epoch 99"):  # metrics are selected at a stored epoch
        WeightDataModule([zoo_path], select={"test_acc": [0.5, None], "checkpoint": 99})


def test_align_permutes_networks_onto_one_training_network(zoo_path):
    from wsl.weights.align import matching_objective

    plain = WeightDataModule([zoo_path], normalize=False)
    aligned = WeightDataModule([zoo_path], normalize=False, align=True)
    plain.setup("fit"), aligned.setup("fit")
    ref = plain.weights("train")[0]
    for s in ("train", "test"):
        a, p = aligned.weights(s), plain.weights(s)
        # the same networks (a permutation only: same sorted weights), closer to the reference
        for ta, tp in zip(a.params(), p.params()):
            torch.testing.assert_close(ta.flatten(1).sort(1).values, tp.flatten(1).sort(1).values)
        assert (matching_objective(ref, a) >= matching_objective(ref, p) - 1e-5).all()
        assert (matching_objective(ref, a) > matching_objective(ref, p) + 1e-5).any()
    with pytest.raises(ValueError, match="undo each other"):
        WeightDataModule([zoo_path], align=True, augment={"permutation": True})


@pytest.mark.parametrize("name", ["np", "hnp", "dwsnet"])
def test_backbone_learns_the_identity_on_a_zoo(zoo_path, name, one_thread):
    """A weight -> weight backbone (one channel in, one out) trained to reproduce its input: the map a
    denoiser or an autoencoder starts from. One equivariant layer holds the identity exactly; trained
    full-batch (L-BFGS) on the normalized weights of the zoo's training runs, it must reproduce them
    and the held-out validation runs' weights."""
    from wsl.nn import build_backbone

    dm = WeightDataModule([zoo_path], checkpoints="all", batch_size=32, split_seed=1)
    dm.setup("fit")
    train = WeightBatch.cat([b[0] for b in dm.train_dataloader()])
    val = WeightBatch.cat([b[0] for b in dm.val_dataloader()])
    torch.manual_seed(0)
    backbone = build_backbone(name, dm.spec, in_channels=1, out_channels=1, channels=8, layers=1)

    def relative_error(wb: WeightBatch) -> torch.Tensor:
        out = backbone(wb.features()).to_weights()
        return ((out.flatten() - wb.flatten()) ** 2).mean() / wb.flatten().var()

    with torch.no_grad():
        before = relative_error(val).item()
    opt = torch.optim.LBFGS(backbone.parameters(), lr=1, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = relative_error(train)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        fit, held_out = relative_error(train).item(), relative_error(val).item()
    assert before > 1.0 and fit < 0.01 and held_out < before / 8, (before, fit, held_out)


def test_checkpoint_positions_are_checked(zoo_path):
    from wsl.data import ZooRuns

    runs = ZooRuns(zoo_path)
    assert runs.checkpoint_position(0, -1) == 2 and runs.checkpoint_position(0, 1) == 1
    with pytest.raises(IndexError, match="checkpoint position 3 out of range for 3 checkpoints"):
        runs.checkpoint_position(0, 3)


def test_per_parameter_normalizer_standardises_each_parameter_and_round_trips():
    wb = random_wb(n=64)
    shared = wb.map(lambda t: t * 0.05 + torch.randn(t.shape[1:], generator=torch.Generator().manual_seed(3)))
    norm = WeightNormalizer(wb.spec, per_parameter=True).fit(shared[k:k + 16] for k in range(0, 64, 16))  # in parts
    z = norm(shared).flatten()
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(z.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.inverse(norm(shared)).flatten(), shared.flatten(), atol=1e-5, rtol=0)
    fresh = WeightNormalizer(wb.spec)  # what a model builds before its checkpoint is loaded
    fresh.load_state_dict(norm.state_dict())
    assert fresh.per_parameter and torch.equal(fresh(shared).flatten(), norm(shared).flatten())
    fresh.load_state_dict(WeightNormalizer(wb.spec).fit(wb).state_dict())  # and back to per tensor
    assert not fresh.per_parameter and list(fresh.state_dict()) == ["scale"]


def test_per_parameter_normalizer_keeps_a_constant_parameter_finite():
    wb = random_wb(n=8)
    const = wb.map(lambda t: t.clone())
    const.weights[0][:, 0, 0] = 0.7  # the same in every network
    norm = WeightNormalizer(wb.spec, per_parameter=True).fit(const)
    out = norm(const).flatten()
    assert torch.isfinite(out).all() and out[:, 0].abs().max() < 1e-3
    assert torch.allclose(norm.inverse(norm(const)).weights[0][:, 0, 0], torch.full((8,), 0.7))


def test_datamodule_refuses_an_unknown_normalization(zoo_path):
    with pytest.raises(ValueError, match="normalize must be"):
        WeightDataModule([str(zoo_path)], normalize="layer")

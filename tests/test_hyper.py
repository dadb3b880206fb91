"""Hypernetworks (wsl.hyper): conditioning, the emitter, the functional and distillation losses,
training, checkpoints, the search, and the CLI."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import generate_zoo, hidden_perms, load_script

from wsl.data import TaskDataModule, WeightDataModule
from wsl.hyper import HyperNetwork
from wsl.hyper.conditioning import HparamEncoder, LabelEncoder, hparam_range
from wsl.hyper.emitter import WeightEmitter
from wsl.hyper.objectives import ExampleDraws, functional_loss, output_distillation_loss
from wsl.core.checkpoint import load_model
from wsl.hyper.search import best_grid_point, gradient_search, train_directly
from wsl.core.trainer import make_trainer
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute
from zoo.architectures import TorchNet, population_init
from zoo.config import parse_config
from zoo.generate import build_task_and_spec

CONDITIONS = ["weight_decay", "dropout", "label_noise", "data_fraction"]


def tiny_config(num_models: int = 24) -> dict:
    return {"name": "tiny_grid", "seed": 0, "num_models": num_models, "epochs": 3, "checkpoints": [0, 3],
            "task": {"name": "digits"}, "architecture": {"name": "mlp", "hidden": [8], "activation": "relu"},
            "hparams": {"optimizer": "adam", "lr": 0.01, "batch_size": 64,
                        "weight_decay": {"grid": [0.0001, 0.01]}, "dropout": {"grid": [0.0, 0.3]},
                        "label_noise": {"grid": [0.0, 0.3]}, "data_fraction": {"uniform": [0.5, 1.0]}}}


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("hyper") / "tiny_grid.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    return str(path)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    return generate_zoo(tiny_config(), tmp_path_factory.mktemp("hyperzoo") / "tiny.h5")


def test_hparam_ranges_and_encodings_round_trip():
    hp = parse_config(tiny_config()).hparams
    wd, noise, frac = (hparam_range(hp, n) for n in ("weight_decay", "label_noise", "data_fraction"))
    assert wd.log and (wd.low, wd.high) == (1e-4, 1e-2)  # a grid spanning 100x: log scale
    assert not noise.log and not frac.log and (frac.low, frac.high) == (0.5, 1.0)
    enc = HparamEncoder([r.to_dict() for r in (wd, noise, frac)])
    values = torch.tensor([[1e-4, 0.0, 0.5], [1e-3, 0.15, 0.75], [1e-2, 0.3, 1.0]])
    u = enc.to_unit(values)
    assert torch.allclose(u, torch.tensor([[0.0, 0, 0], [0.5, 0.5, 0.5], [1, 1, 1]]), atol=1e-6)
    assert torch.allclose(enc.from_unit(u), values, rtol=1e-5)
    assert torch.allclose(enc(values), 2 * u - 1)
    mip = HparamEncoder([r.to_dict() for r in (wd, noise, frac)], mip=True)
    x = mip(values)
    assert x.shape == (3, 6) and mip.out_dim == 6
    pairs = torch.stack([x[:, :3], x[:, 3:]], -1)  # (cos, sin) of each hyperparameter
    assert torch.allclose(pairs.norm(dim=-1), torch.ones(3, 3), atol=1e-6)  # constant norm: magnitude-invariant
    with pytest.raises(ValueError, match=r"expected \[B, 3\] values of \['weight_decay', 'label_noise', 'data_fraction'\]"):
        enc(values[:, :2])
    with pytest.raises(ValueError, match="'optimizer' is fixed to 'adam'; conditioning on it needs a range"):
        hparam_range(hp, "optimizer")
    with pytest.raises(ValueError, match="'nope' is not a hyperparameter"):
        hparam_range(hp, "nope")


def test_label_encoder_checks_labels_and_normalizes_with_mip():
    enc = LabelEncoder(10, dim=8, mip=True)
    e = enc(torch.tensor([0, 3, 9]))
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-6)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), found 0..10"):
        enc(torch.tensor([0, 10]))


@pytest.mark.parametrize("heads", ["layer", "chunk"])
def test_emitter_emits_init_scale_weights_and_mip_starts_at_its_base(heads):
    _, spec = build_task_and_spec(parse_config(tiny_config()))
    torch.manual_seed(0)
    plain = WeightEmitter(spec, 4, hidden=64, heads=heads, chunk_size=100)
    flat = plain(torch.randn(16, 4))
    assert flat.shape == (16, spec.num_params)
    wb = WeightBatch.from_flat(spec, flat)
    first_std = wb.weights[0].std().item()  # default init: U(-1/sqrt(64), 1/sqrt(64)), std 0.072
    assert 0.2 * 0.072 < first_std < 5 * 0.072
    mip = WeightEmitter(spec, 4, hidden=64, heads=heads, chunk_size=100, mip=True, base_seed=3)
    out = mip(torch.randn(5, 4))
    base = torch.cat([t.flatten(1) for t in population_init(spec, [3], [1.0])], 1)
    assert torch.equal(out, base.expand(5, -1))  # every condition starts at the zoo init of seed 3
    with pytest.raises(ValueError, match="heads must be one of"):
        WeightEmitter(spec, 4, heads="row")
    if heads == "chunk":  # far smaller than the networks it stands for
        assert sum(p.numel() for p in plain.parameters()) < 40 * spec.num_params


def test_functional_loss_equals_plain_training_loss_of_each_network():
    config = parse_config(tiny_config())
    task, spec = build_task_and_spec(config)
    draws = ExampleDraws(task, seed=0)
    wb = WeightBatch.from_params(spec, population_init(spec, [1, 2, 3], [1.0, 1.0, 1.0]))
    x, y, idx = task.x_train[:200], task.y_train[:200], torch.arange(200)
    lam = {"weight_decay": torch.tensor([0.0, 0.01, 0.0]), "label_noise": torch.tensor([0.0, 0.0, 0.4]),
           "data_fraction": torch.tensor([1.0, 0.5, 1.0])}
    got = functional_loss(spec, wb.params(), task, x, y, idx, lam, draws, "relu")
    for m in range(3):
        net = TorchNet(spec, "relu")
        net.load_state_dict(wb.state_dict(m))
        keep = draws.u[idx] < lam["data_fraction"][m]
        noisy = draws.v[idx] < lam["label_noise"][m]
        targets = torch.where(noisy, draws.wrong[idx], y)
        want = F.cross_entropy(net(x)[keep], targets[keep])
        want = want + 0.5 * lam["weight_decay"][m] * sum(p.pow(2).sum() for p in net.parameters())
        assert got[m].item() == pytest.approx(want.item(), rel=1e-5)
    # nested: the examples noisy at 0.2 are noisy at 0.4, and a wrong label is never the true one
    assert bool(((draws.v < 0.2) <= (draws.v < 0.4)).all())
    assert not bool((draws.wrong == task.y_train).any())
    assert 0.35 < float((draws.v < 0.4).float().mean()) < 0.45


def test_output_distillation_is_invariant_to_the_teachers_neuron_order():
    _, spec = build_task_and_spec(parse_config(tiny_config()))
    teacher = WeightBatch.from_params(spec, population_init(spec, [5, 6], [1.0, 1.0]))
    student = WeightBatch.from_params(spec, population_init(spec, [7, 8], [1.0, 1.0]))
    x = torch.randn(32, 64)
    loss = output_distillation_loss(spec, student.params(), teacher.params(), "classification", x, "relu")
    permuted = permute(teacher, hidden_perms(spec, 2))
    assert not torch.allclose(permuted.flatten(), teacher.flatten())
    again = output_distillation_loss(spec, student.params(), permuted.params(), "classification", x, "relu")
    assert torch.allclose(loss, again, atol=1e-6)
    assert float(output_distillation_loss(spec, teacher.params(), teacher.params(), "classification", x, "relu").abs().max()) < 1e-6


def test_hypernetwork_learns_functionally_and_round_trips_its_checkpoint(tiny_yaml, tmp_path, one_thread):
    torch.manual_seed(0)
    data = TaskDataModule(tiny_yaml, conditions=CONDITIONS, batch_size=128)
    model = HyperNetwork(data.spec_json, data.source_json, CONDITIONS, hidden=32, chunk_size=128,
                         networks_per_step=8, lr=3e-3, eval_points=8)
    before = model.evaluate_at(model.eval_lambdas())["loss"].mean()
    trainer = make_trainer(40, default_root_dir=tmp_path, enable_checkpointing=True, check_val_every_n_epoch=40)
    trainer.fit(model, data)
    after = model.evaluate_at(model.eval_lambdas())["loss"].mean()
    assert after < 0.7 * before
    assert trainer.callback_metrics["val/acc"] > 0.5
    ckpt = tmp_path / "h.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = load_model(ckpt, HyperNetwork)
    lam = model.eval_lambdas()
    model.eval()
    assert torch.allclose(loaded.emit(lam).flatten(), model.emit(lam).flatten())
    before = [p.clone() for p in loaded.parameters()]
    found = gradient_search(loaded, steps=5, starts=2)
    assert set(found["lambda"]) == set(CONDITIONS) and len(found["curve"]) == 5
    assert all(p.requires_grad and torch.equal(p, q) for p, q in zip(loaded.parameters(), before))  # only λ moved
    for k, name in enumerate(CONDITIONS):
        r = loaded.encoder.ranges[k]
        assert r.low <= found["lambda"][name] <= r.high
    direct = train_directly(loaded, found["lambda"], seeds=2)
    assert direct["test_acc"].shape == (2,) and (direct["test_acc"] > 0.1).all()


def test_hypernetwork_refuses_what_it_cannot_train_under(tiny_yaml, tmp_path):
    data = TaskDataModule(tiny_yaml, conditions=["weight_decay"])
    with pytest.raises(ValueError, match="'dropout' varies in the zoo config .* neither a condition nor given in fixed"):
        HyperNetwork(data.spec_json, data.source_json, ["weight_decay"])
    model = HyperNetwork(data.spec_json, data.source_json, ["weight_decay"],
                         fixed={"dropout": 0.1, "label_noise": 0.0, "data_fraction": 1.0})
    assert model.fixed == {"dropout": 0.1, "label_noise": 0.0, "data_fraction": 1.0}
    with pytest.raises(ValueError, match=r"conditions \['lr'\] have no meaning for the functional loss"):
        HyperNetwork(data.spec_json, data.source_json, ["lr", "dropout"])
    with pytest.raises(ValueError, match="needs conditions"):
        HyperNetwork(data.spec_json, data.source_json, [])
    with pytest.raises(ValueError, match="condition 'momentum' is fixed to 0.0 in this config"):
        TaskDataModule(tiny_yaml, conditions=["momentum"])
    with pytest.raises(ValueError, match="condition 'beta' is not a hyperparameter of this config"):
        TaskDataModule(tiny_yaml, conditions=["beta"])
    with pytest.raises(FileNotFoundError, match="nope.h5: not found"):
        TaskDataModule(str(tmp_path / "nope.h5"))
    bad = tmp_path / "not_a_checkpoint.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="expected a hypernetwork checkpoint .* found a state_dict of 1 tensors"):
        load_model(bad, HyperNetwork)


def test_functional_label_noise_and_data_fraction_warn_that_they_leak(tiny_yaml, capsys):
    data = TaskDataModule(tiny_yaml, conditions=CONDITIONS)
    HyperNetwork(data.spec_json, data.source_json, CONDITIONS).on_fit_start()
    assert "functional conditions ['label_noise', 'data_fraction']" in capsys.readouterr().err
    HyperNetwork(data.spec_json, data.source_json, ["weight_decay", "dropout"],
                 fixed={"label_noise": 0.0, "data_fraction": 1.0}).on_fit_start()
    assert "functional conditions" not in capsys.readouterr().err


def test_distillation_from_zoo_weights_and_outputs(tiny_zoo, one_thread):
    for signal, align in (("weights", True), ("outputs", False)):
        torch.manual_seed(0)
        data = WeightDataModule([tiny_zoo], conditions=CONDITIONS, align=align, batch_size=8)
        data.setup("fit")
        model = HyperNetwork(data.spec_json, data.source_json, CONDITIONS, signal=signal, hidden=32, chunk_size=128,
                             lr=3e-3)
        model.set_normalizers(**data.normalizers())
        batch = next(iter(data.train_dataloader()))
        first = float(model._distillation_loss(batch))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(30):
            opt.zero_grad()
            loss = model._distillation_loss(batch)
            loss.backward()
            opt.step()
        assert float(loss) < 0.7 * first, signal
    with pytest.raises(ValueError, match="must be a TaskDataModule"):
        HyperNetwork(data.spec_json, data.source_json, CONDITIONS).training_step(batch, 0)


def test_best_grid_point_is_chosen_by_validation_accuracy(tiny_zoo):
    from zoo.store import Zoo

    best = best_grid_point(tiny_zoo, ["weight_decay", "dropout", "label_noise"])
    assert best["grid_points"] == 8 and best["networks"] == 3
    with Zoo(tiny_zoo) as z:
        val = z.metric("val_acc")[:, -1]
        keys = list(zip(z.hparam("weight_decay"), z.hparam("dropout"), z.hparam("label_noise")))
    means = {k: val[[i for i, kk in enumerate(keys) if kk == k]].mean() for k in set(keys)}
    top = max(means, key=means.get)
    assert tuple(best["lambda"].values()) == pytest.approx(top)
    assert best["val_acc"] == pytest.approx(float(means[top]))


def test_cli_fit_and_search(tiny_yaml, tmp_path, capsys, one_thread):
    from wsl.cli.main import main

    config = tmp_path / "h.yaml"
    config.write_text(yaml.safe_dump({
        "trainer": {"max_epochs": 2, "default_root_dir": str(tmp_path / "runs"), "enable_progress_bar": False,
                    "logger": False},
        "data": {"class_path": "wsl.data.TaskDataModule", "init_args": {"config": tiny_yaml, "conditions": CONDITIONS}},
        "model": {"class_path": "wsl.hyper.HyperNetwork", "init_args": {"hidden": 16, "chunk_size": 128,
                                                                          "parametrization": "mip", "eval_points": 4}}}))
    assert main(["fit", "--config", str(config)]) == 0
    ckpts = sorted((tmp_path / "runs").rglob("best-*.ckpt"))
    assert ckpts
    capsys.readouterr()
    assert main(["hyper", "search", "--model", str(ckpts[0]), "--steps", "3", "--starts", "2", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "λ found by gradient on the validation loss" in out and "networks trained directly at λ" in out
    assert main(["hyper", "search", "--model", str(tiny_yaml)]) == 2
    assert "expected a hypernetwork checkpoint" in capsys.readouterr().err


def test_hypernetwork_over_several_tasks(tiny_yaml, tmp_path, one_thread):
    other = tiny_config()
    other["task"] = {"name": "digits", "n_train": 400, "n_val": 200, "split_seed": 1}  # other examples, other split
    other_yaml = tmp_path / "other.yaml"
    other_yaml.write_text(yaml.safe_dump(other))
    torch.manual_seed(0)
    data = TaskDataModule(tiny_yaml, conditions=["task", *CONDITIONS], tasks=[str(other_yaml)], batch_size=64)
    assert len(data.train_dataloader()) == 2
    model = HyperNetwork(data.spec_json, data.source_json, data.conditions, hidden=32, chunk_size=128,
                         networks_per_step=8, lr=3e-3, eval_points=4)
    assert model.conditions == [*CONDITIONS, "task"] and model.num_tasks == 2
    assert len(model.tasks[1].y_train) == 400 and len(model.tasks[0].y_train) == 1000
    make_trainer(15, enable_checkpointing=False).fit(model, data)
    values = model.eval_lambdas()
    assert values.shape == (8, 5) and values[:4, -1].eq(0).all() and values[4:, -1].eq(1).all()
    res = model.evaluate_at(values, "val")
    assert res["acc"][:4].mean() > 0.5 and res["acc"][4:].mean() > 0.5
    # each row is run on its own task's validation examples
    wb = model.emit(values[4:5])
    from zoo.train import evaluate
    want = evaluate(model.spec, wb.params(), model.tasks[1], model.tasks[1].x_val, model.tasks[1].y_val,
                    activation="relu")["acc"]
    assert res["acc"][4] == pytest.approx(float(want[0]))
    swapped = values[4:5].clone()
    swapped[0, -1] = 0  # the same λ on the other task: other weights
    assert not torch.allclose(model.emit(swapped).flatten(), wb.flatten())
    found = gradient_search(model, steps=3, starts=2, task=1)
    assert found["task"] == 1 and set(found["lambda"]) == set(CONDITIONS)
    with pytest.raises(ValueError, match="task must be in"):
        gradient_search(model, steps=1, task=2)
    with pytest.raises(ValueError, match="the condition 'task' and tasks go together"):
        TaskDataModule(tiny_yaml, conditions=["task"])
    mnist1d = tiny_config()
    mnist1d["task"] = {"name": "mnist1d", "num_samples": 400, "n_val": 50}
    mnist1d_yaml = tmp_path / "mnist1d.yaml"
    mnist1d_yaml.write_text(yaml.safe_dump(mnist1d))
    with pytest.raises(ValueError, match=r"different weight spaces: task .*mnist1d.yaml has mlp \[layers.0.weight \[8, 40\]"):
        TaskDataModule(tiny_yaml, conditions=["task"], tasks=[str(mnist1d_yaml)])


def test_hypernetwork_emits_cnns_and_trains_them_functionally(tmp_path, one_thread):
    config = tiny_config()
    config["architecture"] = {"name": "cnn", "channels": [4, 8], "kernel": 3, "stride": 2, "activation": "relu"}
    path = tmp_path / "cnn.yaml"
    path.write_text(yaml.safe_dump(config))
    torch.manual_seed(0)
    data = TaskDataModule(str(path), conditions=CONDITIONS, batch_size=64)
    assert data.spec.layers[0].kind == "conv2d" and data.task.input_shape == (1, 8, 8)
    model = HyperNetwork(data.spec_json, data.source_json, CONDITIONS, hidden=32, chunk_size=128,
                         networks_per_step=4, lr=3e-3, eval_points=4)
    values = model.eval_lambdas()
    wb = model.emit(values)
    assert wb.weights[0].shape == (4, 4, 1, 3, 3)
    # the emitted CNNs run as plain torch modules do
    net = TorchNet(data.spec, "relu")
    net.load_state_dict(wb.state_dict(2))
    from zoo.functional import population_forward
    x = data.task.x_val[:16]
    assert torch.allclose(population_forward(data.spec, wb.params(), x, activation="relu")[2], net(x), atol=1e-5)
    before = model.evaluate_at(values)["loss"].mean()
    make_trainer(10, enable_checkpointing=False).fit(model, data)
    assert model.evaluate_at(values)["loss"].mean() < before


@pytest.mark.parametrize("name", ["digits_hparams", "digits_hparams_distill"])
def test_the_shipped_hyperparameter_configs_build_and_emit(name, tiny_zoo):
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "hyper" / f"{name}.yaml").read_text())
    assert raw["model"]["class_path"] == "wsl.hyper.HyperNetwork"
    args = dict(raw["data"]["init_args"])
    if raw["data"]["class_path"] == "wsl.data.TaskDataModule":
        data = TaskDataModule(**args)  # a shipped zoo config's name: resolved from any folder
        assert data.spec.num_params == 3466
    else:
        assert raw["data"]["class_path"] == "wsl.data.WeightDataModule" and args["zoos"] == ["zoos/digits_mlp_grid.h5"]
        data = WeightDataModule(**{**args, "zoos": [tiny_zoo]})  # the grid zoo is generated by the user
        data.setup("fit")
    model = HyperNetwork(data.spec_json, data.source_json, data.conditions, **raw["model"]["init_args"])
    model.set_normalizers(**data.normalizers())
    wb = model.emit(model.eval_lambdas()[:3])
    assert len(wb) == 3 and wb.spec == data.spec


def test_benchmark_follows_each_axis_apart_from_the_others():
    """``benchmark_hyper.axis_pearson``: only the change along one λ axis is compared, whatever the
    emitted networks do along the others."""
    bench = load_script("benchmark_hyper")
    a, b = np.meshgrid(np.arange(4.0), np.arange(3.0), indexing="ij")
    points = np.stack([a.ravel(), b.ravel()], 1)
    direct = 0.9 - 0.05 * points[:, 0] + 0.01 * np.sin(points[:, 1])
    emitted = 0.95 - 0.02 * points[:, 0] + 0.3 * points[:, 1]  # follows axis 0, not axis 1
    assert bench.axis_pearson(points, 0, emitted, direct) == pytest.approx(1.0)
    assert bench.axis_pearson(points, 1, emitted, direct) < 0.9
    assert bench.pearson(emitted, direct) < 0.5  # over the grid, axis 1 drowns axis 0
    assert bench.axis_slope(points, 0, emitted, direct) == pytest.approx(0.4)  # 0.02 of the trained 0.05 per step

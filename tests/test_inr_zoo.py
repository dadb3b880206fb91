"""INR zoos, generator side: the population fitter equals fitting alone, divergence, the zoo file's
/signals (round trip, resume, shards, verify), clear errors, ``wsl zoo render`` and the loaders."""
import shutil

import h5py
import numpy as np
import pytest
import torch

from test_store import assert_same_datasets, read_all
from test_tasks import make_fake_idx_dir
from wsl.cli import main
from wsl.cli.render import decode, render_inr
from zoo.architectures import TorchNet, build_spec
from zoo.config import ConfigError, parse_config
from zoo.generate import build_task_and_spec, generate
from zoo.inr import fit_population, psnr
from zoo.merge import merge
from zoo.signals import load_signals
from zoo import tasks
from zoo.store import SPLITS, STATUS_DIVERGED, STATUS_DONE, Zoo
from zoo.train import initial_params
from zoo.verify import verify

QUIET = dict(progress=False, log=lambda s: None)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
M = 8

# 10 digit images x 2 INRs, 20 steps, chunks of 8 (three chunks: resumption has something to do).
ZOO = {
    "name": "digits_inr_tiny", "seed": 2, "num_models": 20, "epochs": 20, "checkpoints": [0, 10, 20],
    "task": {"name": "digits-inr", "n_train": 6, "n_val": 2, "n_test": 2, "inrs_per_signal": 2},
    "architecture": {"name": "siren", "hidden": [8, 8], "omega_0": 30},
    "hparams": {"lr": {"log_uniform": [0.001, 0.01]}, "optimizer": "adam", "momentum": {"uniform": [0.8, 0.95]}},
    "training": {"chunk_size": 8},
}


def zoo_config(**over):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in ZOO.items()}
    for k, v in over.items():
        raw[k] = dict(raw[k], **v) if isinstance(v, dict) and k in ("task", "hparams") else v
    return parse_config(raw)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: a second thread only adds waits, and on a loaded machine a wait for a
    descheduled thread costs a time slice per op (13 s instead of 1 s for a test, seen here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits8():
    return load_signals("digits-inr", n_train=M, n_val=0, n_test=0)


@pytest.fixture(scope="module")
def siren():
    return build_spec("siren", (2,), 1, hidden=[16, 16], omega_0=30)


@pytest.fixture(scope="module")
def inr_zoo(tmp_path_factory):
    return generate(zoo_config(), tmp_path_factory.mktemp("inr") / "zoo.h5", **QUIET)


def fit_alone(spec, coords, target, hp, i, seed, steps):
    """INR i fitted the plain way: a torch.nn module, torch.optim, full-batch steps on its MSE."""
    net = TorchNet(spec)
    with torch.no_grad():
        for p, init in zip(net.parameters(), initial_params(spec, seed, hp["init_scale"][i])):
            p.copy_(init)
    lr, mom, wd = hp["lr"][i], hp["momentum"][i], hp["weight_decay"][i]
    if hp["optimizer"][i] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=mom, weight_decay=wd)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(mom, 0.999), weight_decay=wd)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(net(coords), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net


def inr_hparams(kinds, **over):
    """Per-model hyperparameters that differ between the models, in a stable regime (SGD at lr >= 0.02 on
    these SIRENs is chaotic: 1e-7 changes grow to O(1) within 25 steps, so no two codes could agree)."""
    rng = np.random.default_rng(1)
    hp = {"optimizer": list(kinds),
          "lr": [float(rng.uniform(1e-3, 5e-3)) if k == "adam" else float(rng.uniform(0.002, 0.008)) for k in kinds],
          "momentum": [float(rng.uniform(0.8, 0.95)) if k == "adam" else 0.9 for k in kinds],
          "weight_decay": list(rng.uniform(0.0, 1e-3, len(kinds))),
          "init_scale": list(rng.uniform(0.8, 1.2, len(kinds))),
          "activation": ["sine"] * len(kinds)}
    hp.update(over)
    return hp


# ----------------------------------------------------------------------------------------------
# the fitter

@pytest.mark.parametrize("kinds", [["adam"] * M, ["sgd"] * M, ["sgd", "adam"] * (M // 2)], ids=["adam", "sgd", "mixed"])
def test_population_equals_each_inr_fitted_alone(digits8, siren, kinds):
    steps = 25
    hp = inr_hparams(kinds)
    seeds = list(range(100, 100 + M))
    res = fit_population(siren, digits8.coords, digits8.values, hp, seeds, epochs=steps, checkpoints=[0, steps],
                         peak=digits8.peak)
    assert (res.status == STATUS_DONE).all()
    assert res.metrics["psnr"][:, 1].mean() > res.metrics["psnr"][:, 0].mean() + 1  # the fits got somewhere
    for i in range(M):
        init = initial_params(siren, seeds[i], hp["init_scale"][i])
        for k, p in enumerate(init):
            np.testing.assert_array_equal(res.params[k][i, 0], p.numpy())
        net = fit_alone(siren, digits8.coords, digits8.values[i], hp, i, seeds[i], steps)
        for k, p in enumerate(net.parameters()):
            np.testing.assert_allclose(res.params[k][i, 1], p.detach().numpy(), rtol=1e-4, atol=2e-5,
                                       err_msg=f"model {i} ({kinds[i]}), parameter {k}")
        with torch.no_grad():
            mse = torch.nn.functional.mse_loss(net(digits8.coords), digits8.values[i])
        np.testing.assert_allclose(res.metrics["mse"][i, 1], mse.item(), rtol=1e-3)
        np.testing.assert_allclose(res.metrics["psnr"][i, 1], psnr(mse, 2.0).item(), atol=5e-3)


def test_a_diverging_inr_is_marked_and_the_others_are_unaffected(digits8, siren):
    steps, bad = 20, 3
    hp = inr_hparams(["sgd"] * M)
    hp["lr"][bad] = 1e6
    seeds = list(range(M))
    res = fit_population(siren, digits8.coords, digits8.values, hp, seeds, epochs=steps, checkpoints=[0, 10, steps])
    assert res.status[bad] == STATUS_DIVERGED and 0 < res.diverged_epoch[bad] <= steps
    assert np.isfinite(res.metrics["mse"][bad, 0]) and np.isnan(res.metrics["mse"][bad, -1])
    assert all(np.isnan(p[bad, -1]).all() for p in res.params)
    keep = [i for i in range(M) if i != bad]
    assert (res.status[keep] == STATUS_DONE).all() and (res.diverged_epoch[keep] == -1).all()
    hp_keep = {k: [v[i] for i in keep] for k, v in hp.items()}
    without = fit_population(siren, digits8.coords, digits8.values[keep], hp_keep, [seeds[i] for i in keep],
                             epochs=steps, checkpoints=[0, 10, steps])
    for a, b in zip(res.params, without.params):
        np.testing.assert_array_equal(a[keep], b)
    np.testing.assert_allclose(res.metrics["psnr"][keep], without.metrics["psnr"], rtol=1e-5)


def test_early_stopping_freezes_each_inr_at_its_stop_psnr(digits8, siren):
    hp = inr_hparams(["adam"] * M)
    seeds = list(range(M))
    full = fit_population(siren, digits8.coords, digits8.values, hp, seeds, epochs=30, checkpoints=list(range(31)),
                          peak=digits8.peak)
    curves = full.metrics["psnr"]  # [M, 31]: the PSNR after every step
    stop = float(np.median(curves[:, -1]))  # about half the INRs reach it within 30 steps
    res = fit_population(siren, digits8.coords, digits8.values, hp, seeds, epochs=30, checkpoints=[0, 30],
                         peak=digits8.peak, stop_psnr=stop)
    reached = (curves >= stop).any(1)
    assert 0 < reached.sum() < M
    for i in range(M):
        first = int(np.argmax(curves[i] >= stop)) if reached[i] else 30  # its weights stay those of that step
        for k in range(len(res.params)):
            np.testing.assert_allclose(res.params[k][i, 1], full.params[k][i, first], rtol=1e-5, atol=1e-6,
                                       err_msg=f"model {i}, parameter {k}, stopped at step {first}")
        assert (res.metrics["psnr"][i, 1] >= stop) == reached[i]
    # a stop every INR has reached at its initialisation: nothing trains, every checkpoint is the init
    low = float(curves[:, 0].min()) - 1
    res = fit_population(siren, digits8.coords, digits8.values, hp, seeds, epochs=30, checkpoints=[0, 10, 30],
                         peak=digits8.peak, stop_psnr=low)
    for p in res.params:
        np.testing.assert_array_equal(p[:, 2], p[:, 0])
    np.testing.assert_allclose(res.metrics["psnr"][:, 2], curves[:, 0], rtol=1e-6)


def test_shared_initialisation_and_the_dwsnets_scheme(tmp_path):
    shared = generate(zoo_config(init={"seeds": "shared", "scheme": "dwsnets"}), tmp_path / "shared.h5", **QUIET)
    own = generate(zoo_config(), tmp_path / "own.h5", **QUIET)
    with Zoo(shared) as z, Zoo(own) as o:
        assert z.config["init"] == {"seeds": "shared", "scheme": "dwsnets"} and o.config["init"]["seeds"] == "independent"
        start, trained = z.batch(np.arange(20), checkpoint=0), z.batch(np.arange(20))
        first = o.batch(np.arange(20), checkpoint=0)
    for name, t in start.items():  # every model starts from the same weights ...
        assert (t == t[:1]).all(), name
    for name in ("layers.0.bias", "layers.1.bias"):  # ... with zero sine-layer biases
        assert (start[name] == 0).all()
    bound = (6 / 2) ** 0.5 / 30  # sqrt(6 / fan_in) / omega_0 in the first layer too (standard: 1 / fan_in)
    assert bound / 2 < start["layers.0.weight"].abs().max() <= bound
    assert (trained["layers.0.weight"] != trained["layers.0.weight"][:1]).any()  # the fits differ
    assert (first["layers.0.weight"] != first["layers.0.weight"][:1]).any()  # independent: own inits
    assert first["layers.0.bias"].abs().min() > 0
    with Zoo(shared) as z:
        assert "init       shared seeds, dwsnets scheme" in z.summary()


# ----------------------------------------------------------------------------------------------
# the zoo file

def test_generate_then_read_the_signals_back(inr_zoo):
    signals, _ = build_task_and_spec(zoo_config())
    with Zoo(inr_zoo) as z:
        assert z.is_inr and len(z) == 20 and z.done.all()
        assert z.task["signal_shape"] == [8, 8] and z.task["target_range"] == [-1.0, 1.0]
        which = np.arange(20) // 2
        np.testing.assert_array_equal(z.signal("signal"), which)
        for name in ("label", "split", "source_index"):
            np.testing.assert_array_equal(z.signal(name), signals.fields[name][which])
        assert sorted(set(z.signal("split"))) == ["test", "train", "val"]
        assert torch.equal(z.signal_coords(), signals.coords)
        assert torch.equal(z.signal_values(np.arange(20)), signals.values[which])
        assert torch.equal(z.signal_values(), signals.values[which])  # every model's
        assert torch.equal(z.signal_values([5, 2, 5]), signals.values[which[[5, 2, 5]]])
        db = z.metric("psnr")
        assert np.isfinite(db).all() and (db[:, -1] > db[:, 0]).all() and db[:, -1].mean() > db[:, 0].mean() + 2
        np.testing.assert_allclose(db, psnr(torch.from_numpy(z.metric("mse")), 2.0).numpy(), rtol=1e-5)
        assert set(z.select(split="test").tolist()) == set(np.flatnonzero(z.signal("split") == "test").tolist())
        for row in (0, 7, 19):  # a stored checkpoint, loaded into torch.nn, reproduces its stored fit
            net = TorchNet(z.spec)
            net.load_state_dict(z.state_dict(row))
            with torch.no_grad():
                out = net(z.signal_coords())
            mse = torch.nn.functional.mse_loss(out, z.signal_values([row])[0]).item()
            np.testing.assert_allclose(mse, z.metric("mse")[row, -1], rtol=1e-3)
            torch.testing.assert_close(decode(z, [row])[0], out, rtol=1e-5, atol=1e-5)


def test_resume_after_one_chunk_is_bit_identical(inr_zoo, tmp_path):
    path = tmp_path / "partial.h5"
    generate(zoo_config(), path, max_chunks=1, **QUIET)
    with Zoo(path) as z:
        assert 0 < int(z.done.sum()) < 20
        assert torch.equal(z.signal_values(np.arange(20)), Zoo(inr_zoo).signal_values(np.arange(20)))
    generate(zoo_config(), path, **QUIET)
    assert_same_datasets(inr_zoo, path)


def test_shards_merge_to_the_unsharded_zoo(inr_zoo, tmp_path):
    parts = [generate(zoo_config(), tmp_path / f"s{i}.h5", shard=(i, 2), **QUIET) for i in range(2)]
    with Zoo(parts[1]) as z:
        np.testing.assert_array_equal(z.signal("signal"), np.arange(10, 20) // 2)
    merged = merge(parts, tmp_path / "merged.h5")
    data = read_all(merged)
    assert {"signals/coords", "signals/values", "signals/fields/label", "signals/fields/split"} <= set(data)
    assert_same_datasets(inr_zoo, merged)


def test_verify_reports_corrupt_signal_values(inr_zoo, tmp_path):
    assert verify(inr_zoo) == []
    bad = tmp_path / "bad.h5"
    shutil.copyfile(inr_zoo, bad)
    with h5py.File(bad, "r") as f:
        info = f["signals/values"].id.get_chunk_info(0)
    start = info.byte_offset + info.size // 2
    with open(bad, "r+b") as fh:
        fh.seek(start)
        data = fh.read(8)
        fh.seek(start)
        fh.write(bytes(b ^ 0xA5 for b in data))
    problems = verify(bad)
    assert len(problems) == 1 and "/signals/values: unreadable" in problems[0], problems


# ----------------------------------------------------------------------------------------------
# clear errors

def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match=r"num_models: expected 20 \(10 signals"):
        build_task_and_spec(zoo_config(num_models=21))
    with pytest.raises(ConfigError, match="hparams.dropout.*not used by INR task 'digits-inr'"):
        zoo_config(hparams={"dropout": 0.1})
    with pytest.raises(ValueError, match=r"target_range.*low < high.*found \[1, 0\]"):
        build_task_and_spec(zoo_config(task={"target_range": [1, 0]}))
    with pytest.raises(ConfigError, match=r"task.stop_psnr: expected a PSNR in dB > 0, found -3"):
        zoo_config(task={"stop_psnr": -3})
    with pytest.raises(ConfigError, match=r"init.seeds: expected one of \['independent', 'shared'\], found 'same'"):
        zoo_config(init={"seeds": "same"})
    with pytest.raises(ConfigError, match=r"init.scheme: 'dwsnets' initialises SIRENs; the architecture is 'mlp'"):
        parse_config(dict(name="m", num_models=1, epochs=1, task="digits", architecture="mlp", init={"scheme": "dwsnets"}))
    raw = dict(ZOO, num_models=4, task={"name": "mnist-inr", "n_train": 2, "n_val": 1, "n_test": 1,
                                         "data_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match=f"mnist: could not find t10k-images-idx3-ubyte.*{tmp_path}"):
        generate(parse_config(raw), tmp_path / "never.h5", **QUIET)
    assert not (tmp_path / "never.h5").exists()


def test_render_refuses_a_zoo_that_is_not_inr(tmp_path, capsys):
    raw = {"name": "mlp", "num_models": 2, "epochs": 1, "task": {"name": "digits", "n_train": 50, "n_val": 20},
           "architecture": {"name": "mlp", "hidden": [4]}}
    path = generate(parse_config(raw), tmp_path / "mlp.h5", **QUIET)
    with Zoo(path) as z, pytest.raises(ValueError, match="not an INR zoo"):
        render_inr(z, tmp_path / "x.png")
    assert main(["zoo", "render", str(path), "--out", str(tmp_path / "x.png")]) == 2
    assert "not an INR zoo" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------------------------
# wsl zoo render

def test_render_draws_decoded_images_with_their_psnr(inr_zoo, tmp_path, capsys):
    with Zoo(inr_zoo) as z:
        path, rows, db = render_inr(z, tmp_path / "r.png", n=3, split="train", seed=1)
        assert len(rows) == 3 and (z.signal("split")[rows] == "train").all()
        np.testing.assert_allclose(db, z.metric("psnr")[rows, -1], atol=0.05)  # decoding = the fitted network
        _, rows0, db0 = render_inr(z, tmp_path / "r0.png", n=3, split="train", seed=1, checkpoint=0)
        np.testing.assert_array_equal(rows0, rows)
        np.testing.assert_allclose(db0, z.metric("psnr")[rows, 0], atol=0.05)
    assert path.read_bytes()[:8] == PNG_MAGIC
    png = tmp_path / "cli" / "test.png"
    assert main(["zoo", "render", str(inr_zoo), "--out", str(png), "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 INRs of split test: PSNR mean" in out and f"rendering written to {png}" in out
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 2000
    assert main(["zoo", "render", str(inr_zoo), "--checkpoint", "7"]) == 2
    assert "checkpoint position 7 out of range" in capsys.readouterr().err


def test_render_draws_sine_curves(tmp_path, capsys):
    raw = {"name": "sine_tiny", "num_models": 6, "epochs": 5, "checkpoints": [0, 5],
           "task": {"name": "sine-inr", "n_train": 2, "n_val": 2, "n_test": 2, "n_points": 16},
           "architecture": {"name": "siren", "hidden": [8, 8], "omega_0": 10},
           "hparams": {"lr": 0.002, "optimizer": "adam"}}
    path = generate(parse_config(raw), tmp_path / "sine.h5", **QUIET)
    png = tmp_path / "sine.png"
    assert main(["zoo", "render", str(path), "--out", str(png), "--split", "all"]) == 0
    assert "6 INRs of split all" in capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------------------------------
# signal loaders

def test_image_splits_are_disjoint_seeded_and_in_range():
    a = load_signals("digits-inr", n_train=30, n_val=10, n_test=10)
    b = load_signals("digits-inr", n_train=30, n_val=10, n_test=10)
    c = load_signals("digits-inr", n_train=30, n_val=10, n_test=10, split_seed=1)
    assert torch.equal(a.values, b.values) and (a.fields["source_index"] == b.fields["source_index"]).all()
    assert set(a.fields["source_index"]) != set(c.fields["source_index"])
    assert len(set(a.fields["source_index"])) == 50  # each image once: the splits are disjoint
    assert [int((a.fields["split"] == s).sum()) for s in SPLITS] == [30, 10, 10]
    assert float(a.values.min()) == -1.0 and float(a.values.max()) == 1.0
    from sklearn.datasets import load_digits
    images = load_digits().images[a.fields["source_index"]]
    np.testing.assert_allclose(a.values[:, :, 0].numpy(), (images / 16 * 2 - 1).reshape(50, 64), atol=1e-6)
    np.testing.assert_array_equal(a.fields["label"], load_digits().target[a.fields["source_index"]])
    unit = load_signals("digits-inr", n_train=30, n_val=10, n_test=10, target_range=[0, 1])
    assert float(unit.values.min()) == 0.0 and float(unit.values.max()) == 1.0 and unit.peak == 1.0
    with pytest.raises(ValueError, match="exceeds the 1797 available"):
        load_signals("digits-inr", n_train=1797, n_val=1, n_test=0)


def test_mnist_inr_from_idx_files(tmp_path, monkeypatch):
    root = make_fake_idx_dir(tmp_path, "mnist", n_test=40)
    monkeypatch.setitem(tasks.IDX_MD5, "mnist", {})  # random images: not the real files' checksums
    s = load_signals("mnist-inr", data_dir=str(root), n_train=20, n_val=5, n_test=5, target_range=[0, 1])
    assert s.signal_shape == (28, 28) and s.values.shape == (30, 784, 1)
    assert 0.0 <= float(s.values.min()) and float(s.values.max()) <= 1.0
    images, labels = tasks.load_idx_images("mnist", root)["test"]
    idx = s.fields["source_index"]
    np.testing.assert_allclose(s.values[:, :, 0].numpy(), images[idx].reshape(30, 784) / 255.0, atol=1e-6)
    np.testing.assert_array_equal(s.fields["label"], labels[idx])


def test_sine_values_are_the_stored_waves():
    s = load_signals("sine-inr", n_train=5, n_val=2, n_test=3, n_points=32, amplitude=0.5, frequency=[1.0, 3.0])
    x = s.coords[:, 0].double().numpy()
    f, ph = s.fields["frequency"], s.fields["phase"]
    assert ((1.0 <= f) & (f <= 3.0)).all() and len(set(f)) == 10
    np.testing.assert_allclose(s.values[:, :, 0].numpy(), 0.5 * np.sin(2 * np.pi * f[:, None] * x + ph[:, None]),
                               atol=1e-6)
    assert s.target_range == (-0.5, 0.5) and s.signal_shape == (32,)
    again = load_signals("sine-inr", n_train=5, n_val=2, n_test=3, n_points=32, amplitude=0.5, frequency=[1.0, 3.0])
    other = load_signals("sine-inr", n_train=5, n_val=2, n_test=3, n_points=32, amplitude=0.5, frequency=[1.0, 3.0],
                         split_seed=1)
    assert torch.equal(s.values, again.values) and not np.allclose(f, other.fields["frequency"])

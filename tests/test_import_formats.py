"""Readers of the field's public zoos: fixtures in each format's published layout, written the way
the original wrote them, read back into runs whose networks compute what the originals computed.

Each network check holds ``zoo.functional.population_forward`` on the imported weights to the
original's own computation written out here (Keras' valid-padding stride-2 convolutions in NHWC
for the Small CNN Zoo; DWSNets' and NFN's SIREN modules; ModelZoos' MLP module list).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from wsl.interchange import dwsnets_inr, model_zoos, nfn_siren, small_cnn_zoo
from wsl.weights.matching import match_state_dict
from zoo.errors import InputError
from zoo.functional import population_forward
from zoo.signals import grid_coords

READERS = (small_cnn_zoo, dwsnets_inr, nfn_siren, model_zoos)


# ---------------------------------------------------------------- Small CNN Zoo

SMALL_LAYERS = [("sequential/conv2d", (3, 3, 1, 16)), ("sequential/conv2d_1", (3, 3, 16, 16)),
                ("sequential/conv2d_2", (3, 3, 16, 16)), ("sequential/dense", (16, 10))]
STEPS = [0, 1, 86]


def write_small_cnn_zoo(folder: Path, runs: dict[str, str], seed: int = 0, gz: bool = True) -> dict:
    """A dataset folder as published: per row, each layer's bias then its TF-layout kernel,
    flattened C-order; rows of the runs interleaved (the reader groups by modeldir)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    layout, start = [], 0
    for name, shape in SMALL_LAYERS:
        for var, shp in ((f"{name}/bias:0", (shape[-1],)), (f"{name}/kernel:0", shape)):
            n = int(np.prod(shp))
            layout.append((var, start, start + n, shp))
            start += n
    with (folder / "layout.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["varname", "start_idx", "end_idx", "shape"])
        for var, s, e, shp in layout:
            w.writerow([var, s, e, str(tuple(shp))])
    rows, meta, truth = [], [], {}
    for step in STEPS:  # step-major: a run's rows are not adjacent
        for r, (modeldir, act) in enumerate(runs.items()):
            vars_ = {var: rng.normal(0, 0.5, shp).astype(np.float32) for var, _, _, shp in layout}
            flat = np.zeros(start, np.float32)
            for var, s, e, _ in layout:
                flat[s:e] = vars_[var].reshape(-1)
            rows.append(flat)
            truth[(modeldir, step)] = vars_
            meta.append({"config.activation": act, "config.b_init": "zero", "config.dataset": "mnist",
                         "config.dnn_architecture": "cnn", "config.dropout": 0.0, "config.epochs": 86,
                         "config.epochs_between_checkpoints": 20, "config.init_std": 0.05, "config.l2reg": 1e-4,
                         "config.learning_rate": 0.01 * (r + 1), "config.num_layers": 3, "config.num_units": 16,
                         "config.optimizer": "adam", "config.random_seed": 42, "config.train_fraction": 1.0,
                         "config.w_init": "he_normal", "modeldir": modeldir, "step": step,
                         "test_accuracy": 0.1 + 0.01 * step, "test_loss": 2.0 - 0.01 * step,
                         "train_accuracy": 0.2 + 0.005 * step, "train_loss": 1.9})
    np.save(folder / "weights.npy", np.stack(rows))
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(meta[0]))
    w.writeheader()
    w.writerows(meta)
    if gz:
        (folder / "metrics.csv.gz").write_bytes(gzip.compress(text.getvalue().encode()))
    else:
        (folder / "metrics.csv").write_text(text.getvalue())
    return truth


def keras_cnn(vars_: dict, x_nhwc: np.ndarray, act: str) -> np.ndarray:
    """The Keras model of train_network.py's build_cnn, in numpy: Conv2D(16, 3, strides=2,
    padding='valid', activation) x3, GlobalAveragePooling2D, Dense(10)."""
    f = {"relu": lambda h: np.maximum(h, 0), "tanh": np.tanh}[act]
    h = x_nhwc.astype(np.float64)
    for name, _ in SMALL_LAYERS[:3]:
        k, b = vars_[f"{name}/kernel:0"].astype(np.float64), vars_[f"{name}/bias:0"]
        kh, kw = k.shape[:2]
        H = (h.shape[1] - kh) // 2 + 1
        W = (h.shape[2] - kw) // 2 + 1
        out = np.zeros((h.shape[0], H, W, k.shape[3]))
        for di in range(kh):
            for dj in range(kw):
                patch = h[:, di:di + 2 * H - 1:2, dj:dj + 2 * W - 1:2, :]  # [B, H, W, cin]
                out += patch @ k[di, dj]
        h = f(out + b)
    h = h.mean(axis=(1, 2))
    return h @ vars_["sequential/dense/kernel:0"] + vars_["sequential/dense/bias:0"]


def test_small_cnn_zoo_runs_metrics_hparams(tmp_path):
    runs = {"run_a": "relu", "run_b": "tanh", "run_c": "relu"}
    write_small_cnn_zoo(tmp_path / "mnist", runs)
    assert small_cnn_zoo.detect([tmp_path / "mnist"])
    src = small_cnn_zoo.open([tmp_path / "mnist"])
    assert src.count == 3 and src.spec.activation is None  # relu and tanh: per run
    assert src.spec.input_shape == (1, 28, 28) and [l.kind for l in src.spec.layers] == ["conv2d"] * 3 + ["linear"]
    assert all(l.stride == 2 and l.padding == 0 for l in src.spec.layers[:3])
    assert src.spec.num_params == 4970
    assert src.config["checkpoints"] == STEPS and "learning_rate" in src.config["hparams"]
    imported = list(src.runs)
    assert [r.run for r in imported] == list(runs)
    for r, (name, act) in zip(imported, runs.items()):
        assert [c.epoch for c in r.checkpoints] == STEPS
        assert r.activation == act and r.hparams["activation"] == act and r.seed == 42
        assert r.hparams["optimizer"] == "adam" and isinstance(r.hparams["num_units"], int)
        assert r.checkpoints[-1].metrics == pytest.approx({"test_acc": 0.96, "test_loss": 1.14,
                                                           "train_acc": 0.63, "train_loss": 1.9})
    assert imported[1].hparams["learning_rate"] == pytest.approx(0.02)
    assert {p.name for p in src.files} == {"weights.npy", "layout.csv", "metrics.csv.gz"}


def test_small_cnn_zoo_computes_what_keras_computed(tmp_path):
    runs = {"run_a": "relu", "run_b": "tanh"}
    truth = write_small_cnn_zoo(tmp_path / "mnist", runs, gz=False)
    src = small_cnn_zoo.open([tmp_path / "mnist"])
    x = np.random.default_rng(1).uniform(-1, 1, (5, 28, 28, 1))  # NHWC, the training range
    for r in src.runs:
        for c in r.checkpoints:
            params, _ = match_state_dict(src.spec, c.tensors)
            ours = population_forward(src.spec, [p[None].double() for p in params],
                                      torch.from_numpy(x.transpose(0, 3, 1, 2)), activation=r.activation)[0]
            expected = keras_cnn(truth[(r.run, c.epoch)], x, r.activation)
            np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_small_cnn_zoo_nfn_split(tmp_path):
    runs = {f"run_{i}": "relu" for i in range(5)}
    write_small_cnn_zoo(tmp_path / "mnist", runs)
    order = list(np.random.default_rng(3).permutation(5 * len(STEPS)))
    (tmp_path / "idcs.csv").write_text("\n".join(map(str, order)) + "\n")
    src = small_cnn_zoo.open([tmp_path / "mnist"], split_index=tmp_path / "idcs.csv")
    by_run = {r.run: r.split for r in src.runs}
    final_rows = [i for i in order if i >= 5 * (len(STEPS) - 1)]  # step-major rows: the last 5 are step 86
    final_runs = [f"run_{i - 5 * (len(STEPS) - 1)}" for i in final_rows]
    assert [by_run[r] for r in final_runs[2:]] == ["test"] * 3  # second half (from int(0.5 * 5) = 2)
    assert sorted(by_run[r] for r in final_runs[:2]) == ["train", "val"]  # int(0.8 * 2) = 1 train
    trainval = [0, 1]
    random.Random(0).shuffle(trainval)
    assert by_run[final_runs[trainval[0]]] == "train"


def test_small_cnn_zoo_refuses_bad_input(tmp_path):
    write_small_cnn_zoo(tmp_path / "mnist", {"a": "relu"})
    rows = (tmp_path / "mnist" / "layout.csv").read_text().replace("(3, 3, 1, 16)", "__import__('os')")
    (tmp_path / "mnist" / "layout.csv").write_text(rows)
    with pytest.raises(InputError, match="shape"):
        small_cnn_zoo.open([tmp_path / "mnist"])
    write_small_cnn_zoo(tmp_path / "pickled", {"a": "relu"})
    np.save(tmp_path / "pickled" / "weights.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="refused"):
        small_cnn_zoo.open([tmp_path / "pickled"])


# ---------------------------------------------------------------- SIRENs

class DWSNetsSine(nn.Module):
    """DWSNets' ``Siren`` layer (nn/inr.py): its own weight and bias, sin(w0 (Wx + b))."""

    def __init__(self, d_in, d_out, w0=30.0):
        super().__init__()
        self.w0 = w0
        self.weight = nn.Parameter(torch.empty(d_out, d_in).uniform_(-(6 / d_in) ** 0.5 / w0, (6 / d_in) ** 0.5 / w0))
        self.bias = nn.Parameter(torch.empty(d_out).uniform_(-0.5, 0.5))

    def forward(self, x):
        return torch.sin(self.w0 * nn.functional.linear(x, self.weight, self.bias))


class DWSNetsINR(nn.Module):
    """DWSNets' ``INR(in_dim=2, n_layers=3, up_scale=16)``: state_dict keys seq.0.weight ... seq.2.bias."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(DWSNetsSine(2, 32), DWSNetsSine(32, 32), nn.Linear(32, 1))

    def forward(self, x):
        return self.seq(x) + 0.5


def dwsnets_coordinates(shape):
    """DWSNets' make_coordinates: np.meshgrid (xy) of linspace(-1, 1), flattened: (x = column, y = row)."""
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]))
    return torch.from_numpy(np.stack([x.flatten(), y.flatten()]).T).float()


def write_dwsnets_mnist(root: Path, labels_by_split: dict[str, list[int]]) -> dict[str, DWSNetsINR]:
    """mnist-inrs/mnist_png_<training|testing>_<label>_<idx>/checkpoints/model_final.pth and a
    splits JSON of absolute paths under another machine's working directory."""
    torch.manual_seed(0)
    split = {}
    nets = {}
    idx = 0
    for s, labels in labels_by_split.items():
        split[s] = {"path": [], "label": []}
        for label in labels:
            kind = "testing" if s == "test" else "training"
            folder = root / "mnist-inrs" / f"mnist_png_{kind}_{label}_{idx}" / "checkpoints"
            folder.mkdir(parents=True)
            net = DWSNetsINR()
            torch.save(net.state_dict(), folder / "model_final.pth")
            recorded = f"/home/someone/dwsnets/dataset/mnist-inrs/mnist_png_{kind}_{label}_{idx}/checkpoints/model_final.pth"
            split[s]["path"].append(recorded)
            split[s]["label"].append(str(label))
            nets[recorded] = net
            idx += 1
    (root / "mnist_splits.json").write_text(json.dumps(split))
    return nets


def test_dwsnets_mnist_runs_labels_splits_and_forward(tmp_path):
    nets = write_dwsnets_mnist(tmp_path, {"train": [3, 1], "val": [7], "test": [0, 9]})
    assert dwsnets_inr.detect([tmp_path / "mnist_splits.json"]) and dwsnets_inr.detect([tmp_path])
    src = dwsnets_inr.open([tmp_path / "mnist_splits.json"])
    assert src.count == 5 and src.spec.architecture == "siren" and src.spec.options["omega_0"] == 30.0
    task = src.config["task"]
    assert task["target_range"] == [-0.5, 0.5] and task["signal_shape"] == [28, 28] and task["output_dim"] == 1
    assert torch.equal(src.signals["coords"], grid_coords((28, 28))) and "values" not in src.signals
    runs = list(src.runs)
    assert [(r.split, r.signals["label"]) for r in runs] == [("train", 3), ("train", 1), ("val", 7), ("test", 0), ("test", 9)]
    assert [r.signals["split"] for r in runs] == [r.split for r in runs]
    assert [r.signals["source_index"] for r in runs] == [0, 1, 2, 60_003, 60_004]  # test images after the 60,000
    ours_coords = grid_coords((28, 28)).double()
    theirs_coords = dwsnets_coordinates((28, 28))
    for r in runs:
        (ckpt,) = r.checkpoints
        assert list(ckpt.tensors) == ["seq.0.weight", "seq.0.bias", "seq.1.weight", "seq.1.bias", "seq.2.weight", "seq.2.bias"]
        params, _ = match_state_dict(src.spec, ckpt.tensors)
        ours = population_forward(src.spec, [p[None].double() for p in params], ours_coords)[0]
        with torch.no_grad():
            image = nets[r.run](theirs_coords).view(28, 28)  # make_coordinates' image: row i, column j
        assert image.std() > 0.05  # a non-trivial image
        np.testing.assert_allclose(ours.view(28, 28).numpy() + 0.5, image.numpy(), atol=2e-5)


def test_dwsnets_fmnist_labels_in_files(tmp_path):
    root = tmp_path / "fmnist_inrs"
    split = {"train": [], "val": [], "test": []}
    for i, (s, label) in enumerate([("train", 4), ("train", 2), ("val", 5), ("test", 8)]):
        folder = "train" if s != "test" else "test"
        (root / folder).mkdir(parents=True, exist_ok=True)
        sd = DWSNetsINR().state_dict() | {"label": label}
        torch.save(sd, root / folder / f"model_{i}.pth")
        first = sd["seq.0.weight"] if i == 0 else first
        split[s].append(f"fmnist_inrs/{folder}/model_{i}.pth")
    (root / "splits.json").write_text(json.dumps(split))
    assert dwsnets_inr.detect([root])
    src = dwsnets_inr.open([root])
    assert src.config["task"]["name"] == "fashion-mnist-inr"
    runs = list(src.runs)
    assert [(r.split, r.signals["label"]) for r in runs] == [("train", 4), ("train", 2), ("val", 5), ("test", 8)]
    assert "label" not in runs[0].checkpoints[0].tensors
    assert torch.equal(runs[0].checkpoints[0].tensors["seq.0.weight"], first[:, [1, 0]])  # onto our row-first grid


def test_dwsnets_refuses_a_pickled_module(tmp_path):
    write_dwsnets_mnist(tmp_path, {"train": [3], "test": [1]})
    target = next((tmp_path / "mnist-inrs").glob("*training*")) / "checkpoints" / "model_final.pth"
    torch.save(DWSNetsINR(), target)  # the whole module: unpickling it would run code
    src = dwsnets_inr.open([tmp_path])
    with pytest.raises(InputError, match=r"refused: not a tensors-only file.*pickled module"):
        [dict(c.tensors) for r in src.runs for c in r.checkpoints]


def test_dwsnets_missing_file_named(tmp_path):
    write_dwsnets_mnist(tmp_path, {"train": [3]})
    (next((tmp_path / "mnist-inrs").glob("*")) / "checkpoints" / "model_final.pth").unlink()
    with pytest.raises(InputError, match="model_final.pth.*not found"):
        dwsnets_inr.open([tmp_path / "mnist_splits.json"])


class NFNSineLayer(nn.Module):
    """nfn's SineLayer (experiments/siren_utils.py): sin(omega_0 * linear(x))."""

    def __init__(self, d_in, d_out, is_first=False, omega_0=30.0):
        super().__init__()
        self.omega_0 = omega_0
        self.linear = nn.Linear(d_in, d_out)
        bound = 1 / d_in if is_first else (6 / d_in) ** 0.5 / omega_0
        nn.init.uniform_(self.linear.weight, -bound, bound)

    def forward(self, x):
        return torch.sin(self.omega_0 * self.linear(x))


class NFNSiren(nn.Module):
    """nfn's Siren with SIREN_kwargs (2 -> 32 -> 32 -> out, outermost_linear): keys net.0.linear.*, net.2.*."""

    def __init__(self, out=1):
        super().__init__()
        self.net = nn.Sequential(NFNSineLayer(2, 32, is_first=True), NFNSineLayer(32, 32), nn.Linear(32, out))

    def forward(self, coords):
        return self.net(coords), coords


def nfn_mgrid(side):
    """nfn's get_mgrid: torch.meshgrid (ij) of linspace(-1, 1), the row first."""
    t = torch.linspace(-1, 1, steps=side)
    return torch.stack(torch.meshgrid(t, t, indexing="ij"), dim=-1).reshape(-1, 2)


def write_nfn(root: Path, labels: list[int], out: int = 1) -> dict[int, NFNSiren]:
    torch.manual_seed(1)
    nets = {}
    for idx, label in enumerate(labels):
        folder = root / f"randinit_smaller_{label}s"
        folder.mkdir(parents=True, exist_ok=True)
        nets[idx] = NFNSiren(out)
        torch.save(nets[idx].state_dict(), folder / f"net{idx}.pth")
    aug = root / f"randinit_smaller_aug0_{labels[0]}s"  # augmented copies: not the base dataset
    aug.mkdir()
    torch.save(NFNSiren(out).state_dict(), aug / "net0.pth")
    return nets


def test_nfn_siren_runs_labels_splits_and_forward(tmp_path):
    root = tmp_path / "siren_mnist_wts"
    labels = [5, 0, 4, 1, 9, 2]
    nets = write_nfn(root, labels)
    assert nfn_siren.detect([root])
    src = nfn_siren.open([root], split_points=(3, 5))
    assert src.count == 6 and src.config["task"]["target_range"] == [-1.0, 1.0]
    runs = list(src.runs)
    assert [r.signals["label"] for r in runs] == labels
    assert [r.split for r in runs] == ["train"] * 3 + ["val"] * 2 + ["test"]
    assert [r.signals["source_index"] for r in runs] == list(range(6))
    coords = grid_coords((28, 28))
    assert torch.equal(coords, nfn_mgrid(28)) and torch.equal(src.signals["coords"], coords)
    for r in runs:
        params, _ = match_state_dict(src.spec, r.checkpoints[0].tensors)
        ours = population_forward(src.spec, [p[None].double() for p in params], coords.double())[0]
        with torch.no_grad():
            theirs = nets[r.signals["source_index"]](coords)[0]
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-5)


def test_nfn_siren_cifar_default_split_points(tmp_path):
    root = tmp_path / "siren_cifar_wts"
    write_nfn(root, [3, 8], out=3)
    src = nfn_siren.open([root / "randinit_smaller_3s"])  # a label folder: its parent is the root
    assert src.spec.output_dim == 3 and src.config["task"]["signal_shape"] == [32, 32]
    assert [r.split for r in src.runs] == ["train", "train"]


# ---------------------------------------------------------------- Schürholt's model zoos

class ZooMLP(nn.Module):
    """def_net.py's MLP: module_list of Linear, nonlinearity, Dropout, ..., Linear."""

    def __init__(self, i_dim=6, h_dim=(5, 4), o_dim=3, dropout=0.1):
        super().__init__()
        dims = [i_dim, *h_dim]
        self.module_list = nn.ModuleList()
        for a, b in zip(dims, dims[1:]):
            self.module_list.extend([nn.Linear(a, b), nn.LeakyReLU(), nn.Dropout(dropout)])
        self.module_list.append(nn.Linear(dims[-1], o_dim))

    def forward(self, x):
        for m in self.module_list:
            x = m(x)
        return x


def write_model_zoo(root: Path, first_reported: int = 1) -> dict[tuple[str, int], ZooMLP]:
    """Two trials: one reports epochs ``first_reported``..2 as training iterations, one 0..2
    without ``training_iteration`` (read from epoch 0: a line per stored epoch), with 6-digit folders."""
    torch.manual_seed(2)
    nets = {}
    for t, (trial, digits, lines) in enumerate([("NN_tune_trainable_a_00000_0_seed=1", False,
                                                 list(range(first_reported, 3))),
                                                ("NN_tune_trainable_a_00001_1_seed=2", True, [0, 1, 2])]):
        folder = root / trial
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({
            "model::type": "MLP", "model::i_dim": 6, "model::h_dim": [5, 4], "model::o_dim": 3,
            "model::nlin": "leakyrelu", "model::dropout": 0.1, "model::init_type": "kaiming_uniform",
            "optim::optimizer": "adam", "optim::lr": 0.001 * (t + 1), "optim::wd": 0.0, "seed": t + 1,
            "training::batchsize": 10}))
        for e in range(3):
            net = ZooMLP()
            d = folder / (f"checkpoint_{e:06d}" if digits else f"checkpoint_{e}")
            d.mkdir()
            torch.save(net.state_dict(), d / "checkpoints")
            nets[(trial, e)] = net
        (folder / "result.json").write_text("".join(
            json.dumps({"train_loss": 1.0 / (e + 1), "train_acc": 0.3 + 0.1 * e, "test_loss": 1.1 / (e + 1),
                        "test_acc": 0.25 + 0.1 * e, "time_this_iter_s": 0.5}
                       | ({} if digits else {"training_iteration": e})) + "\n"
            for e in lines))
    (root / "config.json").write_text("{}")
    return nets


def test_model_zoos_runs_epochs_metrics_and_forward(tmp_path):
    nets = write_model_zoo(tmp_path / "zoo")
    assert model_zoos.detect([tmp_path / "zoo"])
    src = model_zoos.open([tmp_path / "zoo"])
    assert src.count == 2 and src.spec.activation == "leaky_relu" and src.spec.input_shape == (6,)
    assert [l.out_features for l in src.spec.layers] == [5, 4, 3]
    runs = list(src.runs)
    a, b = runs
    assert [c.epoch for c in a.checkpoints] == [0, 1, 2] == [c.epoch for c in b.checkpoints]
    assert a.checkpoints[0].metrics == {}  # epoch 0 was not reported (offset 1)
    assert a.checkpoints[1].metrics == pytest.approx({"train_loss": 0.5, "train_acc": 0.4, "test_loss": 0.55, "test_acc": 0.35})
    assert b.checkpoints[0].metrics["test_acc"] == pytest.approx(0.25)  # offset 0: a line for epoch 0
    assert b.checkpoints[2].metrics["test_acc"] == pytest.approx(0.45)
    assert a.hparams["optim::lr"] == 0.001 and "model::h_dim" not in a.hparams and a.seed == 1 and b.seed == 2
    assert {r.split for r in runs} <= {"train", "val", "test"}
    x = torch.randn(7, 6, dtype=torch.float64)
    for r in runs:
        for c in r.checkpoints:
            params, mapping = match_state_dict(src.spec, c.tensors)
            assert list(mapping)[::2] == ["module_list.0.weight", "module_list.3.weight", "module_list.6.weight"]
            ours = population_forward(src.spec, [p[None].double() for p in params], x)[0]
            with torch.no_grad():
                theirs = nets[(r.run, c.epoch)].double().eval()(x)
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-12)


def test_model_zoos_untrained_report_and_forced_offset(tmp_path):
    path = tmp_path / "result.json"  # def_NN_experiment.py: iteration 0 tests the untrained network only
    path.write_text("".join(json.dumps({"train_loss": -999, "train_acc": -999, "test_loss": 2.3 - e,
                                        "test_acc": 0.1 * (e + 1), "training_iteration": e}) + "\n" for e in range(3)))
    results = model_zoos.read_results(path, [0, 1, 2], None)
    assert results[0] == pytest.approx({"test_loss": 2.3, "test_acc": 0.1}) and set(results) == {0, 1, 2}
    assert set(model_zoos.read_results(path, [0, 1, 2], 1)) == {1, 2, 3}


def test_model_zoos_split_is_seeded_70_15_15(tmp_path):
    trials = [tmp_path / f"t{i:02d}" for i in range(20)]
    split = model_zoos.splits(trials)
    assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [14, 3, 3]
    order = list(trials)
    random.Random(42).shuffle(order)
    assert [split[t] for t in order] == ["train"] * 14 + ["val"] * 3 + ["test"] * 3


def test_model_zoos_refuses_cnn_and_pickles(tmp_path):
    write_model_zoo(tmp_path / "zoo")
    trial = next(p for p in sorted((tmp_path / "zoo").iterdir()) if p.is_dir())
    params = json.loads((trial / "params.json").read_text())
    (trial / "params.json").write_text(json.dumps(params | {"model::type": "CNN"}))
    with pytest.raises(InputError, match="model::type 'CNN'.*max pooling"):
        model_zoos.open([tmp_path / "zoo"])
    (trial / "params.json").write_text(json.dumps(params))
    torch.save(ZooMLP(), trial / "checkpoint_1" / "checkpoints")
    src = model_zoos.open([tmp_path / "zoo"])
    with pytest.raises(InputError, match="refused"):
        [dict(c.tensors) for r in src.runs for c in r.checkpoints]


# ---------------------------------------------------------------- detection

def test_each_fixture_is_detected_by_its_reader_only(tmp_path):
    write_small_cnn_zoo(tmp_path / "cnn" / "mnist", {"a": "relu"})
    write_dwsnets_mnist(tmp_path / "dws", {"train": [1]})
    write_nfn(tmp_path / "nfn" / "siren_mnist_wts", [1, 2])
    write_model_zoo(tmp_path / "mz" / "zoo")
    fixtures = {small_cnn_zoo: tmp_path / "cnn" / "mnist", dwsnets_inr: tmp_path / "dws",
                nfn_siren: tmp_path / "nfn" / "siren_mnist_wts", model_zoos: tmp_path / "mz" / "zoo"}
    for owner, path in fixtures.items():
        assert [m.NAME for m in READERS if m.detect([path])] == [owner.NAME], path
    (tmp_path / "empty").mkdir()
    assert not any(m.detect([tmp_path / "empty"]) for m in READERS)
    from wsl.interchange.formats import detect_format

    for owner, path in fixtures.items():  # the registry's order: the export layout first, the folder last
        assert detect_format([path]) == owner.NAME


# ---------------------------------------------------------------- end to end: into a zoo file

def write_and_open(source, out, workers=1):
    from wsl.interchange.writer import write_imported_zoo
    from zoo.store import Zoo
    from zoo.verify import verify

    write_imported_zoo(source, out, progress=False, log=lambda s: None, workers=workers)
    assert verify(out) == []
    return Zoo(out)


def test_small_cnn_zoo_into_a_zoo_file(tmp_path):
    runs = {"run_a": "relu", "run_b": "tanh"}
    truth = write_small_cnn_zoo(tmp_path / "mnist", runs)
    with write_and_open(small_cnn_zoo.open([tmp_path / "mnist"]), tmp_path / "z.h5") as z:
        assert len(z) == 2 and z.checkpoint_epochs == STEPS and z.done.all()
        assert list(z.hparam("activation")) == ["relu", "tanh"] and "learning_rate" in z.hparam_names
        assert z.column("test_acc", -1) == pytest.approx([0.96, 0.96])
        x = np.random.default_rng(2).uniform(-1, 1, (3, 28, 28, 1))
        params = [p.double() for p in z.params(1, 1)]
        ours = population_forward(z.spec, [p[None] for p in params], torch.from_numpy(x.transpose(0, 3, 1, 2)),
                                  activation="tanh")[0]
        np.testing.assert_allclose(ours.numpy(), keras_cnn(truth[("run_b", 1)], x, "tanh"), rtol=1e-5, atol=1e-6)


def test_dwsnets_into_an_inr_zoo_file(tmp_path):
    write_dwsnets_mnist(tmp_path, {"train": [3, 1], "val": [7], "test": [0]})
    # two worker processes: each takes the files to read (and the column swap) by pickle
    with write_and_open(dwsnets_inr.open([tmp_path]), tmp_path / "z.h5", workers=2) as z:
        assert z.is_inr and len(z) == 4 and z.spec.options["omega_0"] == 30.0
        assert list(z.signal("label")) == [3, 1, 7, 0] and list(z.signal("split")) == ["train", "train", "val", "test"]
        assert z.task["target_range"] == [-0.5, 0.5] and z.imported["format"] == "dwsnets-inr"
        assert len(z.imported["sha256"]) == 5  # the JSON and the four INR files, hashed as read


def test_nfn_siren_into_an_inr_zoo_file(tmp_path):
    write_nfn(tmp_path / "siren_fashion_wts", [2, 9, 4])
    with write_and_open(nfn_siren.open([tmp_path / "siren_fashion_wts"], split_points=(1, 2)), tmp_path / "z.h5") as z:
        assert z.task["name"] == "fashion-mnist-inr" and list(z.signal("label")) == [2, 9, 4]
        assert list(z.signal("split")) == ["train", "val", "test"] and list(z.signal("source_index")) == [0, 1, 2]


def test_model_zoos_into_a_zoo_file(tmp_path):
    # every stored epoch reported: verify refuses a done model with a NaN metric (an unreported epoch 0)
    write_model_zoo(tmp_path / "zoo", first_reported=0)
    with write_and_open(model_zoos.open([tmp_path / "zoo"]), tmp_path / "z.h5") as z:
        assert len(z) == 2 and z.checkpoint_epochs == [0, 1, 2] and z.spec.activation == "leaky_relu"
        assert z.column("test_acc", 0) == pytest.approx([0.25, 0.25])
        assert sorted(z.hparam("seed")) == [1, 2] and set(z.hparam("split")) <= {"train", "val", "test"}


def test_import_zoo_detects_and_writes(tmp_path):
    """The command's path: detection, the CLI's unset options dropped, the zoo written and verified."""
    from wsl.interchange.formats import import_zoo
    from zoo.store import Zoo
    from zoo.verify import verify

    write_nfn(tmp_path / "siren_mnist_wts", [3, 1])
    out = import_zoo([tmp_path / "siren_mnist_wts"], tmp_path / "z.h5", pattern=None, table=None, progress=False)
    assert verify(out) == []
    with Zoo(out) as z:
        assert z.imported["format"] == "nfn-siren" and list(z.signal("label")) == [3, 1]

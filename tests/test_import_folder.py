"""wsl zoo import of a folder of anyone's checkpoints, and of a zoo's export: what was saved comes back."""
import importlib.util
import json
import re

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from wsl.cli import main
from wsl.interchange.formats import import_zoo
from wsl.interchange.records import ImportedCheckpoint, ImportedRun, ImportSource, StateDictFile
from wsl.interchange.writer import metric_name, staging_dir, write_imported_zoo
from zoo.architectures import TorchNet, build_spec
from zoo.store import Zoo, ZooFileError
from zoo.verify import verify

SPEC = build_spec("mlp", (4,), 3, hidden=[6], activation="relu")


class Custom(nn.Module):
    """A user's own module: names without the weight space's, without numbers."""

    def __init__(self):
        super().__init__()
        self.fc_in = nn.Linear(4, 6)
        self.fc_out = nn.Linear(6, 3)


def _net(style: str, seed: int, hidden: int = 6) -> tuple[dict, list[torch.Tensor]]:
    """A state_dict in a module's own names, and its tensors in the spec's order."""
    torch.manual_seed(seed)
    if style == "sequential":
        m = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))
    elif style == "torchnet":
        m = TorchNet(SPEC)
    else:
        m = Custom()
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    return sd, list(sd.values())


def _folder_of_four(root):
    """One run per file in four formats; returns run name -> expected tensors."""
    root.mkdir()
    expected = {}
    sd, expected["seq"] = _net("sequential", 0)
    torch.save(sd, root / "seq.pt")
    sd, expected["tn"] = _net("torchnet", 1)
    save_file(sd, str(root / "tn.safetensors"))
    sd, expected["custom"] = _net("custom", 2)
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "global_step": 30,
                "pytorch-lightning_version": "2.4.0"}, root / "custom.ckpt")
    sd, expected["hf"] = _net("sequential", 3)
    (root / "hf").mkdir()
    save_file({f"encoder.{k}": v for k, v in sd.items()}, str(root / "hf" / "model.safetensors"))
    (root / "hf" / "config.json").write_text(json.dumps({"model_type": "mlp"}))
    return expected


def _weights(z: Zoo, row: int, position: int = -1) -> list[torch.Tensor]:
    return z.params(row, position)


def test_folder_of_files_imports_each_format_with_its_table(tmp_path):
    expected = _folder_of_four(tmp_path / "ck")
    (tmp_path / "t.csv").write_text("file,test_accuracy,lr,optimizer\nseq.pt,0.5,0.1,sgd\ntn.safetensors,0.25,0.2,adam\n"
                                    "custom.ckpt,0.75,0.3,sgd\nhf,0.125,0.4,adam\n")
    out = import_zoo([tmp_path / "ck"], tmp_path / "z.h5", table=tmp_path / "t.csv", activation="tanh", progress=False)
    with Zoo(out) as z:
        assert z.spec.architecture == "mlp" and z.spec.activation == "tanh" and z.done.all()
        assert z.metric_names == ["test_acc"] and z.hparam_names == ["lr", "optimizer"]
        names = ["custom", "hf", "seq", "tn"]  # runs in name order
        for row, name in enumerate(names):
            for got, want in zip(_weights(z, row), expected[name]):
                assert torch.equal(got, want), name
        assert z.metric("test_acc")[:, -1].tolist() == [0.75, 0.125, 0.5, 0.25]
        assert z.hparam("lr").tolist() == [0.3, 0.4, 0.1, 0.2]
        assert z.hparam("optimizer").tolist() == ["sgd", "adam", "sgd", "adam"]
        prov = z.imported
        assert prov["format"] == "folder" and prov["files"] == 5 and len(prov["sha256"]) == 5
        assert z.config_hash.startswith("imported-")


def test_run_folders_with_epochs_from_names_lightning_files_and_a_missing_epoch(tmp_path):
    root = tmp_path / "runs"
    want = {}
    (root / "a" / "checkpoints").mkdir(parents=True)
    for e in (0, 5):
        sd, want["a", e] = _net("sequential", 10 + e)
        torch.save(sd, root / "a" / "checkpoints" / f"epoch={e}-step={10 * e}.ckpt")
    torch.save(sd, root / "a" / "checkpoints" / "last.ckpt")  # a copy: skipped
    (root / "a" / "hparams.yaml").write_text("lr: 0.01\noptimizer: {name: adam}\n")
    (root / "a" / "metrics.csv").write_text("epoch,step,train_loss,val_acc\n0,1,2.0,\n0,1,,0.3\n5,9,1.0,\n5,9,,0.6\n")
    (root / "b").mkdir()
    for e in (0, 5):
        sd, want["b", e] = _net("torchnet", 20 + e)
        save_file(sd, str(root / "b" / f"checkpoint_{e:06d}.safetensors"))
    (root / "c").mkdir()
    sd, want["c", 0] = _net("custom", 30)
    torch.save(sd, root / "c" / "step_0.pt")
    out = import_zoo([root], tmp_path / "z.h5", activation="relu", progress=False)
    with Zoo(out) as z:
        assert z.checkpoint_epochs == [0, 5] and z.done.all()
        for row, run in enumerate("abc"):
            for c, e in enumerate((0, 5)):
                got = _weights(z, row, c)
                if (run, e) in want:
                    assert all(torch.equal(g, w) for g, w in zip(got, want[run, e]))
                else:  # c has no epoch 5: NaN there, as the store marks what was never written
                    assert all(torch.isnan(g).all() for g in got)
        assert z.metric("val_acc")[0].tolist() == pytest.approx([0.3, 0.6])
        assert z.metric("train_loss")[0].tolist() == [2.0, 1.0] and np.isnan(z.metric("val_acc")[1]).all()
        assert z.hparam("lr")[0] == 0.01 and z.hparam("optimizer.name")[0] == "adam"
    assert verify(out) == []  # what the source never recorded is NaN by design, not damage


def test_pattern_names_run_and_epoch(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for r in ("x", "y"):
        for e in (1, 3):
            torch.save(_net("sequential", e)[0], root / f"{r}_e{e}.pt")
    out = import_zoo([root], tmp_path / "z.h5", pattern="{run}_e{epoch}.pt", activation="relu", progress=False)
    with Zoo(out) as z:
        assert len(z) == 2 and z.checkpoint_epochs == [1, 3]
        assert torch.equal(z.params(1, 0)[0], _net("sequential", 1)[1][0])


def test_a_pickled_module_is_refused_and_nothing_is_left(tmp_path, capsys):
    root = tmp_path / "ck"
    _folder_of_four(root)
    torch.save(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), root / "whole.pt")
    assert main(["zoo", "import", str(root), "--out", str(tmp_path / "z.h5"), "--quiet", "--activation", "relu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "whole.pt: refused" in err[0] and "pickled module" in err[0]
    assert not (tmp_path / "z.h5").exists() and not staging_dir(tmp_path / "z.h5").exists()


def test_a_mixed_folder_skips_other_weight_spaces_and_strict_refuses(tmp_path, capsys):
    root = tmp_path / "ck"
    _folder_of_four(root)
    torch.save(_net("sequential", 5, hidden=7)[0], root / "wide.pt")
    out = import_zoo([root], tmp_path / "z.h5", activation="relu", progress=False)
    assert "skipped run wide" in capsys.readouterr().err
    with Zoo(out) as z:
        assert len(z) == 4
        assert z.imported["skipped_count"] == 1 and z.imported["skipped"][0]["run"] == "wide"
    rc = main(["zoo", "import", str(root), "--out", str(tmp_path / "s.h5"), "--strict", "--quiet", "--activation", "relu"])
    err = capsys.readouterr().err
    assert rc == 2 and "wide.pt" in err and "--strict" in err and not (tmp_path / "s.h5").exists()


class Interrupted(Exception):
    pass


class Untouchable(dict):
    """Tensors that must not be read (a run a resumed import already holds)."""

    def __iter__(self):
        raise AssertionError("a staged run was read again")

    keys = items = values = __iter__


def _source(root, runs, stop_after=None, staged=()):
    def gen():
        for k, f in enumerate(runs):
            if stop_after is not None and k == stop_after:
                raise Interrupted
            tensors = Untouchable() if f.stem in staged else StateDictFile(f)
            yield ImportedRun(run=f.stem, checkpoints=[ImportedCheckpoint(2, tensors, {"test_acc": k / 10})],
                              hparams={"k": k}, seed=k)
    return ImportSource(format="test", runs=gen(), count=len(runs), options={"sources": [str(root)]})


def _datasets(path) -> dict:
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        out["attrs"] = {k: str(v) for k, v in f.attrs.items()}
    return out


def test_a_killed_import_resumes_to_the_same_zoo(tmp_path):
    root = tmp_path / "ck"
    root.mkdir()
    for k in range(7):
        torch.save(_net("sequential", k)[0], root / f"r{k}.pt")
    runs = sorted(root.glob("*.pt"))
    whole = write_imported_zoo(_source(root, runs), tmp_path / "whole" / "z.h5", activation="relu", progress=False,
                               chunk_runs=2)
    out = tmp_path / "resumed" / "z.h5"  # the same name: the zoo is named after its file
    with pytest.raises(Interrupted):
        write_imported_zoo(_source(root, runs, stop_after=5), out, activation="relu", progress=False, chunk_runs=2)
    assert not out.exists() and staging_dir(out).exists()
    with pytest.raises(ZooFileError, match="other sources or options"):  # not mixed into another import
        write_imported_zoo(_source(root, runs), out, activation="tanh", progress=False, chunk_runs=2)
    staged = {r.stem for r in runs[:4]}  # two chunks of two runs were finished before the kill
    write_imported_zoo(_source(root, runs, staged=staged), out, activation="relu", progress=False, chunk_runs=2)
    assert not staging_dir(out).exists()
    a, b = _datasets(whole), _datasets(out)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k] if k == "attrs" else np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


def test_cli_import_returns_0_and_2_with_one_line_errors(tmp_path, capsys):
    _folder_of_four(tmp_path / "ck")
    assert main(["zoo", "import", str(tmp_path / "ck"), "--out", str(tmp_path / "z.h5"), "--quiet",
                 "--activation", "relu", "--workers", "2"]) == 0
    assert "imported zoo written to" in capsys.readouterr().out
    for argv, words in (([str(tmp_path / "ck"), "--out", str(tmp_path / "z.h5")], "exists already"),
                        ([str(tmp_path / "nothing"), "--out", str(tmp_path / "n.h5")], "not found"),
                        ([str(tmp_path / "ck"), "--out", str(tmp_path / "f.h5"), "--format", "nope"], "--format"),
                        ([str(tmp_path / "ck"), "--out", str(tmp_path / "a.h5"), "--architecture", "digits_mlp"],
                         "does not match")):
        assert main(["zoo", "import", *argv, "--quiet"]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("wsl: error")]
        assert len(err) == 1 and words in err[0], err


def test_metric_names_are_mapped_where_unambiguous():
    assert metric_name("test_accuracy") == "test_acc" and metric_name("val/acc") == "val_acc"
    assert metric_name("acc") == "test_acc" and metric_name("acc", ["acc", "val_acc"]) == "acc"
    assert metric_name("bleu") == "bleu"


def _tau(capsys, zoo, tmp, name) -> float:
    args = ["--data.zoos", f"[{zoo}]", "--data.target", "test_acc", "--model.encoder", "statnn",
            "--trainer.default_root_dir", str(tmp / name), "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "false", "--seed_everything", "0"]
    model = ["--model", "wsl.prediction.model.PropertyPredictor", "--data", "wsl.data.PropertyDataModule"]
    assert main(["fit", *model, *args, "--trainer.max_epochs", "2", "--model.lr", "0.003"]) == 0
    ckpt = sorted((tmp / name).rglob("best-*.ckpt"))[0]
    capsys.readouterr()
    assert main(["test", *model, *args, "--ckpt_path", str(ckpt)]) == 0
    return float(re.search(r"test/tau\s*│?\s*([-\d.]+)", capsys.readouterr().out).group(1))


@pytest.mark.skipif(importlib.util.find_spec("zoo.export") is None,
                    reason="zoo/export.py (wsl zoo export) is not written yet: no export to round-trip")
def test_export_then_import_gives_back_the_same_zoo(tmp_path, capsys):
    from zoo.config import parse_config
    from zoo.generate import generate

    cfg = parse_config({
        "name": "tiny", "seed": 0, "num_models": 40, "epochs": 2, "checkpoints": [0, 1, 2],
        "task": {"name": "digits", "n_train": 200, "n_val": 97},
        "architecture": {"name": "mlp", "hidden": [8, 8]},
        "hparams": {"lr": {"log_uniform": [0.001, 0.5]}, "optimizer": {"choice": ["sgd", "adam"]},
                    "activation": {"choice": ["relu", "tanh"]}},
        "training": {"chunk_size": 64}})
    original = generate(cfg, tmp_path / "tiny.h5", progress=False, log=lambda s: None)
    assert main(["zoo", "export", str(original), "--out", str(tmp_path / "exp"), "--checkpoint", "all",
                 "--status", "all", "--format", "pt"]) == 0
    assert main(["zoo", "import", str(tmp_path / "exp"), "--out", str(tmp_path / "back.h5"), "--quiet"]) == 0
    _assert_same_zoo(original, tmp_path / "back.h5")
    tau = _tau(capsys, original, tmp_path, "a")
    assert tau == _tau(capsys, tmp_path / "back.h5", tmp_path, "b") and -1 <= tau <= 1


def _assert_same_zoo(original, back):
    """Every weight, metric, hyperparameter, model record and signal bitwise, and what the zoo is."""
    with Zoo(original) as a, Zoo(back) as b:
        assert b.imported["format"] == "wsl-export"
        assert (a.config, a.config_hash, a.spec, a.checkpoint_epochs, a.metric_names, a.hparam_names, a.name,
                a.task, a.signal_names) == (b.config, b.config_hash, b.spec, b.checkpoint_epochs, b.metric_names,
                                            b.hparam_names, b.name, b.task, b.signal_names)
        for group in ("params", "metrics", "hparams", "models", "signals", "signals/fields"):
            if group not in a.file:
                assert group not in b.file
                continue
            for name, x in a.file[group].items():
                if isinstance(x, h5py.Dataset):
                    y = b.file[group][name]
                    assert x.dtype == y.dtype and x[()].tobytes() == y[()].tobytes(), f"{group}/{name}"


@pytest.mark.skipif(importlib.util.find_spec("zoo.export") is None,
                    reason="zoo/export.py (wsl zoo export) is not written yet: no export to round-trip")
def test_an_inr_zoo_round_trips_with_its_signals(tmp_path):
    from zoo.config import parse_config
    from zoo.generate import generate

    cfg = parse_config({
        "name": "inr_tiny", "seed": 2, "num_models": 8, "epochs": 4, "checkpoints": [0, 4],
        "task": {"name": "digits-inr", "n_train": 2, "n_val": 1, "n_test": 1, "inrs_per_signal": 2},
        "architecture": {"name": "siren", "hidden": [4, 4], "omega_0": 30},
        "hparams": {"lr": {"log_uniform": [0.001, 0.01]}, "optimizer": "adam"}, "training": {"chunk_size": 8}})
    original = generate(cfg, tmp_path / "inr.h5", progress=False, log=lambda s: None)
    assert main(["zoo", "export", str(original), "--out", str(tmp_path / "exp"), "--checkpoint", "all"]) == 0
    assert main(["zoo", "import", str(tmp_path / "exp"), "--out", str(tmp_path / "back.h5"), "--quiet"]) == 0
    _assert_same_zoo(original, tmp_path / "back.h5")


def test_architecture_overrides_the_inferred_weight_space_and_a_jsonl_table_keys_runs(tmp_path):
    root = tmp_path / "sirens"
    root.mkdir()
    want = []
    for k in range(2):
        torch.manual_seed(k)
        net = nn.Sequential(nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(8, 1))
        torch.save(net.state_dict(), root / f"img{k}.pth")
        want.append(list(net.state_dict().values()))
    (tmp_path / "siren.yaml").write_text("architecture: {name: siren, hidden: [8, 8], omega_0: 30}\n"
                                         "input_shape: [2]\noutput_dim: 1\n")
    (tmp_path / "t.jsonl").write_text('{"run": "img0", "label": 3, "psnr": 31.5}\n{"run": "img1", "label": 7}\n')
    out = import_zoo([root], tmp_path / "z.h5", architecture=tmp_path / "siren.yaml", table=tmp_path / "t.jsonl",
                     progress=False)
    with Zoo(out) as z:
        assert z.spec.architecture == "siren" and z.spec.activation == "sine"
        assert z.hparam("label").tolist() == [3, 7] and z.metric("psnr")[0, -1] == 31.5
        assert all(torch.equal(g, w) for g, w in zip(z.params(1), want[1]))
        assert z.imported["options"]["architecture"] == str(tmp_path / "siren.yaml")


def test_a_shipped_config_names_the_weight_space_task_and_config(tmp_path):
    root = tmp_path / "digits"
    root.mkdir()
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    save_file(net.state_dict(), str(root / "a.safetensors"))
    out = import_zoo([root], tmp_path / "z.h5", architecture="digits_mlp", activation="tanh", progress=False)
    with Zoo(out) as z:
        assert z.config["name"] == "digits_mlp" and z.task["name"] == "digits" and z.spec.activation == "tanh"
        assert z.config_hash.startswith("imported-")


def test_a_lightning_run_imports_with_its_hparams_and_logged_metrics(tmp_path):
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self, lr: float = 0.1, width: int = 6):
            super().__init__()
            self.save_hyperparameters()
            self.model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 3))

        def training_step(self, batch, _):
            loss = nn.functional.cross_entropy(self.model(batch[0]), batch[1])
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), self.hparams.lr)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
    module = Module()
    pl.Trainer(max_epochs=2, default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
               logger=pl.loggers.CSVLogger(tmp_path / "logs")).fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    out = import_zoo([tmp_path / "logs"], tmp_path / "z.h5", activation="relu", progress=False)
    with Zoo(out) as z:
        assert len(z) == 1 and z.checkpoint_epochs == [1]  # Lightning's epoch=1-step=4.ckpt, as named
        assert all(torch.equal(g, w) for g, w in zip(z.params(0), module.model.state_dict().values()))
        assert z.hparam("lr")[0] == 0.1 and z.hparam("width")[0] == 6
        assert np.isfinite(z.metric("train_loss")[0, 0])


def test_a_broken_format_module_costs_only_its_own_format(monkeypatch, capsys, tmp_path):
    import sys

    from wsl.interchange import formats

    formats._load.cache_clear()
    monkeypatch.setitem(sys.modules, "wsl.interchange.nfn_siren", None)  # import fails: as if broken
    monkeypatch.setattr(formats, "FORMAT_MODULES", formats.FORMAT_MODULES + ("wsl.interchange.not_written",))
    try:
        names = formats.available()
        assert "folder" in names and "wsl-export" in names and "nfn-siren" not in names
        err = capsys.readouterr().err
        assert "wsl.interchange.nfn_siren is not installed" in err and "not_written is not installed" in err
        _folder_of_four(tmp_path / "ck")
        assert formats.detect_format([tmp_path / "ck"]) == "folder"
    finally:
        formats._load.cache_clear()


def test_reader_options_from_the_command_line(tmp_path, capsys):
    """``--option KEY=VALUE`` reaches the format's reader; one it does not take is refused, naming it."""
    from wsl.cli.main import main

    folder = tmp_path / "runs"
    folder.mkdir()
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3)).state_dict(), folder / "a_3.pt")
    assert main(["zoo", "import", str(folder), "--out", str(tmp_path / "z.h5"), "--quiet",
                 "--option", "pattern={run}_{epoch}.pt", "--activation", "relu"]) == 0
    with Zoo(tmp_path / "z.h5") as z:
        assert list(z.checkpoint_epochs) == [3]  # read by the pattern given as an option
    capsys.readouterr()
    assert main(["zoo", "import", str(folder), "--out", str(tmp_path / "y.h5"), "--option", "split_points=[1, 2]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--split_points: not an option of format 'folder'" in err[0]
    assert main(["zoo", "import", str(folder), "--out", str(tmp_path / "x.h5"), "--option", "nokey"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err

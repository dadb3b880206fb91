"""``wsl zoo export`` (plain torch files and CSVs that parse back bitwise), ``wsl zoo subset`` (a zoo
of the runs that meet conditions) and ``select:`` by metrics in the DataModules."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import generate_zoo
from wsl.cli import main
from wsl.data import PropertyDataModule, WeightDataModule
from zoo.architectures import TorchNet
from zoo.export import export_zoo
from zoo.functional import population_forward
from zoo.store import STATUS_DIVERGED, Zoo
from zoo.subset import subset_zoo
from zoo.verify import verify

# 12 MLPs, two activations; lr 1e6 with SGD diverges (model 3): NaN in the files to carry.
ZOO = {"name": "export", "seed": 5, "num_models": 12, "epochs": 2, "checkpoints": [0, 1, 2],
       "task": {"name": "digits", "n_train": 200, "n_val": 97},
       "architecture": {"name": "mlp", "hidden": [6, 5]},
       "hparams": {"lr": {"grid": [0.05, 0.1, 0.2, 1e6]}, "optimizer": "sgd", "momentum": 0.9,
                   "activation": {"choice": ["relu", "tanh"]}, "init_scale": {"uniform": [0.5, 2.0]}},
       "training": {"chunk_size": 12}}
# 4 digit images x 1 SIREN each, 5 steps: an INR zoo with a recorded split and signal fields.
INR_ZOO = {"name": "export_inr", "seed": 2, "num_models": 4, "epochs": 5, "checkpoints": [0, 5],
           "task": {"name": "digits-inr", "n_train": 2, "n_val": 1, "n_test": 1, "inrs_per_signal": 1},
           "architecture": {"name": "siren", "hidden": [8, 8], "omega_0": 30},
           "hparams": {"lr": 0.001, "optimizer": "adam"}, "training": {"chunk_size": 4}}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors on shared cores (see conftest)."""


@pytest.fixture(scope="module")
def zoo_path(tmp_path_factory):
    path = generate_zoo(ZOO, tmp_path_factory.mktemp("export") / "zoo.h5")
    with Zoo(path) as z:
        assert (z.status == STATUS_DIVERGED).sum() == 1 and z.done.sum() == 11
    return path


@pytest.fixture(scope="module")
def inr_path(tmp_path_factory):
    return generate_zoo(INR_ZOO, tmp_path_factory.mktemp("export_inr") / "inr.h5")


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wsl: error: "), err
    return err[0]


# ----------------------------------------------------------------------------------------------
# export

@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_export_loads_into_torchnet_and_computes_the_population_forward(zoo_path, tmp_path, fmt):
    out = tmp_path / "exported"
    done = export_zoo(zoo_path, out, fmt=fmt, checkpoint="all")
    info = json.loads((out / "zoo.json").read_text())
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(0))
    with Zoo(zoo_path) as z:
        rows = z.select()
        assert done["runs"] == len(rows) == 11 and done["epochs"] == [0, 1, 2]
        assert info["format"] == "wsl-export" and info["version"] == 1 and info["spec"] == z.spec.to_json()
        assert info["config"] == z.config and info["config_hash"] == z.config_hash and info["task"] == z.task
        assert info["checkpoint_epochs"] == [0, 1, 2] and info["split"] == "all" and info["is_inr"] is False
        assert info["metric_names"] == z.metric_names and info["hparam_names"] == z.hparam_names
        assert info["generated"] is None and info["source"] == str(z.path)
        acts = z.hparam("activation")[rows].tolist()
        assert sorted(p.name for p in out.iterdir()) == sorted(
            ["zoo.json", "runs.csv", "metrics.csv", *(f"run_{i:06d}" for i in z.index[rows])])
        for c, epoch in enumerate([0, 1, 2]):
            stored = z.batch(rows, c)
            reference = population_forward(z.spec, [stored[p.name] for p in z.spec.params], x, activation=acts)
            for k, i in enumerate(z.index[rows]):
                file = out / f"run_{i:06d}" / f"epoch_{epoch}.{fmt}"
                sd = load_file(file) if fmt == "safetensors" else torch.load(file, weights_only=True)
                for name, t in sd.items():  # the stored weights, bit for bit
                    assert t.numpy().tobytes() == stored[name][k].numpy().tobytes(), (file, name)
                net = TorchNet(z.spec, activation=acts[k])
                net.load_state_dict(sd)  # strict: exactly TorchNet's names and shapes
                with torch.no_grad():
                    torch.testing.assert_close(net(x), reference[k], rtol=1e-5, atol=1e-5)


def test_runs_and_metrics_csvs_parse_back_to_the_stored_values(zoo_path, tmp_path):
    out = tmp_path / "all"
    export_zoo(zoo_path, out, checkpoint="all", status="all")  # diverged runs too: NaN metrics
    runs, metrics = read_csv(out / "runs.csv"), read_csv(out / "metrics.csv")
    with Zoo(zoo_path) as z:
        assert [r["run"] for r in runs] == [f"run_{i:06d}" for i in z.index]
        assert list(runs[0]) == ["run", "index", "split", "status", "seed", *z.hparam_names]
        assert [int(r["index"]) for r in runs] == z.index.tolist()
        assert [int(r["seed"]) for r in runs] == z.seed.tolist()
        assert [r["status"] for r in runs] == ["diverged" if s == STATUS_DIVERGED else "done" for s in z.status]
        assert {r["split"] for r in runs} == {""}  # the zoo records no split
        for h in z.hparam_names:
            stored = z.hparam(h)
            if stored.dtype.kind in "OUS":
                assert [r[h] for r in runs] == stored.tolist(), h
            else:
                parsed = np.asarray([float(r[h]) for r in runs]).astype(stored.dtype)
                assert parsed.tobytes() == stored.tobytes(), h
        assert [(r["run"], int(r["epoch"])) for r in metrics] == [
            (f"run_{i:06d}", e) for i in z.index for e in z.checkpoint_epochs]
        for m in z.metric_names:
            parsed = np.asarray([float(r[m]) for r in metrics], dtype=np.float32).reshape(len(z), -1)
            assert parsed.tobytes() == z.metric(m).tobytes(), m
        assert np.isnan(z.metric("test_loss")).any() and "nan" in {r["test_loss"] for r in metrics}


def test_an_inr_export_carries_its_signals_and_split(inr_path, tmp_path):
    out = tmp_path / "inr"
    export_zoo(inr_path, out, split="train")
    runs = read_csv(out / "runs.csv")
    signals = load_file(out / "signals.safetensors")
    with Zoo(inr_path) as z:
        rows = z.select(split="train")
        assert len(rows) == 2 and json.loads((out / "zoo.json").read_text())["is_inr"] is True
        assert [int(r["index"]) for r in runs] == z.index[rows].tolist() and {r["split"] for r in runs} == {"train"}
        for field in set(z.signal_names) - {"split"}:
            assert [r[field] for r in runs] == [str(v) for v in z.signal(field)[rows].tolist()], field
        assert torch.equal(signals["coords"], z.signal_coords())
        assert torch.equal(signals["values"], z.signal_values(rows))
        sd = load_file(out / runs[0]["run"] / "epoch_5.safetensors")
        assert all(torch.equal(sd[n], t[0]) for n, t in z.batch(rows[:1]).items())


def test_reads_in_blocks_give_the_same_files_and_report_progress(zoo_path, tmp_path, monkeypatch):
    import zoo.export

    monkeypatch.setattr(zoo.export, "READ_ROWS", 4)  # spans of 4 rows, with a diverged row skipped in one
    lines = []
    export_zoo(zoo_path, tmp_path / "blocks", checkpoint="last", log=lines.append)
    assert lines[-1] == "export: 11/11 runs x 1 checkpoint(s)" and len(lines) == 3
    with Zoo(zoo_path) as z:
        for r in z.select():
            sd = load_file(tmp_path / "blocks" / f"run_{z.index[r]:06d}" / "epoch_2.safetensors")
            assert all(torch.equal(sd[n], t) for n, t in z.state_dict(int(r)).items())
    subset_zoo(zoo_path, tmp_path / "blocks.h5", ["lr<1"], block=3, log=lines.append)
    assert lines[-1] == "subset: 9/9 runs copied"
    with Zoo(zoo_path) as z, Zoo(tmp_path / "blocks.h5") as s:
        rows = z.select(lr=(None, 1))
        assert s.read_params(np.arange(len(s)))["layers.0.weight"].tobytes() == \
            z.read_params(rows)["layers.0.weight"].tobytes()


def test_export_refuses_a_split_the_zoo_does_not_record_and_an_existing_folder(zoo_path, tmp_path, capsys):
    assert main(["zoo", "export", zoo_path, "--out", str(tmp_path / "x"), "--split", "test"]) == 2
    assert "records no split" in one_error_line(capsys) and not (tmp_path / "x").exists()
    assert main(["zoo", "export", zoo_path, "--out", str(tmp_path / "x"), "--checkpoint", "7"]) == 2
    assert "no checkpoint at epoch 7" in one_error_line(capsys)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["zoo", "export", zoo_path, "--out", str(tmp_path / "full")]) == 2
    assert "not an empty folder" in one_error_line(capsys)
    assert main(["zoo", "export", zoo_path, "--out", str(tmp_path / "x"), "--format", "pt"]) == 0
    assert sorted(p.name for p in (tmp_path / "x" / "run_000000").iterdir()) == ["epoch_2.pt"]


# ----------------------------------------------------------------------------------------------
# subset

def test_subset_by_a_metric_and_a_hyperparameter_is_a_zoo_of_exactly_the_selected_rows(zoo_path, tmp_path):
    out = tmp_path / "good.h5"
    with Zoo(zoo_path) as z:
        relu = z.select(activation="relu")
        x = float(np.sort(z.metric("test_acc")[relu, -1])[1])  # every relu run but the worst
        rows = z.select(test_acc=(x, None), activation="relu")
        assert 1 < len(rows) < len(relu) and len(rows) < len(z.select(test_acc=(x, None)))  # both conditions count
        assert main(["zoo", "subset", zoo_path, "--where", f"test_acc>={x!r}", "--where", "activation=relu",
                     "--out", str(out)]) == 0
        assert verify(out) == []
        with Zoo(out) as s:
            assert s.index.tolist() == z.index[rows].tolist() and s.seed.tolist() == z.seed[rows].tolist()
            assert (s.status == z.status[rows]).all() and s.done.all()
            for name, w in s.read_params(np.arange(len(s))).items():
                assert w.tobytes() == z.read_params(rows)[name].tobytes(), name
            for name, v in s.read_metrics(np.arange(len(s))).items():
                assert v.tobytes() == z.read_metrics(rows)[name].tobytes(), name
            for h in z.hparam_names:
                assert s.hparam(h).tolist() == z.hparam(h)[rows].tolist(), h
            assert s.spec == z.spec and s.config == z.config and s.checkpoint_epochs == z.checkpoint_epochs
            assert s.config_hash.startswith("subset-") and s.subset["source_config_hash"] == z.config_hash
            assert s.subset["where"] == [f"test_acc>={x!r}", "activation=relu"] and s.subset["checkpoint_epoch"] == 2
            assert len(s.subset["source_sha256"]) == 64
            assert "subset     of" in s.summary()
    dm = WeightDataModule([str(out)], split=[0.5, 0.25, 0.25], batch_size=4)
    dm.setup("fit")
    used = {r for part in ("train", "val", "test") for r in dm.split_runs[part]}
    assert used == set(z.index[rows].tolist())
    wb = next(iter(dm.train_dataloader()))[0]
    assert all(torch.isfinite(t).all() for t in wb.params())


def test_subset_conditions_at_an_epoch_and_the_strict_forms(zoo_path, tmp_path):
    with Zoo(zoo_path) as z:
        acc1, lr = z.metric("test_acc")[:, 1], z.hparam("lr")
        x = float(np.median(acc1[z.done]))
        made = subset_zoo(zoo_path, tmp_path / "e1.h5", [f"test_acc>{x!r}", "lr!=0.2,0.05"], checkpoint=1)
        wanted = z.done & (acc1 > x) & ~np.isin(lr, [0.2, 0.05])
        with Zoo(tmp_path / "e1.h5") as s:
            assert s.index.tolist() == z.index[wanted].tolist() and made["models"] == int(wanted.sum())
        x0 = float(np.median(z.metric("test_acc")[:, 0]))  # at the initialisation, diverged runs included
        assert subset_zoo(zoo_path, tmp_path / "e0.h5", [f"test_acc>={x0!r}"], checkpoint=0, status="all")["models"] \
            == len(z.select(status=None, checkpoint=0, test_acc=(x0, None)))
        made = subset_zoo(zoo_path, tmp_path / "div.h5", ["lr>1000"], status="diverged")
        assert made["models"] == 1 and verify(tmp_path / "div.h5") == []


def test_inr_subset_keeps_the_signals(inr_path, tmp_path):
    subset_zoo(inr_path, tmp_path / "test.h5", ["split=test,val"])
    with Zoo(inr_path) as z, Zoo(tmp_path / "test.h5") as s:
        rows = z.select(split=["test", "val"])
        assert verify(tmp_path / "test.h5") == [] and s.is_inr and s.index.tolist() == z.index[rows].tolist()
        assert torch.equal(s.signal_values(), z.signal_values(rows)) and torch.equal(s.signal_coords(), z.signal_coords())
        for f in z.signal_names:
            assert s.signal(f).tolist() == z.signal(f)[rows].tolist(), f


@pytest.mark.parametrize("where, said", [
    ("test_acc~0.5", "expected NAME>=X"),
    ("test_acc>=", "expected NAME>=X"),
    ("test_acc>=high", "holds numbers, found 'high'"),
    ("activation>1", "holds strings"),
    ("depth>=2", "'depth' is neither a metric ['train_loss'"),
    ("test_acc>2", "no done run meets test_acc>2"),
])
def test_bad_conditions_and_an_empty_selection_are_one_line_errors(zoo_path, tmp_path, capsys, where, said):
    out = tmp_path / "never.h5"
    assert main(["zoo", "subset", zoo_path, "--where", where, "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert said in line, line
    if where.startswith("depth"):
        assert "a hyperparameter ['activation'" in line
    assert not out.exists() and not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# select by metrics in the DataModules

def test_select_by_a_metric_keeps_runs_by_what_they_achieved(zoo_path):
    with Zoo(zoo_path) as z:
        acc = z.metric("test_acc")
        x = float(np.median(acc[z.done, -1]))
        last = set(z.index[z.done & (acc[:, -1] >= x)].tolist())
        first = set(z.index[z.done & (acc[:, 1] >= x)].tolist())
    assert last != first  # the checkpoint matters for these runs
    for select, wanted in (({"test_acc": [x, None]}, last), ({"test_acc": [x, None], "checkpoint": 1}, first)):
        dm = PropertyDataModule([zoo_path], target="test_acc", select=select, split=[0.5, 0.25, 0.25])
        dm.setup("fit")
        used = {r for part in ("train", "val", "test") for r in dm.split_runs[part]}
        assert used == wanted, select
    with pytest.raises(ValueError, match="select.checkpoint: expected the epoch"):
        PropertyDataModule([zoo_path], select={"test_acc": [x, None], "checkpoint": "last"})

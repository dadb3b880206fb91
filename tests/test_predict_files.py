"""``wsl predict`` on anyone's files: structural matching of foreign state_dicts, wrappers, refusals
of what cannot be read safely, untrusted predictor checkpoints, activations, bounded targets."""
from __future__ import annotations

import io
import os
import pathlib

import pytest
import torch
from torch import nn

from conftest import save_checkpoint
from wsl.cli import main
from wsl.core.checkpoint import load_model
from wsl.weights.matching import match_state_dict
from wsl.prediction.model import PropertyPredictor
from zoo.store import metric_bounds
from wsl.prediction.predict import predict_files
from wsl.weights import WeightBatch
from zoo.architectures import build_spec

HIDDEN = (32, 32)


def _spec(hidden=HIDDEN, activation="relu"):
    return build_spec("mlp", (64,), 10, hidden=list(hidden), activation=activation)


def _predictor(spec=None, target="test_acc", encoder="statnn"):
    torch.manual_seed(0)
    return PropertyPredictor((spec or _spec()).to_json(), encoder=encoder, target=target).eval()


def _save_predictor(model, path, **extra):
    """A predictor checkpoint as written before the core's class tag (the loader still reads it),
    with its data module's hyperparameters."""
    extra.setdefault("datamodule_hyper_parameters", {"zoos": [pathlib.PosixPath("/nowhere/zoo.h5")]})
    return save_checkpoint(model, path, tag=False, **extra)


def _sequential(hidden=HIDDEN):
    torch.manual_seed(1)
    sizes = (64, *hidden, 10)
    mods = []
    for a, b in zip(sizes, sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods[:-1])


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(64, 32)
        self.hidden = nn.Linear(32, 32)
        self.classifier = nn.Linear(32, 10)


def _expected(model, params):
    return model.predict_values(WeightBatch.from_params(model.spec, [p.unsqueeze(0).float() for p in params])).item()


@pytest.fixture
def predictor(tmp_path):
    model = _predictor()
    return model, _save_predictor(model, tmp_path / "pred.ckpt")


def test_sequential_and_custom_modules_match_by_structure(predictor, tmp_path, capsys):
    model, ckpt = predictor
    seq, custom = _sequential(), Custom()
    torch.save(seq.state_dict(), tmp_path / "seq.pt")
    from safetensors.torch import save_file

    save_file(custom.state_dict(), str(tmp_path / "custom.safetensors"))
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "seq.pt"), str(tmp_path / "custom.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "0.weight -> layers.0.weight, 0.bias -> layers.0.bias, 2.weight -> layers.1.weight" in out
    assert "encoder.weight -> layers.0.weight" in out and "classifier.bias -> layers.2.bias" in out
    preds = {p.source: p.value for p in predict_files(model, [tmp_path / "seq.pt", tmp_path / "custom.safetensors"])}
    assert preds[str(tmp_path / "seq.pt")] == pytest.approx(_expected(model, list(seq.state_dict().values())), abs=1e-6)
    assert preds[str(tmp_path / "custom.safetensors")] == pytest.approx(
        _expected(model, list(custom.state_dict().values())), abs=1e-6)


def test_wrappers_and_spec_names_in_any_order(predictor, tmp_path, capsys):
    model, ckpt = predictor
    sd = _sequential().state_dict()
    expected = _expected(model, list(sd.values()))
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "a.pt")
    torch.save({"model": sd, "optimizer": {"lr": 0.1}}, tmp_path / "b.pt")
    torch.save({f"module.{k}": v for k, v in sd.items()}, tmp_path / "c.pth")  # nn.DataParallel
    torch.save({"W1": sd["0.weight"], "b1": sd["0.bias"], "W2": sd["2.weight"], "b2": sd["2.bias"],
                "W3": sd["4.weight"], "b3": sd["4.bias"]}, tmp_path / "d.pt")  # raw parameter names
    spec_named = dict(zip(model.spec.param_names, sd.values()))
    torch.save(dict(reversed(list(spec_named.items()))), tmp_path / "e.pt")  # names decide, not order
    files = [tmp_path / f for f in ("a.pt", "b.pt", "c.pth", "d.pt", "e.pt")]
    preds = predict_files(model, files)
    assert [p.value for p in preds] == pytest.approx([expected] * 5, abs=1e-6)
    out = capsys.readouterr().out
    assert "a.pt and 2 more files: names differ" in out and "W1 -> layers.0.weight" in out
    assert "e.pt" not in out  # matched by name: no mapping to report


def test_mismatches_are_refused_with_expected_and_found(predictor, tmp_path, capsys):
    model, ckpt = predictor

    def error(sd, *flags):
        torch.save(sd, tmp_path / "x.pt")
        assert main(["predict", "--model", str(ckpt), str(tmp_path / "x.pt"), *flags]) == 2
        err = capsys.readouterr().err
        assert err.startswith("wsl: error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return err

    err = error(_sequential(hidden=(32, 16)).state_dict())
    assert "2.weight has shape [16, 32] where layers.1.weight [32, 32] is expected" in err
    assert "Expected, in order: layers.0.weight [32, 64]" in err and "Found, in file order: 0.weight [32, 64]" in err
    bn = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    assert "1.running_mean, 1.running_var, 1.num_batches_tracked are normalization statistics" in error(bn.state_dict())
    assert "expected 6 tensors" in error(_sequential(hidden=(32, 32, 32)).state_dict())
    sd = _sequential().state_dict()
    swapped = {"a.weight": sd["0.weight"], "b.bias": sd["0.bias"], **{k: v for k, v in sd.items() if k[0] != "0"}}
    assert "come from different modules" in error(swapped)
    assert "missing layers.0.weight [32, 64]" in error(sd, "--strict-names")
    # names equal to the spec's with a wrong shape: the named check
    named = dict(zip(model.spec.param_names, _sequential(hidden=(32, 16)).state_dict().values()))
    assert "layers.1.weight: expected shape [32, 32], found [16, 32]" in error(named)


def test_an_ambiguous_order_is_refused():
    spec = _spec(hidden=(32, 32, 32))
    lin = {n: nn.Linear(a, b) for n, a, b in (("fc1", 64, 32), ("fc3", 32, 32), ("fc2", 32, 32), ("fc4", 32, 10))}
    sd = {f"{n}.{k}": v for n, m in lin.items() for k, v in m.state_dict().items()}  # fc3 registered before fc2
    with pytest.raises(ValueError, match=r"ambiguous: the layers fit both in the file's order \(fc1, fc3, fc2, fc4\) "
                                         r"and in the order of the numbers in their names \(fc1, fc2, fc3, fc4\)"):
        match_state_dict(spec, sd, "net.pt")
    in_order = {f"fc{i}.{k}": sd[f"fc{i}.{k}"] for i in range(1, 5) for k in ("weight", "bias")}
    params, mapping = match_state_dict(spec, in_order, "net.pt")
    assert mapping["fc2.weight"] == "layers.1.weight" and params[2] is sd["fc2.weight"]


def test_safetensors_are_ordered_by_the_numbers_in_names_or_by_unique_shapes(tmp_path):
    """safetensors stores tensors sorted by name ("10.bias" before "2.weight"): not the module order."""
    from safetensors.torch import save_file

    hidden = (32,) * 5  # Sequential names 0, 2, ..., 10: sorted as text, 10 comes before 2
    model = _predictor(_spec(hidden=hidden))
    sd = _sequential(hidden=hidden).state_dict()
    save_file(sd, str(tmp_path / "deep.safetensors"))
    (pred,) = predict_files(model, [tmp_path / "deep.safetensors"], stream=io.StringIO())
    assert pred.value == pytest.approx(_expected(model, list(sd.values())), abs=1e-6)
    _, mapping = match_state_dict(model.spec, sd, "deep", ordered=False)
    assert mapping["10.weight"] == "layers.5.weight" and mapping["2.bias"] == "layers.1.bias"
    names = ("encoder", "hidden_a", "hidden_b", "classifier")  # equal shapes, no numbers: no order to tell
    values = list(_sequential(hidden=(32, 32, 32)).state_dict().values())
    unnamed = {f"{n}.{role}": values[2 * i + j] for i, n in enumerate(names) for j, role in enumerate(("weight", "bias"))}
    with pytest.raises(ValueError, match="ambiguous: layers hidden_a, hidden_b have equal shapes"):
        match_state_dict(_spec(hidden=(32, 32, 32)), unnamed, "x.safetensors", ordered=False)
    with pytest.raises(ValueError, match="W1 is not named <module>.weight"):
        match_state_dict(_spec(), dict(zip(["W1", "b1", "W2", "b2", "W3", "b3"], _sequential().state_dict().values())),
                         "x.safetensors", ordered=False)


def test_unreadable_inputs_are_refused(predictor, tmp_path, capsys):
    model, ckpt = predictor
    torch.save(_sequential(), tmp_path / "whole.pt")
    (tmp_path / "noise.pt").write_bytes(b"\x80\x02not a checkpoint" * 16)
    (tmp_path / "fake.safetensors").write_bytes(b"\x80\x02not a checkpoint" * 16)
    torch.save({"weights": [1, 2, 3]}, tmp_path / "list.pt")
    for name, says in [("whole.pt", "holds a whole pickled module (torch.save(model))"),
                       ("noise.pt", "cannot be read as a torch file"),
                       ("fake.safetensors", "cannot be read as a safetensors file"),
                       ("list.pt", "expected a state_dict (a mapping of names to tensors")]:
        assert main(["predict", "--model", str(ckpt), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"wsl: error: {tmp_path / name}") and says in err and len(err.strip().splitlines()) == 1
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "whole.pt")]) == 2
    assert "save the state_dict instead: torch.save(model.state_dict(), PATH)" in capsys.readouterr().err


def test_bad_predictor_files_give_one_clear_line(predictor, tmp_path, capsys):
    import h5py

    model, ckpt = predictor
    torch.save(_sequential().state_dict(), tmp_path / "net.pt")
    with h5py.File(tmp_path / "zoo.h5", "w") as f:
        f["x"] = [1.0]
    (tmp_path / "noise.ckpt").write_bytes(b"\x80\x02not a checkpoint" * 16)
    torch.save({"hyper_parameters": {"lr": 0.1}, "state_dict": {}}, tmp_path / "other.ckpt")
    cases = [("zoo.h5", "is an HDF5 file (a zoo?), expected a predictor checkpoint (.ckpt) written by wsl fit"),
             ("noise.ckpt", "cannot be read as a torch file (not one torch.save wrote, or damaged), expected a predictor"),
             ("net.pt", "found a state_dict of 6 tensors (a network's weights: give it as an input, not as the model)"),
             ("missing.ckpt", "not found (expected a predictor checkpoint"),
             ("other.ckpt", "found a Lightning checkpoint of another model")]
    for name, says in cases:
        assert main(["predict", "--model", str(tmp_path / name), str(tmp_path / "net.pt")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("wsl: error:") and says in err and len(err.strip().splitlines()) == 1, (name, err)


class _Payload:
    """Unpickling this writes a marker file: a stand-in for any code a crafted checkpoint runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_predictor_checkpoint_carrying_code_is_refused_and_nothing_runs(predictor, tmp_path, capsys):
    model, _ = predictor
    marker = tmp_path / "pwned"
    evil = _save_predictor(model, tmp_path / "evil.ckpt", callbacks={"x": _Payload(marker)})
    torch.save(_sequential().state_dict(), tmp_path / "net.pt")
    assert main(["predict", "--model", str(evil), str(tmp_path / "net.pt")]) == 2
    err = capsys.readouterr().err
    assert "refused: not a tensors-only file, it holds pickled Python objects (posix.system)" in err
    assert not marker.exists()


def test_the_loader_reads_paths_and_rebuilds_the_predictor(predictor):
    model, ckpt = predictor
    loaded = load_model(ckpt, PropertyPredictor)
    assert not loaded.training and loaded.hparams.target == "test_acc"
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_activation_warnings_and_errors(predictor, tmp_path, capsys):
    model, ckpt = predictor
    torch.save(_sequential().state_dict(), tmp_path / "net.pt")
    assert main(["predict", "--model", str(ckpt), str(tmp_path / "net.pt"), "--activation", "tanh"]) == 0
    captured = capsys.readouterr()
    assert "wsl: warning: input files: networks with activation tanh, but the predictor was trained only on relu" \
        in captured.err and "net.pt" in captured.out
    open_spec = _spec(activation=None)
    probe = PropertyPredictor(open_spec.to_json(), encoder="probe", encoder_kwargs={"probes": 4, "hidden": 8},
                              target="test_acc")
    probe_ckpt = _save_predictor(probe, tmp_path / "probe.ckpt")
    assert main(["predict", "--model", str(probe_ckpt), str(tmp_path / "net.pt")]) == 2
    assert "pass --activation" in capsys.readouterr().err
    assert main(["predict", "--model", str(probe_ckpt), str(tmp_path / "net.pt"), "--activation", "relu"]) == 0


def test_accuracies_are_predicted_inside_their_range():
    assert metric_bounds("test_acc") == (0.0, 1.0) and metric_bounds("test_loss") is None
    wb = WeightBatch.from_params(_spec(), [p.unsqueeze(0) for p in _sequential().state_dict().values()])
    for target in ("test_acc", "test_loss"):
        model = _predictor(target=target)
        raw = model(wb).squeeze(-1)
        for mean in (50.0, -50.0):  # a target normalizer that puts the raw prediction far outside [0, 1]
            model.target_normalizer.mean.fill_(mean)
            value = model.predict_values(wb)
            if target == "test_acc":
                assert value.item() == (1.0 if mean > 0 else 0.0)
            else:
                torch.testing.assert_close(value, raw + mean)
    classifier = PropertyPredictor(_spec().to_json(), num_outputs=2, task_type="classification", target="val_acc")
    assert classifier.target_bounds is None

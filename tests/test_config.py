"""Zoo configs: normalisation, identity hash, per-model sampling, clear errors."""
import re

import numpy as np
import pytest

from zoo.config import resolve_config
from zoo.config import shipped_configs
from zoo.config import HPARAMS, ConfigError, load_config, parse_config, sample_hparams, varying_hparams
from zoo.generate import build_task_and_spec
from zoo.optim import OPTIMIZERS

MINIMAL = {"num_models": 10, "epochs": 3, "task": {"name": "digits", "n_train": 200, "n_val": 97},
           "architecture": {"name": "mlp", "hidden": [8, 8]}}


def cfg(**over):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MINIMAL.items()}
    raw.update(over)
    return raw


# ----------------------------------------------------------------------------------------------
# normalisation and identity

def test_parse_config_fills_defaults():
    c = parse_config(cfg(), source="configs/zoo/my_zoo.yaml")
    assert c.name == "my_zoo" and c.seed == 0 and c.num_models == 10 and c.epochs == 3
    assert c.checkpoints == [3]
    assert c.training == {"chunk_size": "auto"}
    assert c.raw["description"] == ""
    assert sorted(c.hparams) == sorted(HPARAMS)
    for name, (default, *_rest) in HPARAMS.items():
        if name != "activation":
            assert c.hparams[name] == default, name
    assert c.hparams["activation"] == "relu"  # the architecture's default
    assert parse_config(cfg(architecture={"name": "siren"})).hparams["activation"] == "sine"
    assert parse_config(cfg(architecture={"name": "mlp", "activation": "tanh"})).hparams["activation"] == "tanh"
    assert parse_config(cfg(architecture="mlp")).architecture == {"name": "mlp"}
    c = parse_config(cfg(checkpoints=[3, 0, 1, 1], hparams={"lr": 1, "batch_size": {"grid": [8, 16]}}))
    assert c.checkpoints == [0, 1, 3]
    assert c.hparams["lr"] == 1.0 and isinstance(c.hparams["lr"], float)
    assert c.hparams["batch_size"] == {"grid": [8, 16]}
    assert varying_hparams(c) == ["batch_size"]
    raw = cfg(hparams={"lr": {"uniform": [0.1, 0.2]}})
    parse_config(raw)
    assert raw["hparams"] == {"lr": {"uniform": [0.1, 0.2]}}  # the input is not modified


def test_hash_is_the_zoo_identity():
    a = cfg(seed=1, hparams={"lr": {"log_uniform": [0.001, 0.1]}, "optimizer": {"choice": ["sgd", "adam"]}})
    reordered = {k: a[k] for k in reversed(list(a))}
    reordered["hparams"] = {"optimizer": {"choice": ["sgd", "adam"]}, "lr": {"log_uniform": [0.001, 0.1]}}
    reordered["task"] = {"n_val": 97, "n_train": 200, "name": "digits"}
    h = parse_config(a).hash()
    assert re.fullmatch(r"[0-9a-f]{16}", h)
    assert parse_config(reordered).hash() == h
    assert parse_config(dict(a, seed=2)).hash() != h
    assert parse_config(dict(a, epochs=4)).hash() != h
    assert parse_config(dict(a, hparams={"lr": {"log_uniform": [0.001, 0.2]}})).hash() != h
    # how the zoo is computed, and its description, are not part of its identity
    assert parse_config(dict(a, training={"chunk_size": 7, "eval_batch": 64, "memory_budget_gb": 1})).hash() == h
    assert parse_config(dict(a, description="another text")).hash() == h
    # an explicit default is the same zoo as the implicit one
    assert parse_config(dict(a, checkpoints=[3])).hash() == h
    assert parse_config(dict(a, hparams=dict(a["hparams"], momentum=0.0))).hash() == h


def test_a_normalised_config_parses_to_itself():
    """A zoo stores its normalised config; rebuilding the zoo's task (``wsl sample``, the
    memorization suite) parses it again, so parsing must be idempotent for every shipped config."""
    import json

    for path in sorted(shipped_configs("zoo").glob("*.yaml")):
        c = load_config(path)
        again = parse_config(json.loads(c.to_json()), str(path))
        assert again.to_json() == c.to_json() and again.hash() == c.hash(), path.name


def test_shipped_demo_config_parses():
    c = load_config(resolve_config("digits_mlp"))
    assert c.name == "digits_mlp" and c.num_models == 2000 and c.checkpoints[-1] == c.epochs
    assert set(varying_hparams(c)) >= {"lr", "optimizer", "activation"}


# ----------------------------------------------------------------------------------------------
# sampling

def test_same_config_same_hparams_and_seed_matters():
    c = parse_config(cfg(hparams={"lr": {"log_uniform": [1e-4, 1e-1]}, "optimizer": {"choice": ["sgd", "adam"]}}))
    a, b = sample_hparams(c, range(10)), sample_hparams(parse_config(c.raw), range(10))
    assert a == b
    other = sample_hparams(parse_config(dict(c.raw, seed=1)), range(10))
    assert other["lr"] != a["lr"]
    assert len(set(a["lr"])) == 10


def test_samplers_respect_their_ranges():
    n = 300
    c = parse_config(cfg(num_models=n, hparams={
        "lr": {"log_uniform": [1e-4, 1e-1]},
        "batch_size": {"int_uniform": [1, 3]},
        "optimizer": {"choice": ["sgd", "adam", "adamw"]},
        "dropout": {"uniform": [0.1, 0.3]},
        "weight_decay": 0.001,
    }))
    hp = sample_hparams(c, range(n))
    assert all(len(v) == n for v in hp.values())
    lr = np.array(hp["lr"])
    assert ((lr >= 1e-4) & (lr <= 1e-1)).all()
    logs = np.log10(lr)
    # log-uniform: each decade holds about a third of the values (a plain uniform would put ~99%
    # of them in the top decade)
    for lo in (-4, -3, -2):
        assert 0.2 < ((logs >= lo) & (logs < lo + 1)).mean() < 0.47
    assert 0.7 < logs.std() < 1.05  # 3 / sqrt(12) = 0.87
    assert all(type(v) is int for v in hp["batch_size"]) and set(hp["batch_size"]) == {1, 2, 3}
    assert set(hp["optimizer"]) == {"sgd", "adam", "adamw"}
    d = np.array(hp["dropout"])
    assert ((d >= 0.1) & (d <= 0.3)).all() and d.std() > 0.04
    assert hp["weight_decay"] == [0.001] * n
    assert hp["activation"] == ["relu"] * n


def test_grid_parameters_are_crossed():
    c = parse_config(cfg(hparams={"batch_size": {"grid": [16, 32]}, "momentum": {"grid": [0.0, 0.5, 0.9]},
                                  "lr": {"uniform": [0.01, 0.1]}}))
    hp = sample_hparams(c, range(18))
    points = [(hp["batch_size"][i], hp["momentum"][i]) for i in range(18)]
    assert sorted(points[:6]) == sorted((b, m) for b in (16, 32) for m in (0.0, 0.5, 0.9))
    assert all(points[i] == points[i % 6] for i in range(18))
    assert len(set(hp["lr"])) == 18  # other hyperparameters still vary within a grid point


def test_a_models_hparams_do_not_depend_on_the_others():
    c = parse_config(cfg(hparams={"lr": {"log_uniform": [1e-4, 1e-1]}, "optimizer": {"choice": ["sgd", "adam"]},
                                  "batch_size": {"grid": [16, 32, 64]}, "init_scale": {"uniform": [0.5, 2]}}))
    full = sample_hparams(c, range(10))
    for i in (0, 5, 9):
        alone = sample_hparams(c, [i])
        assert alone == {k: [v[i]] for k, v in full.items()}
    part = sample_hparams(c, [9, 2, 5])
    assert part == {k: [v[9], v[2], v[5]] for k, v in full.items()}


# ----------------------------------------------------------------------------------------------
# errors

@pytest.mark.parametrize("over,field,detail", [
    ({"colour": "red"}, "colour", "unknown field"),
    ({"hparams": {"learning_rate": 0.1}}, "hparams.learning_rate", "expected one of"),
    ({"hparams": {"optimizer": "rmsprop"}}, "hparams.optimizer", "rmsprop"),
    ({"hparams": {"optimizer": {"choice": ["sgd", "lbfgs"]}}}, "hparams.optimizer", "lbfgs"),
    ({"hparams": {"weight_decay": {"log_uniform": [0.0, 0.01]}}}, "hparams.weight_decay", "log_uniform needs low > 0"),
    ({"hparams": {"lr": {"log_uniform": [0.0, 0.01]}}}, "hparams.lr", "> 0"),
    ({"hparams": {"lr": {"uniform": [0.5, 0.1]}}}, "hparams.lr", "low 0.5 > high 0.1"),
    ({"hparams": {"lr": "fast"}}, "hparams.lr", "expected a number"),
    ({"hparams": {"batch_size": 16.5}}, "hparams.batch_size", "expected an integer"),
    ({"hparams": {"lr": {"int_uniform": [1, 3]}}}, "hparams.lr", "int_uniform"),
    ({"hparams": {"lr": {"normal": [0, 1]}}}, "hparams.lr", "log_uniform"),
    ({"hparams": {"lr": {"choice": []}}}, "hparams.lr", "non-empty list"),
    ({"hparams": {"optimizer": {"uniform": [0, 1]}}}, "hparams.optimizer", "use choice or grid"),
    ({"hparams": {"activation": "relu"}, "architecture": {"name": "mlp", "activation": "tanh"}},
     "hparams.activation", "not both"),
    ({"hparams": ["lr"]}, "hparams", "expected a mapping"),
    ({"checkpoints": [0, 5]}, "checkpoints", "[0, 3]"),
    ({"checkpoints": []}, "checkpoints", "non-empty list"),
    ({"epochs": 0}, "epochs", "positive integer"),
    ({"num_models": "many"}, "num_models", "positive integer"),
    ({"seed": -1}, "seed", "integer >= 0"),
    ({"task": {"n_train": 5}}, "task", "'name'"),
    ({"training": {"chunk_size": 0}}, "training.chunk_size", "positive integer"),
    ({"training": {"threads": 4}}, "training.threads", "unknown field"),
])
def test_config_errors_name_the_field(over, field, detail):
    with pytest.raises(ConfigError) as e:
        parse_config(cfg(**over), source="zoo.yaml")
    msg = str(e.value)
    assert msg.startswith(f"zoo.yaml: {field}: "), msg
    assert detail in msg, msg
    assert isinstance(e.value, ValueError)


def test_error_messages_list_the_valid_values():
    with pytest.raises(ConfigError) as e:
        parse_config(cfg(hparams={"learning_rate": 0.1}))
    assert all(name in str(e.value) for name in HPARAMS)
    with pytest.raises(ConfigError) as e:
        parse_config(cfg(hparams={"optimizer": "rmsprop"}))
    assert all(name in str(e.value) for name in OPTIMIZERS)


@pytest.mark.parametrize("missing", ["task", "architecture", "num_models", "epochs"])
def test_missing_required_field(missing):
    raw = cfg()
    del raw[missing]
    with pytest.raises(ConfigError, match=f"{missing}: missing required field"):
        parse_config(raw)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)
    bad.write_text("num_models: 2\nepochs: 1\ntask: digits\narchitecture: mlp\nhparams: {lr: -1}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: hparams.lr: ")):
        load_config(bad)


def test_unknown_task_and_architecture_fail_when_building():
    with pytest.raises(ValueError, match=r"unknown task 'digitz'.*digits.*mnist"):
        build_task_and_spec(parse_config(cfg(task={"name": "digitz"})))
    with pytest.raises(ValueError, match=r"unknown architecture 'transformer'.*cnn.*mlp.*siren"):
        build_task_and_spec(parse_config(cfg(architecture={"name": "transformer"})))
    with pytest.raises(ValueError, match=r"task 'digits' got unknown option.*'n_tran'"):
        build_task_and_spec(parse_config(cfg(task={"name": "digits", "n_tran": 100})))
    with pytest.raises(ValueError, match=r"architecture 'mlp'.*width"):
        build_task_and_spec(parse_config(cfg(architecture={"name": "mlp", "width": 8})))
    with pytest.raises(ValueError, match=r"architecture.activation.*swish"):
        build_task_and_spec(parse_config(cfg(architecture={"name": "mlp", "activation": "swish"})))


def test_missing_data_dir_names_the_directory(tmp_path):
    c = parse_config(cfg(task={"name": "mnist", "data_dir": str(tmp_path)}))
    with pytest.raises((FileNotFoundError, ValueError), match=re.escape(str(tmp_path))):
        build_task_and_spec(c)


def test_default_init_keeps_the_zoo_identity_and_other_inits_change_it():
    """Zoos made before ``init`` existed resume under the same hash; another init is another zoo."""
    raw = {"name": "z", "num_models": 2, "epochs": 1, "task": "digits", "architecture": "mlp"}
    plain = parse_config(raw)
    assert plain.init == {"seeds": "independent", "scheme": "standard"}
    assert parse_config(dict(raw, init={"seeds": "independent"})).hash() == plain.hash()
    assert parse_config(dict(raw, init="shared")).hash() != plain.hash()
    assert parse_config(dict(raw, init="shared")).init == {"seeds": "shared", "scheme": "standard"}
    assert parse_config(plain.raw).raw == plain.raw  # a normalised config parses to itself

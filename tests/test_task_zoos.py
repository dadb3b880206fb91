"""Task zoos: networks fine-tuned from one stored network (``init.from``) on task variants
(``task_variant``), and the task-merging benchmark that reads them.

The start is the stored network bit for bit; a wrong file, run, checkpoint or architecture is one
error naming what was expected and found; each variant does what its name says; a model of a
population of mixed variants equals the same model trained alone on its variant; and
``scripts/benchmark_merge.py --tasks`` runs end to end on a tiny pair of zoos.
"""
import json

import numpy as np
import pytest
import torch
import yaml

from conftest import QUIET, generate_zoo, load_script
from zoo.architectures import build_spec
from zoo.config import ConfigError, parse_config
from zoo.errors import InputError, MissingFileError
from zoo.generate import generate
from zoo.store import Zoo
from zoo.tasks import load_task, parse_variant, variant_view
from zoo.train import train_population, training_subsets, variant_views

ARCH = {"name": "mlp", "hidden": [16], "activation": "relu"}
VARIANTS = ["classes:0-4", "relabel:1", "permute:1", "flip"]


def pretrain_raw(**over) -> dict:
    raw = {"name": "pre", "seed": 0, "num_models": 2, "epochs": 2, "checkpoints": [0, 2],
           "task": {"name": "digits"}, "architecture": ARCH,
           "hparams": {"lr": 0.05, "momentum": 0.9, "batch_size": 32}}
    return raw | over


def tasks_raw(source, **over) -> dict:
    raw = {"name": "tasks", "seed": 1, "num_models": 8, "epochs": 2, "checkpoints": [0, 2],
           "task": {"name": "digits"}, "architecture": ARCH, "init": {"from": str(source), "run": 1},
           "hparams": {"task_variant": {"grid": VARIANTS}, "lr": {"log_uniform": [0.01, 0.05]}, "momentum": 0.9,
                       "data_fraction": {"uniform": [0.7, 1.0]}, "batch_size": 32}}
    return raw | over


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny populations: one thread (see conftest)."""


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    """Made on one thread like the tests' own zoos: a batched matmul's reduction order can depend on
    the thread count, and test_same_config_same_task_zoo compares bits."""
    d = tmp_path_factory.mktemp("task_zoos")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pre = generate_zoo(pretrain_raw(), d / "pre.h5")
        tasks = generate_zoo(tasks_raw(pre), d / "tasks.h5")
    finally:
        torch.set_num_threads(n)
    return d, pre, tasks


@pytest.fixture(scope="module")
def digits():
    return load_task("digits")


# --- init.from --------------------------------------------------------------------------------------

def test_every_model_starts_from_the_stored_network(zoos):
    _, pre, tasks = zoos
    with Zoo(pre) as p, Zoo(tasks) as z:
        source = p.batch([1], -1)  # run 1 at its last checkpoint
        start = z.batch(np.arange(len(z)), 0)
        for name, w in source.items():
            assert torch.equal(start[name], w.expand_as(start[name])), name  # bit for bit
        assert not torch.equal(z.batch([0], -1)[name], w[0:1])  # and then they trained
        variants = z.hparam("task_variant")
        assert [str(v) for v in variants] == [VARIANTS[i % 4] for i in range(8)]  # recorded per model
        assert "from" in z.summary().split("init")[1].split("\n")[0]


def test_init_run_each_starts_every_model_from_its_own_network(zoos):
    """``init.run: each``: model i starts from the source's finished run i mod n, bit for bit, in a
    population whose rows the trainer reorders (two optimizers) and splits across two workers."""
    d, pre, _ = zoos
    raw = tasks_raw(pre, name="each", num_models=5, init={"from": pre, "run": "each"},
                    hparams={"optimizer": {"grid": ["sgd", "adam"]}, "lr": {"log_uniform": [0.001, 0.01]},
                             "data_fraction": {"uniform": [0.3, 1.0]}, "batch_size": 32})
    out = generate_zoo(raw, d / "each.h5")
    with Zoo(pre) as p, Zoo(out) as z:
        assert len(set(z.hparam("optimizer"))) == 2
        source, start = p.batch([0, 1], -1), z.batch(np.arange(5), 0)
        for name, w in source.items():
            assert torch.equal(start[name], w[torch.tensor([0, 1, 0, 1, 0])]), name
    spec = build_spec("mlp", (64,), 10, hidden=[16], activation="relu")
    digits = load_task("digits")
    start = [torch.randn(6, *p.shape) for p in spec.params]
    hp = {"lr": [0.01] * 3 + [0.001] * 3, "optimizer": ["sgd", "adam", "sgd", "adam", "sgd", "adam"],
          "momentum": [0.9] * 6, "weight_decay": [0.0] * 6, "init_scale": [1.0] * 6, "dropout": [0.0] * 6,
          "data_fraction": [1.0, 0.5, 0.8, 0.6, 0.9, 0.7], "label_noise": [0.0] * 6, "activation": ["relu"] * 6,
          "batch_size": [32] * 6}
    both = train_population(spec, digits, hp, list(range(6)), epochs=1, checkpoints=[0, 1], init_params=start,
                            compile=False, workers=2)
    for k in (0, 3):  # each model alone from its own start: the same run
        alone = train_population(spec, digits, {n: v[k:k + 1] for n, v in hp.items()}, [k], epochs=1,
                                 checkpoints=[0, 1], init_params=[p[k:k + 1] for p in start], compile=False)
        for a, b, s0 in zip(both.params, alone.params, start):
            assert np.array_equal(a[k, 0], s0[k].numpy())
            np.testing.assert_allclose(a[k], b[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match=r"init_params: 5 starting networks for 6 models"):
        train_population(spec, digits, hp, list(range(6)), epochs=1, checkpoints=[1],
                         init_params=[p[:5] for p in start])
    with pytest.raises(InputError, match=r"init_params: layers\.0\.weight has shape \[6, 8, 64\]; expected \[16, 64\]"):
        train_population(spec, digits, hp, list(range(6)), epochs=1, checkpoints=[1],
                         init_params=[torch.randn(6, 8, 64)] + start[1:])


def test_init_from_checkpoint_position_picks_the_checkpoint(zoos):
    d, pre, _ = zoos
    out = generate_zoo(tasks_raw(pre, name="t0", num_models=2, init={"from": pre, "run": 0, "checkpoint": 0}),
                       d / "t0.h5")
    with Zoo(pre) as p, Zoo(out) as z:
        assert torch.equal(z.batch([0, 1], 0)["layers.0.weight"][1], p.batch([0], 0)["layers.0.weight"][0])


def test_same_config_same_task_zoo(zoos):
    d, pre, tasks = zoos
    again = generate_zoo(tasks_raw(pre), d / "again.h5")
    with Zoo(tasks) as a, Zoo(again) as b:
        for name in a.spec.param_names:
            assert np.array_equal(a.read_params(np.arange(8))[name], b.read_params(np.arange(8))[name]), name
        for m in a.metric_names:
            assert np.array_equal(a.metric(m), b.metric(m), equal_nan=True), m


def test_wrong_file_run_checkpoint_or_architecture_is_one_clear_error(zoos):
    d, pre, _ = zoos

    def make(name, **over):
        generate(parse_config(tasks_raw(pre, name=name, num_models=2) | over), d / f"{name}.h5", **QUIET)

    with pytest.raises(MissingFileError, match=r"init\.from: .*missing\.h5: zoo file not found"):
        make("a", init={"from": str(d / "missing.h5")})
    with pytest.raises(InputError, match=r"init\.run 7 is not in .*pre\.h5 \(runs 0\.\.1\)"):
        make("b", init={"from": pre, "run": 7})
    with pytest.raises(InputError, match=r"init\.checkpoint 5 is out of range .* 2 checkpoints"):
        make("c", init={"from": pre, "checkpoint": 5})
    with pytest.raises(InputError, match=r"another architecture: expected parameters layers\.0\.weight \[8, 64\].*"
                                         r"found layers\.0\.weight \[16, 64\]"):
        make("d", architecture={"name": "mlp", "hidden": [8], "activation": "relu"})
    with pytest.raises(ConfigError, match=r"hparams\.activation: .*whose activation is 'relu'; found \['tanh'\]"):
        make("e", architecture={"name": "mlp", "hidden": [16], "activation": "tanh"})
    for name in "abcde":
        assert not (d / f"{name}.h5").exists()  # nothing written before the check
    with pytest.raises(ConfigError, match=r"init\.run: applies to a stored network: give init\.from too"):
        parse_config(pretrain_raw(init={"run": 1}))
    with pytest.raises(ConfigError, match=r"hparams\.init_scale: init\.from copies a stored network"):
        parse_config(tasks_raw(pre, hparams={"init_scale": 2.0}))
    with pytest.raises(ConfigError, match=r"init\.from: expected the path of a zoo file"):
        parse_config(tasks_raw(pre, init={"from": 3}))
    with pytest.raises(ConfigError, match=r"init\.run: expected a run id \(an integer >= 0\) or 'each', found 'all'"):
        parse_config(tasks_raw(pre, init={"from": pre, "run": "all"}))


def test_init_from_keeps_old_configs_and_their_hash():
    raw = pretrain_raw()
    c = parse_config(raw)
    assert "from" not in c.init and "task_variant" not in c.hparams
    assert parse_config(raw | {"init": {"seeds": "independent"}}).hash() == c.hash()
    fine = parse_config(tasks_raw("zoos/pre.h5"))
    assert fine.init == {"seeds": "independent", "scheme": "standard", "from": "zoos/pre.h5", "run": 1,
                         "checkpoint": -1}
    assert parse_config(json.loads(fine.to_json())).hash() == fine.hash()  # a stored config parses to itself


# --- task variants ----------------------------------------------------------------------------------

def test_class_subset_keeps_only_those_classes(digits):
    view = variant_view(digits, "classes:0-2,7")
    for split in ("train", "val", "test"):
        y, base = getattr(view, f"y_{split}"), getattr(digits, f"y_{split}")
        keep = torch.isin(base, torch.tensor([0, 1, 2, 7]))
        assert torch.equal(y, base[keep]) and len(y) == int(keep.sum()) < len(base)
        assert torch.equal(getattr(view, f"x_{split}"), getattr(digits, f"x_{split}")[keep])


def test_relabel_permutes_the_labels_and_nothing_else(digits):
    view = variant_view(digits, "relabel:1")
    perm = {}
    for a, b in zip(digits.y_train.tolist(), view.y_train.tolist()):
        assert perm.setdefault(a, b) == b  # one fixed map
    assert sorted(perm) == sorted(perm.values()) == list(range(10)) and perm != {c: c for c in range(10)}
    assert torch.equal(view.x_train, digits.x_train)
    assert torch.equal(view.y_test, torch.tensor([perm[c] for c in digits.y_test.tolist()]))
    assert not torch.equal(variant_view(digits, "relabel:2").y_train, view.y_train)


def test_input_transforms(digits):
    images = digits.x_test.reshape(-1, 8, 8)
    assert torch.equal(variant_view(digits, "flip").x_test.reshape(-1, 8, 8), images.flip(-1))
    assert torch.equal(variant_view(digits, "invert").x_test, -digits.x_test)
    permuted = variant_view(digits, "permute:1")
    assert torch.equal(permuted.y_test, digits.y_test)
    assert torch.equal(permuted.x_test.sort(1).values, digits.x_test.sort(1).values)  # the same pixels, moved
    assert not torch.equal(permuted.x_test, digits.x_test)
    both = variant_view(digits, "flip+classes:3")
    assert torch.equal(both.x_train, variant_view(digits, "flip").x_train[digits.y_train == 3])
    assert variant_view(digits, "full") is digits


def test_bad_variants_are_clear_errors(digits):
    with pytest.raises(InputError, match="unknown step 'rotate'"):
        parse_variant("rotate")
    with pytest.raises(InputError, match="relabel:SEED"):
        parse_variant("relabel:x")
    with pytest.raises(InputError, match=r"has classes 0\.\.9, found \[12\]"):
        variant_view(digits, "classes:12")
    with pytest.raises(InputError, match="variants apply to classification tasks"):
        variant_view(load_task("sine", n_train=20, n_val=5, n_test=5), "flip")
    with pytest.raises(ConfigError, match=r"hparams\.task_variant: expected a task variant"):
        parse_config(pretrain_raw(hparams={"task_variant": {"choice": ["full", "shuffle"]}}))
    with pytest.raises(ConfigError, match=r"hparams\.task_variant: .*has classes 0\.\.9, found \[10\]"):
        generate(parse_config(pretrain_raw(hparams={"task_variant": "classes:10"})), "never.h5", **QUIET)


def test_mixed_variants_train_as_one_population_like_each_alone(digits):
    spec = build_spec("mlp", digits.input_shape, digits.output_dim, hidden=[16], activation="relu")
    hp = {"lr": [0.05, 0.02, 0.03, 0.04], "optimizer": ["sgd", "adam", "sgd", "sgd"], "momentum": [0.9] * 4,
          "weight_decay": [0.0] * 4, "init_scale": [1.0] * 4, "dropout": [0.0] * 4,
          "data_fraction": [0.5, 0.8, 1.0, 0.6], "label_noise": [0.0, 0.1, 0.0, 0.0], "batch_size": [32] * 4,
          "activation": ["relu"] * 4, "task_variant": ["classes:0-4", "relabel:1", "full", "classes:0-4"]}
    seeds = [11, 12, 13, 14]
    start = [0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)) for k, p in enumerate(spec.params)]
    res = train_population(spec, digits, hp, seeds, epochs=2, checkpoints=[0, 2], init_params=start)
    # model 0 (classes 0-4) sees only examples of classes 0-4, half of them
    views = variant_views(digits, hp["task_variant"], 4)
    examples, sizes = training_subsets(seeds, views.pools, hp["data_fraction"], views.offsets)
    seen = examples[0, :sizes[0]]
    assert set(views.train.y_train[seen].tolist()) <= set(range(5)) and sizes[0] == round(0.5 * views.pools[0])
    for i in range(4):
        view = variant_view(digits, hp["task_variant"][i])
        own = {k: v[i:i + 1] for k, v in hp.items() if k != "task_variant"}  # the view is the variant already
        alone = train_population(spec, view, own, seeds[i:i + 1], epochs=2, checkpoints=[0, 2], init_params=start)
        for k in range(len(spec.params)):
            assert np.array_equal(res.params[k][i, 0], start[k].numpy())
            np.testing.assert_allclose(res.params[k][i, -1], alone.params[k][0, -1], rtol=1e-4, atol=2e-5)
        for m in ("train_acc", "val_acc", "test_acc"):  # metrics on the model's own variant
            assert res.metrics[m][i, -1] == pytest.approx(alone.metrics[m][0, -1], abs=1e-6), (i, m)


# --- merging a task zoo -----------------------------------------------------------------------------

def source_task_of(path):
    from wsl.data.task import source_task

    with Zoo(path) as z:
        return source_task(z.config)


def test_wsl_merge_scores_a_task_zoo_on_the_runs_own_tasks(zoos):
    from wsl.merging.zoo_merge import merge_runs

    _, _, tasks = zoos
    m = merge_runs(tasks, "task-arithmetic", [0, 1], pretrained="init", lambdas=[0.5, 1.0])
    assert m.provenance["task_variants"] == VARIANTS[:2] and "mean of val_acc" in m.provenance["metric"]
    subset, relabel = (variant_view(source_task_of(tasks), v) for v in VARIANTS[:2])
    assert torch.equal(m.task.y_test, torch.cat([subset.y_test, relabel.y_test]))  # metrics on both tasks' examples
    soup = merge_runs(tasks, "soup", [1, 5])  # two fine-tunes of relabel:1: metrics on relabel:1
    assert soup.hparams["task_variant"] == ["relabel:1"] and soup.task.info["variant"] == "relabel:1"


def test_benchmark_merges_tasks_end_to_end(tmp_path):
    bench = load_script("benchmark_merge")
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump(pretrain_raw()))
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(tasks_raw("elsewhere.h5")))  # init.from is pointed here
    plot = tmp_path / "plot.png"
    args = ["--tasks", "--work-dir", str(tmp_path / "work"), "--pretrain-config", str(tmp_path / "pre.yaml"),
            "--tasks-config", str(tmp_path / "tasks.yaml"), "--ks", "2,4", "--seeds", "2", "--plot", str(plot)]
    res = bench.main(args)
    assert res["tasks"] == VARIANTS and res["fine_tunes_per_task"] == 2 and plot.stat().st_size > 0
    for k in ("2", "4"):
        r = res["merge"][k]
        assert set(r) == {*bench.TASK_MERGES, "pretrained", "fine-tuned"}
        assert r["fine-tuned"]["normalized"] == 1.0
        assert all(0 <= r[m]["acc"] <= 1 for m in r)
        assert all(lam in bench.SUM_LAMBDAS for lam in r["task arithmetic"]["lambdas"])
    assert set(res["soups"]["per_task"]) == set(VARIANTS)
    assert bench.main(args)["merge"] == res["merge"]  # the zoos are reused, and the figures are the same
    with pytest.raises(InputError, match=r"--ks: expected numbers of tasks in \[2, 4\]"):
        bench.main(args[:-4] + ["--ks", "8"])


def test_variants_apply_to_mnist1d_signals():
    task = load_task("mnist1d", num_samples=200, n_val=20)
    assert torch.equal(variant_view(task, "flip").x_test, task.x_test.flip(-1))  # [N, 40]: time reversed
    subset = variant_view(task, "classes:0-4+relabel:1")
    assert set(subset.y_train.tolist()) == set(variant_view(task, "relabel:1").y_train[task.y_train < 5].tolist())

"""The compiled INR fitting step (zoo.fused): the same numbers as the eager step, a clear fallback
when compiling fails, and WSL_COMPILE=0 honoured."""
import os

import pytest
import torch

from zoo import fused
from zoo.architectures import build_spec
from zoo.mlp_step import MLPPopulation, mlp_population_step
from zoo.train import initial_params


def siren_problem(M=6, P=50, hidden=(16, 16), seed=0):
    spec = build_spec("siren", input_shape=[2], output_dim=1, hidden=list(hidden), omega_0=30)
    g = torch.Generator().manual_seed(seed)
    params = [torch.stack(p) for p in zip(*[initial_params(spec, i, 1.0) for i in range(M)])]
    x = torch.rand(P, 2, generator=g) * 2 - 1
    t = torch.rand(M, P, 1, generator=g) * 2 - 1
    scale = torch.full((M,), 1.0 / P)
    scale[1] = 0.0  # a frozen model gets zero gradients
    return spec, params, x, t, scale


def autograd_reference(spec, params, x, t, scale):
    """The same loss and gradients through torch.autograd on an unfused forward."""
    ps = [p.clone().requires_grad_(True) for p in params]
    net = MLPPopulation(len(spec.layers), "sine", 30.0)
    out, _ = net.forward(ps, x)
    sq = (out - t).square().sum((1, 2))
    grads = torch.autograd.grad((sq * scale).sum(), ps)
    return sq / t[0].numel(), grads


def test_eager_step_matches_autograd():
    spec, params, x, t, scale = siren_problem()
    net, step = mlp_population_step(spec)
    mse, grads = step(params, x, t, scale, compile=False)
    ref_mse, ref_grads = autograd_reference(spec, params, x, t, scale)
    torch.testing.assert_close(mse, ref_mse.detach())
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    assert all(float(g[1].abs().max()) == 0.0 for g in grads)


def test_compiled_step_matches_eager(monkeypatch):
    monkeypatch.setenv("WSL_COMPILE", "1")
    spec, params, x, t, scale = siren_problem()
    net, step = mlp_population_step(spec)
    eager_mse, eager_grads = step(params, x, t, scale, compile=False)
    mse, grads = step(params, x, t, scale, compile=True)
    if step._failed:
        pytest.skip("torch.compile is unavailable here (the fallback test covers this case)")
    torch.testing.assert_close(mse, eager_mse, rtol=1e-5, atol=1e-6)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    # another population size reuses the dynamic-shape compilation and still agrees
    spec, params, x, t, scale = siren_problem(M=3, P=40, seed=1)
    mse, grads = step(params, x, t, scale, compile=True)
    eager_mse, eager_grads = step(params, x, t, scale, compile=False)
    torch.testing.assert_close(mse, eager_mse, rtol=1e-5, atol=1e-6)


def test_failed_compile_warns_once_and_runs_eagerly(monkeypatch):
    monkeypatch.setenv("WSL_COMPILE", "1")

    def broken_compile(fn, **kw):
        def run(*a):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    calls = []
    step = fused.FusedStep(lambda a: calls.append(1) or a * 2, "a test step")
    with pytest.warns(RuntimeWarning, match="torch.compile of a test step failed.*no C\\+\\+ compiler"):
        out = step(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0)) and len(calls) == 1
    step(torch.ones(3))  # no second warning: the eager function serves from now on
    assert len(calls) == 2 and step._failed


def test_wsl_compile_0_never_compiles(monkeypatch):
    monkeypatch.setenv("WSL_COMPILE", "0")
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("torch.compile was called"))
    step = fused.FusedStep(lambda a: a + 1, "a test step")
    assert torch.equal(step(torch.zeros(2)), torch.ones(2))
    assert not fused.compile_enabled()


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_compiled_optimizer_matches_eager(monkeypatch, kind):
    """Three updates of a population (one model inactive) through the compiled and the eager update."""
    from zoo.optim import PopulationOptimizer
    monkeypatch.setenv("WSL_COMPILE", "1")
    g = torch.Generator().manual_seed(3)
    M = 5
    start = [torch.randn(M, 4, 3, generator=g), torch.randn(M, 4, generator=g)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    active = torch.tensor([True, False, True, True, True])
    results = []
    for compile in (False, True):
        params = [p.clone() for p in start]
        opt = PopulationOptimizer(params, [kind] * M, torch.linspace(0.01, 0.05, M), torch.full((M,), 0.01),
                                  torch.full((M,), 0.9))
        for gr in grads:
            opt.step(gr, active, compile=compile)
        results.append(params)
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    assert torch.equal(results[1][0][1], start[0][1])  # the inactive model is untouched


@pytest.mark.parametrize("env,mode", [(None, "auto"), ("0", "off"), ("off", "off"), ("1", "on"), ("yes", "on"),
                                      ("auto", "auto")])
def test_compile_mode_from_the_environment(monkeypatch, env, mode):
    if env is None:
        monkeypatch.delenv("WSL_COMPILE", raising=False)
    else:
        monkeypatch.setenv("WSL_COMPILE", env)
    assert fused.compile_mode() == mode
    big, small = fused.MIN_RUN_COMPILED_WORK, fused.MIN_RUN_COMPILED_WORK / 10
    assert fused.run_worth_compiling(big) == (mode != "off")
    assert fused.run_worth_compiling(small) == (mode == "on")  # a small run compiles only when asked to


@pytest.mark.parametrize("env,compiled", [(None, False), ("1", True)])
def test_a_small_run_trains_eagerly_unless_asked(monkeypatch, tmp_path, env, compiled):
    """The decision is the run's, from its config: a demo-sized zoo would spend more on compiling
    than it saves; WSL_COMPILE=1 compiles wherever the tensors are large enough."""
    from zoo import generate as gen
    from zoo.config import parse_config
    from zoo.train import training_work

    if env is None:
        monkeypatch.delenv("WSL_COMPILE", raising=False)
    else:
        monkeypatch.setenv("WSL_COMPILE", env)
    seen = []
    real = gen.train_population

    def spy(*args, **kwargs):
        seen.append(kwargs["compile"])
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "train_population", spy)
    config = parse_config({"name": "tiny", "num_models": 4, "epochs": 1, "task": {"name": "digits"},
                           "architecture": {"name": "mlp", "hidden": [4], "activation": "relu"},
                           "hparams": {"data_fraction": {"uniform": [0.2, 1.0]}}})
    gen.generate(config, tmp_path / "z.h5", progress=False, log=lambda s: None)
    assert seen == [compiled]
    task, spec = gen.build_task_and_spec(config)
    hp = gen.sample_hparams(config, range(4))
    work = training_work(spec, task.x_train.shape[0], hp["data_fraction"], 1)
    want = sum(max(1, round(f * task.x_train.shape[0])) for f in hp["data_fraction"]) * (64 + 4 + 10)
    assert work == want and work < fused.MIN_RUN_COMPILED_WORK


def test_the_compile_decision_is_the_whole_zoos(monkeypatch, tmp_path):
    """A shard (or a resumed run) decides as the whole zoo does: its models must be the ones the
    unsharded, uninterrupted run makes, and compiled steps round differently from eager ones."""
    from zoo import generate as gen
    from zoo.config import parse_config
    from zoo.train import training_work

    monkeypatch.delenv("WSL_COMPILE", raising=False)
    config = parse_config({"name": "tiny", "num_models": 4, "epochs": 1, "task": {"name": "digits"},
                           "architecture": {"name": "mlp", "hidden": [4], "activation": "relu"}})
    task, spec = gen.build_task_and_spec(config)
    whole = training_work(spec, task.x_train.shape[0], [1.0] * 4, 1)
    monkeypatch.setattr(fused, "MIN_RUN_COMPILED_WORK", whole * 0.75)  # the zoo earns it, half of it would not
    seen = []
    real = gen.train_population
    monkeypatch.setattr(gen, "train_population", lambda *a, **k: seen.append(k["compile"]) or real(*a, **k))
    gen.generate(config, tmp_path / "shard.h5", shard=(0, 2), progress=False, log=lambda s: None)
    gen.generate(config, tmp_path / "whole.h5", progress=False, log=lambda s: None, max_chunks=0)
    gen.generate(config, tmp_path / "whole.h5", progress=False, log=lambda s: None)  # resumed
    assert seen == [True, True]


def test_compiled_steps_are_cached_in_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert fused.inductor_cache_dir() == tmp_path / "wsl" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "wsl" / "inductor")
    mine = tmp_path / "mine"  # a folder the user chose wins
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(mine))
    assert fused.inductor_cache_dir() == mine

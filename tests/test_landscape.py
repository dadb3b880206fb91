"""Sharpness and representation similarity held to exact references on tiny networks."""
import math

import numpy as np

import pytest
import torch

from wsl.landscape.sharpness import hessian_trace, top_eigenvalue
from wsl.landscape.similarity import (hidden_representations, linear_cka, network_statistics, pairwise_cka,
                                      weight_norms)
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute, random_permutations
from zoo.architectures import cnn, mlp, population_init
from zoo.errors import InputError
from zoo.functional import population_forward
from zoo.tasks import TaskData
from zoo.train import per_example_loss


def _task(kind: str, input_shape=(4,), out=3, n=24, seed=0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, *input_shape, generator=g) for _ in range(3)]
    if kind == "classification":
        ys = [torch.randint(0, out, (n,), generator=g) for _ in range(3)]
    else:
        ys = [torch.randn(n, out, generator=g) for _ in range(3)]
    return TaskData("tiny", kind, input_shape, out, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2])


def _params(spec, M, seed=0, scale=1.5):
    return [p.double() for p in population_init(spec, list(range(seed, seed + M)), [scale] * M)]


def _exact_hessian(spec, params, m, task, activation=None):
    """torch.func.hessian of network m's mean loss on the task's training set, over its flat parameters."""
    shapes = [p.shape[1:] for p in params]
    flat0 = torch.cat([p[m].flatten() for p in params])

    def loss(flat):
        ps, at = [], 0
        for s in shapes:
            k = math.prod(s)
            ps.append(flat[at:at + k].view(1, *s))
            at += k
        out = population_forward(spec, ps, task.x_train.double(), activation=activation)
        y = task.y_train.unsqueeze(0) if task.kind == "classification" else task.y_train.double().unsqueeze(0)
        return per_example_loss(task, out, y).mean()

    return torch.func.hessian(loss)(flat0)


def _y(task):
    return task.y_train if task.kind == "classification" else task.y_train.double()


@pytest.mark.parametrize("kind,act", [("classification", "tanh"), ("regression", "relu")])
def test_hutchinson_mean_matches_exact_trace_within_its_variance(kind, act):
    spec = mlp((4,), 3, hidden=[5], activation=act)
    task = _task(kind)
    params = _params(spec, 2)
    probes = 3000
    est = hessian_trace(spec, params, task, task.x_train.double(), _y(task), probes=probes, seed=1)
    for m in range(2):
        H = _exact_hessian(spec, params, m, task)
        off = H - torch.diag(torch.diag(H))
        sd = math.sqrt(2 * off.square().sum().item() / probes)  # Rademacher: Var vᵀHv = 2 Σ_{i≠j} H_ij²
        assert sd > 1e-3  # a real test: the off-diagonal makes single probes noisy
        assert abs(est[m].item() - torch.trace(H).item()) <= 5 * sd


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # Every probe gives the exact trace when H is diagonal: a linear model with squared error on one
    # input has H = 2 [[mean x², mean x], [mean x, 1]], diagonal for centred x.
    spec = mlp((1,), 1, hidden=[], activation="identity")
    x = torch.tensor([[-1.0], [1.0], [-2.0], [2.0]], dtype=torch.float64)
    task = TaskData("lin", "regression", (1,), 1, x.float(), torch.zeros(4, 1), x.float(), torch.zeros(4, 1),
                    x.float(), torch.zeros(4, 1))
    params = _params(spec, 3)
    est = hessian_trace(spec, params, task, x, torch.zeros(4, 1, dtype=torch.float64), probes=1)
    assert torch.allclose(est, torch.full((3,), 2 * (x.square().mean().item() + 1), dtype=torch.float64))


@pytest.mark.parametrize("kind,act", [("classification", "tanh"), ("regression", "relu")])
def test_power_iteration_matches_the_exact_top_eigenvalue(kind, act):
    spec = mlp((4,), 3, hidden=[5], activation=act)
    task = _task(kind)
    params = _params(spec, 3, scale=2.0)
    eig, used = top_eigenvalue(spec, params, task, task.x_train.double(), _y(task), iters=1000, tol=1e-10)
    for m in range(3):
        ev = torch.linalg.eigvalsh(_exact_hessian(spec, params, m, task))
        assert ev[-1] >= -ev[0]  # the largest eigenvalue is also the largest in magnitude here
        assert eig[m].item() == pytest.approx(ev[-1].item(), rel=1e-4)
    assert bool((used <= 1000).all()) and bool((used > 1).all())


def _cnn_case():
    spec = cnn((1, 5, 5), 3, channels=[2, 3], kernel=3, activation=None)
    task = _task("classification", input_shape=(1, 5, 5), n=10)
    return spec, task, _params(spec, 4)


def test_cnn_trace_and_top_eigenvalue_match_the_exact_hessian():
    spec, task, params = _cnn_case()
    x, y = task.x_train.double(), _y(task)
    probes = 2000
    tr = hessian_trace(spec, [p[:2] for p in params], task, x, y, probes=probes, activation="tanh")
    eig, _ = top_eigenvalue(spec, [p[:2] for p in params], task, x, y, iters=2000, tol=1e-12, activation="tanh")
    for m in range(2):
        H = _exact_hessian(spec, params, m, task, activation="tanh")
        off = H - torch.diag(torch.diag(H))
        assert abs(tr[m].item() - torch.trace(H).item()) <= 5 * math.sqrt(2 * off.square().sum().item() / probes)
        ev = torch.linalg.eigvalsh(H)
        top = ev[-1] if ev[-1] >= -ev[0] else ev[0]
        assert eig[m].item() == pytest.approx(top.item(), rel=1e-4)


def test_batched_results_equal_per_network_ones():
    for spec, task, params, act in [
        (mlp((4,), 3, hidden=[5, 4], activation=None), _task("classification"), None, ["relu", "tanh", "tanh", "relu"]),
        (*_cnn_case(), ["tanh", "relu", "relu", "tanh"]),
    ]:
        params = params or _params(spec, 4)
        x, y = task.x_train.double(), _y(task)
        tr = hessian_trace(spec, params, task, x, y, probes=4, seed=3, activation=act)
        per_network_targets = y.unsqueeze(0).expand(4, *y.shape)  # [M, B]: the same labels for each
        assert torch.equal(hessian_trace(spec, params, task, x, per_network_targets, probes=4, seed=3,
                                         activation=act), tr)
        eig, used = top_eigenvalue(spec, params, task, x, y, iters=50, tol=1e-6, seed=3, activation=act)
        for m in range(4):
            one = [p[m:m + 1] for p in params]
            assert torch.allclose(hessian_trace(spec, one, task, x, y, probes=4, seed=3, activation=act[m]),
                                  tr[m:m + 1], rtol=1e-9, atol=1e-12)
            e1, u1 = top_eigenvalue(spec, one, task, x, y, iters=50, tol=1e-6, seed=3, activation=act[m])
            assert torch.allclose(e1, eig[m:m + 1], rtol=1e-9, atol=1e-12) and int(u1) == int(used[m])


def test_trace_and_top_eigenvalue_are_invariant_under_hidden_neuron_permutation():
    spec = mlp((4,), 3, hidden=[5, 4], activation="tanh")
    task = _task("classification")
    params = _params(spec, 3)
    perm = permute(WeightBatch.from_params(spec, params),
                   random_permutations(spec, 3, torch.Generator().manual_seed(5))).params()
    x, y = task.x_train.double(), _y(task)
    e0, _ = top_eigenvalue(spec, params, task, x, y, iters=2000, tol=1e-12)
    e1, _ = top_eigenvalue(spec, perm, task, x, y, iters=2000, tol=1e-12)
    assert torch.allclose(e0, e1, rtol=1e-5)
    probes = 2000
    t1 = hessian_trace(spec, perm, task, x, y, probes=probes, seed=9)
    for m in range(3):
        H = _exact_hessian(spec, params, m, task)
        assert torch.trace(_exact_hessian(spec, perm, m, task)).item() == pytest.approx(torch.trace(H).item(), rel=1e-9)
        off = H - torch.diag(torch.diag(H))
        sd = math.sqrt(2 * off.square().sum().item() / probes)
        assert abs(t1[m].item() - torch.trace(H).item()) <= 5 * sd


def test_bad_input_raises_one_line():
    spec = mlp((4,), 3, hidden=[5], activation="relu")
    task = _task("classification")
    params = _params(spec, 2)
    with pytest.raises(InputError, match="probes"):
        hessian_trace(spec, params, task, task.x_train.double(), task.y_train, probes=0)
    with pytest.raises(InputError, match="targets"):
        hessian_trace(spec, params, task, task.x_train.double(), task.y_train[None].expand(3, -1))
    with pytest.raises(InputError, match="layers.0.weight"):
        top_eigenvalue(spec, [params[0][:, :2], *params[1:]], task, task.x_train.double(), task.y_train)


# --- representation similarity -----------------------------------------------------------------

def test_hidden_representations_feed_the_output_and_leave_forward_unchanged():
    spec = mlp((4,), 3, hidden=[5, 4], activation=None)
    params = _params(spec, 4)
    x = _task("classification").x_train.double()
    act = ["relu", "tanh", "relu", "tanh"]
    hidden = []
    out = population_forward(spec, params, x, activation=act, hidden=hidden)
    assert torch.equal(out, population_forward(spec, params, x, activation=act))
    assert [tuple(h.shape) for h in hidden] == [(4, 24, 5), (4, 24, 4)]
    assert torch.allclose(out, hidden[1] @ params[4].transpose(1, 2) + params[5].unsqueeze(1))
    spec_c, task_c, params_c = _cnn_case()
    reps = hidden_representations(spec_c, params_c, task_c.x_train.double(), activation="relu")
    assert [tuple(h.shape) for h in reps] == [(4, 10, 2 * 3 * 3), (4, 10, 3 * 2 * 2)]  # stride 2, padding 1


def test_linear_cka_against_hand_computation():
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [0.0], [2.0]])
    assert linear_cka(x[None], y[None]).item() == pytest.approx(0.25)  # squared correlation 1/2
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    y = torch.tensor([[1.0], [1.0], [-2.0]])
    # ‖YᵀX‖² = 18, ‖XᵀX‖ = √10, ‖YᵀY‖ = 6
    assert linear_cka(x[None], y[None]).item() == pytest.approx(18 / (6 * math.sqrt(10)))
    with pytest.raises(InputError, match="linear_cka"):
        linear_cka(x[None], y[None, :2])


def test_cka_with_itself_and_a_permuted_copy_is_one():
    spec = mlp((4,), 3, hidden=[5, 4], activation="tanh")
    params = _params(spec, 3)
    perm = permute(WeightBatch.from_params(spec, params),
                   random_permutations(spec, 3, torch.Generator().manual_seed(2))).params()
    x = _task("classification", n=40).x_train.double()
    assert torch.allclose(pairwise_cka(spec, params, params, x), torch.ones(3, 2, dtype=torch.float32))
    assert torch.allclose(pairwise_cka(spec, params, perm, x), torch.ones(3, 2, dtype=torch.float32))
    other = pairwise_cka(spec, params, [p.roll(1, 0) for p in params], x)  # different networks
    assert bool((other < 0.999).all()) and bool((other >= 0).all())
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))  # any orthogonal transform
    h = hidden_representations(spec, params, x)[0]
    assert torch.allclose(linear_cka(h, h @ q), torch.ones(3))


def test_network_statistics():
    spec = mlp((4,), 3, hidden=[5], activation="relu")
    task = _task("classification")
    params = [p.float() for p in _params(spec, 2)]
    stats = network_statistics(spec, params, task)
    norms = weight_norms(spec, params)
    assert torch.allclose(stats["norm/total"], torch.cat([p.flatten(1) for p in params], 1).norm(dim=1))
    assert torch.allclose(stats["norm/layers.0.weight"], norms["layers.0.weight"])
    out = population_forward(spec, params, task.x_test)
    assert torch.allclose(stats["test_acc"], (out.argmax(-1) == task.y_test).float().mean(1))
    assert torch.allclose(stats["acc_gap"], stats["train_acc"] - stats["test_acc"])
    assert torch.allclose(stats["loss_gap"], stats["test_loss"] - stats["train_loss"])
    assert "acc_gap" not in network_statistics(spec, params, _task("regression"))


# --- annotating a zoo file -----------------------------------------------------------------------

ANNOTATE_ZOO = {"name": "annotate", "seed": 5, "num_models": 8, "epochs": 2, "checkpoints": [0, 2],
                "task": {"name": "digits", "n_train": 200, "n_val": 97},
                "architecture": {"name": "mlp", "hidden": [6, 5]},
                "hparams": {"lr": {"grid": [0.05, 0.1, 0.2, 1e6]}, "optimizer": "sgd", "momentum": 0.9,
                            "activation": {"choice": ["relu", "tanh"]}, "init_scale": {"uniform": [0.5, 2.0]}},
                "training": {"chunk_size": 8}}


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    import shutil

    from conftest import generate_zoo
    from wsl.cli.main import main

    path = generate_zoo(ANNOTATE_ZOO, tmp_path_factory.mktemp("annotate") / "zoo.h5")
    before = str(path) + ".before.h5"
    shutil.copy(path, before)
    assert main(["zoo", "annotate", path, "--hessian", "--cka", "--probes", "4", "--iters", "20",
                 "--examples", "64"]) == 0
    return path, before


def test_annotate_writes_what_the_estimators_give(annotated):
    from wsl.data.task import source_task
    from zoo.store import Zoo

    path, _ = annotated
    with Zoo(path) as z:
        assert z.annotation_names == ["cka_mean", "hessian_top_eig", "hessian_trace"]
        rows, spec = z.select(), z.spec
        assert 0 < len(rows) < len(z)  # lr 1e6 diverges: those runs are not annotated
        trace = z.column("hessian_trace")
        assert np.isnan(np.delete(trace, rows)).all() and np.isfinite(trace[rows]).all()
        assert np.isfinite(z.annotation("cka_mean")[rows]).all()
        assert z.annotation_info("hessian_trace")["checkpoint_epoch"] == 2
        w = z.batch(rows, -1)
        act = [str(a) for a in z.hparam("activation")[rows]]
        task = source_task(z.config)
        assert list(z.select(hessian_trace=(float(np.nanmedian(trace)), None))) == \
            [r for r in rows if trace[r] >= np.nanmedian(trace)]
    params = [w[p.name].float() for p in spec.params]
    want = hessian_trace(spec, params, task, task.x_train[:64], task.y_train[:64], probes=4, activation=act)
    assert np.allclose(trace[rows], want.numpy(), rtol=1e-5, atol=1e-6)


def test_annotations_are_predictor_targets_and_older_files_read_as_before(annotated):
    from wsl.data.datamodule import PropertyDataModule
    from wsl.data.runs import ZooRuns
    from zoo.errors import UnknownNameError
    from zoo.store import Zoo

    path, before = annotated
    assert _summary(path).count("(annotation, epoch 2)") == 3
    runs = ZooRuns(path)
    assert runs.kind(0, "hessian_top_eig") == "annotation"
    dm = PropertyDataModule(zoos=[path], target="hessian_trace")
    assert dm.task_type == "regression"
    with Zoo(before) as z:
        assert z.annotation_names == []
        with pytest.raises(UnknownNameError, match="neither"):
            z.column("hessian_trace")
    with pytest.raises(UnknownNameError, match="wsl zoo annotate"):
        ZooRuns(before).kind(0, "hessian_trace")


def _summary(path) -> str:
    from zoo.store import Zoo

    with Zoo(path) as z:
        return z.summary()


def test_annotate_needs_something_to_compute(annotated):
    from wsl.landscape.annotate import annotate_zoo

    with pytest.raises(InputError, match="nothing to compute"):
        annotate_zoo(annotated[0], hessian=False, cka=False)

"""NG-GNN and DWSNet: invariance / equivariance to hidden permutations, gradients, a tiny overfit."""
import time

import pytest
import torch

from zoo.architectures import build_spec
from wsl.nn.dwsnet import DWSLayer, DWSNetEncoder, weight_space_tensors
from wsl.nn.ngnn import NGGNN
from wsl.weights import WeightBatch

MLP = build_spec("mlp", (4,), 3, hidden=[6, 5])
CNN = build_spec("cnn", (1, 8, 8), 3, channels=[3, 4])


def random_batch(spec, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return WeightBatch.from_flat(spec, 0.5 * torch.randn(B, spec.num_params, generator=g))


def random_perms(spec, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randperm(spec.groups[name], generator=g) for name in spec.permutable}


def permute_tensors(spec, tensors, perms, lead=1):
    """Permute hidden neurons of tensors in ``spec.params`` order with ``lead`` leading axes
    (batch, channels): a layer's out axis and bias together, and the next layer's in axis."""
    out, it = [], iter(tensors)
    for layer in spec.layers:
        w = next(it)
        if layer.out_group in perms:
            w = w.index_select(lead, perms[layer.out_group])
        if layer.in_group in perms:
            w = w.index_select(lead + 1, perms[layer.in_group])
        out.append(w)
        if layer.bias:
            b = next(it)
            out.append(b.index_select(lead, perms[layer.out_group]) if layer.out_group in perms else b)
    return out


def permute(wb, perms):
    return WeightBatch.from_params(wb.spec, permute_tensors(wb.spec, wb.params(), perms))


def make(name, spec, out_dim=2, **kw):
    torch.manual_seed(0)
    if name == "ngnn":
        return NGGNN(spec, out_dim, **{"hidden": 32, "layers": 2, "heads": 2, **kw})
    return DWSNetEncoder(spec, out_dim, **{"channels": 8, "layers": 2, "head_hidden": 64, **kw})


@pytest.fixture(autouse=True)
def single_thread():
    """These models run many small ops: one thread avoids thread hand-off costs on shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield n
    torch.set_num_threads(n)


CASES = [("ngnn", MLP), ("ngnn", CNN), ("dwsnet", MLP)]
IDS = ["ngnn-mlp", "ngnn-cnn", "dwsnet-mlp"]


@pytest.mark.parametrize("name,spec", CASES, ids=IDS)
def test_invariant_to_hidden_permutations(name, spec):
    model = make(name, spec).eval()
    wb = random_batch(spec, 6)
    with torch.no_grad():
        y = model(wb)
        for seed in range(3):
            yp = model(permute(wb, random_perms(spec, seed)))
            assert torch.allclose(y, yp, atol=1e-4), (y - yp).abs().max()
    assert (y[1:] - y[:1]).abs().max() > 1e-3  # different networks, different codes


def test_ngnn_tells_fixed_neurons_apart():
    """Swapping two *input* neurons is not a symmetry: the positional embeddings must see it."""
    model = make("ngnn", MLP).eval()
    wb = random_batch(MLP, 4)
    swapped = WeightBatch(MLP, [wb.weights[0][:, :, [1, 0, 2, 3]], *wb.weights[1:]], wb.biases)
    with torch.no_grad():
        assert (model(wb) - model(swapped)).abs().max() > 1e-4


def dws_inputs(spec, B, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, C, *shape, generator=g) for _, shape in
            [(n, spec.param(n).shape) for n, _ in weight_space_tensors(spec)]]


def test_dws_layer_is_equivariant_and_not_trivial():
    torch.manual_seed(1)
    layer = DWSLayer(MLP, 2, 3)
    xs = dws_inputs(MLP, 4, 2)
    ys = layer(xs)
    assert [tuple(y.shape) for y in ys] == [(4, 3, *x.shape[2:]) for x in xs]
    for seed in range(3):
        perms = random_perms(MLP, seed)
        ys_p = layer(permute_tensors(MLP, xs, perms, lead=2))
        for a, b in zip(ys_p, permute_tensors(MLP, ys, perms, lead=2)):
            assert torch.allclose(a, b, atol=1e-5)
        # equivariant, not invariant: the hidden outputs move with the permutation
        assert any((a - y).abs().max() > 1e-3 for a, y in zip(ys_p, ys))
    # the input axis is not a symmetry: permuting it does not commute with the layer (per-index parameters)
    p0 = torch.tensor([1, 0, 2, 3])
    xs_in = [xs[0][:, :, :, p0], *xs[1:]]
    assert (layer(xs_in)[0] - ys[0][:, :, :, p0]).abs().max() > 1e-3


def test_dws_layer_couples_all_layers():
    """Inter-layer blocks: changing the last layer's weights changes every output tensor, including
    the first layer's weights and biases, and changing a bias changes the weights."""
    torch.manual_seed(2)
    layer = DWSLayer(MLP, 2, 2)
    xs = dws_inputs(MLP, 2, 2)
    ys = layer(xs)
    for k in (4, 5, 1):  # layers.2.weight, layers.2.bias, layers.0.bias
        moved = [x + (5.0 if i == k else 0.0) for i, x in enumerate(xs)]
        for u, (a, b) in enumerate(zip(layer(moved), ys)):
            assert (a - b).abs().max() > 1e-4, (k, u)


def test_dwsnet_rejects_cnn_weight_spaces():
    with pytest.raises(ValueError, match="conv2d"):
        DWSNetEncoder(CNN, 2)
    with pytest.raises(ValueError, match="MLP weight spaces only"):
        DWSLayer(CNN, 1, 4)


@pytest.mark.parametrize("name,spec", CASES, ids=IDS)
def test_gradients_reach_all_parameters(name, spec):
    model = make(name, spec)
    wb = random_batch(spec, 4)
    out = model(wb)
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


@pytest.mark.parametrize("name,spec", CASES, ids=IDS)
def test_tiny_overfit(name, spec):
    model = make(name, spec)
    wb = random_batch(spec, 16, seed=5)
    y = torch.randn(16, 2, generator=torch.Generator().manual_seed(6))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(model(wb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


@pytest.mark.parametrize("name", ["ngnn", "dwsnet"])
def test_throughput(name):
    """Prints forward+backward networks/s at B=64 on an MLP 64-32-32-10 weight space (not asserted;
    one thread, since shared cores make multi-threaded timings swing tenfold)."""
    spec = build_spec("mlp", (64,), 10, hidden=[32, 32])
    torch.manual_seed(0)
    model = NGGNN(spec, 8, hidden=64) if name == "ngnn" else DWSNetEncoder(spec, 8, channels=16)
    model(random_batch(spec, 4)).sum().backward()  # warm-up
    wb = random_batch(spec, 64)
    steps = 1 if name == "ngnn" else 3
    t = time.perf_counter()
    for _ in range(steps):
        model(wb).sum().backward()
    dt = time.perf_counter() - t
    print(f"\n{name}: {64 * steps / dt:.0f} networks/s forward+backward (threads={torch.get_num_threads()}, "
          f"B=64, MLP 64-32-32-10, {sum(p.numel() for p in model.parameters())} parameters)")

"""Permutation and scaling symmetries leave network functions unchanged; weight matching undoes permutations."""
import pytest
import torch

from wsl.weights.align import align, canonical_permutations, match_permutations, matching_objective
from wsl.weights.symmetry import (invert_permutations, permute, random_permutations, random_scales, scale,
                          scaling_symmetry)
from wsl.weights import WeightBatch
from zoo.architectures import build_spec
from zoo.functional import population_forward
from zoo.train import initial_params

B = 4

# name -> (architecture, input_shape, options); float64 so that function equality is tight
CASES = {
    "mlp_relu": ("mlp", (5,), {"hidden": [6, 7], "activation": "relu"}),
    "mlp_tanh": ("mlp", (5,), {"hidden": [6, 7], "activation": "tanh"}),
    "cnn_relu": ("cnn", (1, 8, 8), {"channels": [3, 4], "stride": 2, "activation": "relu"}),
    "siren": ("siren", (2,), {"hidden": [8, 8], "omega_0": 30.0}),
}


def make(arch, input_shape, options, n=B, seed=0, output_dim=3):
    spec = build_spec(arch, input_shape, output_dim, **options)
    nets = [initial_params(spec, seed + i, 1.0) for i in range(n)]
    params = [torch.stack(ts).double() for ts in zip(*nets)]
    return spec, WeightBatch.from_params(spec, params)


def inputs(spec, n=16, seed=1):
    return torch.randn(n, *spec.input_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def outputs(wb, x, activation=None):
    return population_forward(wb.spec, wb.params(), x, activation=activation)


def differs(a, b):
    return any(not torch.equal(s, t) for s, t in zip(a.params(), b.params()))


def assert_same_weights(a, b, **tol):
    for s, t in zip(a.params(), b.params()):
        if tol:
            torch.testing.assert_close(s, t, **tol)
        else:
            assert torch.equal(s, t)


@pytest.mark.parametrize("case", list(CASES))
def test_permutation_preserves_function_and_inverts(case):
    spec, wb = make(*CASES[case])
    x = inputs(spec)
    perms = random_permutations(spec, B, generator=torch.Generator().manual_seed(3))
    assert set(perms) == set(spec.permutable)
    for g, p in perms.items():
        assert p.shape == (B, spec.groups[g])
        assert torch.equal(p.sort(1).values, torch.arange(spec.groups[g]).expand(B, -1))
    moved = permute(wb, perms)
    assert differs(moved, wb)
    torch.testing.assert_close(outputs(moved, x), outputs(wb, x), rtol=1e-10, atol=1e-10)
    assert_same_weights(permute(moved, invert_permutations(perms)), wb)


def test_permute_convention_new_neuron_j_is_old_neuron_perm_j():
    spec, wb = make(*CASES["mlp_relu"])
    perms = random_permutations(spec, B, generator=torch.Generator().manual_seed(4))
    moved = permute(wb, perms)
    p0, p1 = perms["hidden0"], perms["hidden1"]
    for b in range(B):
        assert torch.equal(moved.weights[0][b], wb.weights[0][b][p0[b]])
        assert torch.equal(moved.biases[0][b], wb.biases[0][b][p0[b]])
        assert torch.equal(moved.weights[1][b], wb.weights[1][b][p1[b]][:, p0[b]])
        assert torch.equal(moved.weights[2][b], wb.weights[2][b][:, p1[b]])
        assert torch.equal(moved.biases[2][b], wb.biases[2][b])


def test_permutations_differ_between_networks_and_reject_fixed_groups():
    spec, wb = make(*CASES["mlp_relu"], n=8)
    p = random_permutations(spec, 8, generator=torch.Generator().manual_seed(0))["hidden1"]
    assert len({tuple(r.tolist()) for r in p}) > 1
    with pytest.raises(ValueError, match="not a hidden"):
        permute(wb, {"output": torch.arange(3).repeat(8, 1)})


@pytest.mark.parametrize("case", list(CASES))
def test_scaling_preserves_function(case):
    spec, wb = make(*CASES[case])
    x = inputs(spec)
    scales = random_scales(spec, B, generator=torch.Generator().manual_seed(5))
    kind = scaling_symmetry(spec.activation)
    for s in scales.values():
        if kind == "positive":
            assert (s > 0).all() and (s - 1).abs().max() > 0.1
            assert s.log().min() >= -1 and s.log().max() <= 1
        else:
            assert set(s.unique().tolist()) == {-1.0, 1.0}
    moved = scale(wb, scales)
    assert differs(moved, wb)
    torch.testing.assert_close(outputs(moved, x), outputs(wb, x), rtol=1e-10, atol=1e-10)


def test_scaling_of_the_wrong_kind_changes_the_function():
    """Positive rescaling is not a symmetry of tanh: the check above has the power to fail."""
    spec, wb = make(*CASES["mlp_tanh"])
    x = inputs(spec)
    moved = scale(wb, random_scales(spec, B, "relu", generator=torch.Generator().manual_seed(5)))
    assert (outputs(moved, x) - outputs(wb, x)).abs().max() > 1e-3


def test_siren_permutation_then_sign_flip_preserves_function():
    """Both SIREN symmetries at once; flipping only a neuron's incoming weights and bias (not its
    outgoing weights) must change the function, so the check can fail."""
    spec, wb = make(*CASES["siren"])
    assert spec.activation == "sine"
    x = inputs(spec)
    perms = random_permutations(spec, B, generator=torch.Generator().manual_seed(8))
    signs = random_scales(spec, B, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    moved = scale(permute(wb, perms), signs)
    assert differs(moved, permute(wb, perms))
    torch.testing.assert_close(outputs(moved, x), outputs(wb, x), rtol=1e-10, atol=1e-10)
    flip0 = scale(wb, {"hidden0": signs["hidden0"]})
    assert (signs["hidden0"] < 0).any(1).all()
    half = WeightBatch(spec, [flip0.weights[0], *wb.weights[1:]], [flip0.biases[0], *wb.biases[1:]])
    torch.testing.assert_close(outputs(flip0, x), outputs(wb, x), rtol=1e-10, atol=1e-10)
    assert (outputs(half, x) - outputs(wb, x)).abs().max() > 1e-3


def test_per_model_activations():
    acts = ["relu", "tanh", "tanh", "relu"]
    spec, wb = make("mlp", (5,), {"hidden": [6, 7], "activation": None})
    assert spec.activation is None
    scales = random_scales(spec, B, acts, generator=torch.Generator().manual_seed(6))
    for s in scales.values():
        for b, a in enumerate(acts):
            if a == "relu":
                assert (s[b] > 0).all() and not set(s[b].tolist()) <= {1.0}
            else:
                assert set(s[b].tolist()) <= {-1.0, 1.0}
    moved = scale(wb, scales)
    x = inputs(spec)
    for b, a in enumerate(acts):
        torch.testing.assert_close(outputs(moved[b], x, a), outputs(wb[b], x, a), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="per-model activation"):
        random_scales(spec, B)


def test_scaling_symmetry_kinds_and_no_op_for_sigmoid():
    assert scaling_symmetry("relu") == scaling_symmetry("leaky_relu") == "positive"
    assert scaling_symmetry("tanh") == scaling_symmetry("sine") == "sign"
    assert scaling_symmetry("sigmoid") is None and scaling_symmetry("gelu") is None
    spec, _ = make("mlp", (5,), {"hidden": [6, 7], "activation": "sigmoid"})
    for s in random_scales(spec, B, generator=torch.Generator().manual_seed(0)).values():
        assert torch.equal(s, torch.ones_like(s))
    with pytest.raises(ValueError, match="unknown activation"):
        scaling_symmetry("softplus")


# --- weight matching ----------------------------------------------------------------------------

ALIGN_CASES = {
    "mlp": ("mlp", (10,), {"hidden": [16, 12], "activation": "relu"}),
    "cnn": ("cnn", (1, 8, 8), {"channels": [3, 4], "stride": 2, "activation": "relu"}),
}


@pytest.mark.parametrize("case", list(ALIGN_CASES))
def test_align_undoes_a_random_permutation(case):
    spec, ref = make(*ALIGN_CASES[case], n=1)
    copies = WeightBatch.cat([ref] * 3)
    shuffled = permute(copies, random_permutations(spec, 3, generator=torch.Generator().manual_seed(7)))
    assert differs(shuffled, copies)
    assert_same_weights(align(shuffled, ref), copies)


@pytest.mark.parametrize("case", list(ALIGN_CASES))
def test_align_unrelated_networks(case):
    spec, ref = make(*ALIGN_CASES[case], n=1, seed=100)
    _, wb = make(*ALIGN_CASES[case], n=4, seed=0)
    perms = match_permutations(ref, wb)
    for g, p in perms.items():
        assert p.shape == (4, spec.groups[g])
        assert torch.equal(p.sort(1).values, torch.arange(spec.groups[g]).expand(4, -1))
    aligned = permute(wb, perms)
    before, after = matching_objective(ref, wb), matching_objective(ref, aligned)
    assert (after >= before - 1e-12).all() and (after > before + 1e-6).any()
    x = inputs(spec)
    torch.testing.assert_close(outputs(aligned, x), outputs(wb, x), rtol=1e-10, atol=1e-10)
    # coordinate descent stopped at a fixed point: matching again changes nothing
    again = match_permutations(ref, aligned, seed=1)
    for g, p in again.items():
        assert torch.equal(p, torch.arange(spec.groups[g]).expand(4, -1))


@pytest.mark.parametrize("case", list(ALIGN_CASES))
def test_canonical_order_is_a_function_of_the_network_alone(case):
    """Permuting a network's hidden neurons first gives the same canonical network (what weight
    matching's coordinate descent, which depends on where it starts, does not promise)."""
    spec, ref = make(*ALIGN_CASES[case], n=1, seed=100)
    _, wb = make(*ALIGN_CASES[case], n=4, seed=0)
    shuffled = permute(wb, random_permutations(spec, 4, generator=torch.Generator().manual_seed(3)))
    assert differs(shuffled, wb)
    canon = permute(wb, canonical_permutations(ref, wb))
    assert_same_weights(permute(shuffled, canonical_permutations(ref, shuffled)), canon)
    x = inputs(spec)  # the same functions
    torch.testing.assert_close(outputs(canon, x), outputs(wb, x), rtol=1e-10, atol=1e-10)
    # a permuted copy of the reference is put back in the reference's order
    copies = permute(WeightBatch.cat([ref] * 2), random_permutations(spec, 2, generator=torch.Generator().manual_seed(5)))
    assert_same_weights(permute(copies, canonical_permutations(ref, copies)), WeightBatch.cat([ref] * 2))


def test_align_rejects_a_batch_as_reference():
    _, wb = make(*ALIGN_CASES["mlp"], n=2)
    with pytest.raises(ValueError, match="one network"):
        match_permutations(wb, wb)
    with pytest.raises(ValueError, match="one network"):
        canonical_permutations(wb, wb)

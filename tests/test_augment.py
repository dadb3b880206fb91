"""Weight-space augmentations: symmetry ones keep the function, noise and dropout have the stated
statistics, aligned mixup undoes permutations, and everything is reproducible from its seed."""
import pytest
import torch

from wsl.weights.align import align
from wsl.data.augment import (AlignedMixUp, Compose, GaussianNoise, InputWarp, RandomPermutation, RandomScaling,
                         WeightDropout)
from wsl.weights.symmetry import permute, random_permutations
from wsl.weights import WeightBatch
from zoo.architectures import build_spec
from zoo.functional import population_forward
from zoo.train import initial_params


def make(n=4, seed=0, hidden=(8, 8), activation="relu", d_in=5, arch="mlp"):
    spec = build_spec(arch, (d_in,), 3, hidden=list(hidden), activation=activation)
    nets = [initial_params(spec, seed + i, 1.0) for i in range(n)]
    return WeightBatch.from_params(spec, [torch.stack(ts).double() for ts in zip(*nets)])


def outputs(wb, activation=None):
    x = torch.randn(16, *wb.spec.input_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return population_forward(wb.spec, wb.params(), x, activation=activation)


def same(a, b):
    return all(torch.equal(s, t) for s, t in zip(a.params(), b.params()))


@pytest.mark.parametrize("aug,activation", [
    (RandomPermutation(seed=1), None),
    (RandomScaling(seed=1), None),
    (RandomScaling(log_range=(-2, 2), seed=1), None),
])
def test_symmetry_augmentations_preserve_function(aug, activation):
    wb = make()
    out = aug(wb)
    assert not same(out, wb)
    torch.testing.assert_close(outputs(out), outputs(wb), rtol=1e-10, atol=1e-10)


def test_random_scaling_follows_per_model_activations():
    acts = ["tanh", "relu", "tanh", "relu"]
    wb = make(activation=None)
    for aug, kwargs in [(RandomScaling(seed=2), {"activation": acts}), (RandomScaling(activation=acts, seed=2), {})]:
        out = aug(wb, **kwargs)
        assert not same(out, wb)
        for b, a in enumerate(acts):
            torch.testing.assert_close(outputs(out[b], a), outputs(wb[b], a), rtol=1e-10, atol=1e-10)
    # tanh networks only get sign flips: magnitudes unchanged
    out = RandomScaling(seed=2)(wb, activation=acts)
    assert torch.equal(out.weights[0][0].abs(), wb.weights[0][0].abs())
    assert not torch.equal(out.weights[0][1].abs(), wb.weights[0][1].abs())


def test_gaussian_noise_has_relative_std_and_zero_mean():
    std = 0.1
    wb = make(n=4, hidden=(64, 64), d_in=32)
    out = GaussianNoise(std=std, seed=3)(wb)
    for w, v in zip(wb.params(), out.params()):
        for b in range(len(wb)):
            if w[b].numel() < 60:
                continue
            target = std * w[b].std(correction=0)
            d = (v[b] - w[b]).flatten()
            assert 0.8 < d.std() / target < 1.2
            assert d.mean().abs() < 4 * target / d.numel() ** 0.5  # 4 standard errors of the mean
            assert (d != 0).float().mean() > 0.99  # elementwise noise, not a few entries


def test_weight_dropout_zeroes_about_p():
    p = 0.1
    wb = make(n=4, hidden=(64, 64), d_in=32)
    out = WeightDropout(p=p, seed=4)(wb)
    dropped = kept = 0
    for w, v in zip(wb.weights, out.weights):
        zero = v == 0
        assert torch.equal(v[~zero], w[~zero])  # survivors untouched, no rescaling
        dropped += int(zero.sum())
        kept += int((~zero).sum())
    assert abs(dropped / (dropped + kept) - p) < 0.02
    for a, b in zip(wb.biases, out.biases):
        assert torch.equal(a, b)


def test_aligned_mixup_of_a_network_and_its_permuted_copy_is_the_network():
    net = make(n=1, hidden=(16, 12), d_in=10)
    shuffled = permute(net, random_permutations(net.spec, 1, generator=torch.Generator().manual_seed(5)))
    assert not same(shuffled, net)
    wb = WeightBatch.cat([net, shuffled])
    mix = AlignedMixUp(alpha=1.0, seed=0)
    lams = []
    for _ in range(5):
        out, lam, partner = mix(wb)
        assert partner.tolist() == [1, 0]
        lams += lam.tolist()
        for s, t in zip(out.params(), wb.params()):
            torch.testing.assert_close(s, t, rtol=1e-12, atol=1e-12)
    assert max(lams) - min(lams) > 0.3  # a real spread of lam was exercised


def test_aligned_mixup_mixes_each_network_with_its_aligned_partner():
    wb = make(n=5)
    out, lam, partner = AlignedMixUp(alpha=0.4, seed=6)(wb)
    assert lam.shape == (5,) and ((lam >= 0) & (lam <= 1)).all()
    assert (partner != torch.arange(5)).all()
    assert torch.equal(partner.sort().values, torch.arange(5))
    for i in range(5):
        expect = align(wb[int(partner[i])], wb[i])
        for s, w, a in zip(out[i].params(), wb[i].params(), expect.params()):
            torch.testing.assert_close(s, lam[i] * w + (1 - lam[i]) * a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("factory", [
    lambda s: RandomPermutation(seed=s),
    lambda s: RandomScaling(seed=s),
    lambda s: GaussianNoise(seed=s),
    lambda s: WeightDropout(p=0.2, seed=s),
    lambda s: AlignedMixUp(seed=s),
])
def test_reproducible_from_seed(factory):
    wb = make()

    def run(seed):
        aug = factory(seed)
        res = [aug(wb), aug(wb)]  # two calls: the generator state advances the same way
        return [r if isinstance(r, WeightBatch) else r[0] for r in res], [r for r in res if isinstance(r, tuple)]

    (a, ta), (b, tb), (c, _) = run(7), run(7), run(8)
    assert all(same(x, y) for x, y in zip(a, b))
    for x, y in zip(ta, tb):
        assert torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
    assert not same(a[0], a[1])  # successive calls differ
    assert not same(a[0], c[0])  # another seed differs


def test_input_warp_is_the_network_on_warped_coordinates():
    spec = build_spec("siren", (2,), 1, hidden=[8, 8], omega_0=30)
    nets = [initial_params(spec, i, 1.0) for i in range(3)]
    wb = WeightBatch.from_params(spec, [torch.stack(ts).double() for ts in zip(*nets)])
    warp = InputWarp(rotate=45, scale=0.2, translate=0.25, seed=3)
    A, t = warp.draw(3, 2)
    out = warp.apply(wb, A, t)
    x = torch.rand(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    for i in range(3):  # network i of the warped batch at x is network i at A_i x + t_i
        warped_x = x @ A[i].T + t[i]
        torch.testing.assert_close(population_forward(spec, out[i:i + 1].params(), x),
                                   population_forward(spec, wb[i:i + 1].params(), warped_x), rtol=1e-9, atol=1e-9)
    angles = torch.rad2deg(torch.atan2(A[:, 1, 0], A[:, 0, 0])).abs()
    factors = torch.linalg.det(A).sqrt()  # a rotation times a factor: det = factor^2
    assert (angles <= 45).all() and ((factors - 1).abs() <= 0.2).all() and (t.abs() <= 0.25).all()
    assert not same(warp(wb), warp(wb))  # fresh warps every call
    with pytest.raises(ValueError, match="InputWarp warps the coordinates of INRs.*on 5 inputs"):
        warp(make())


def test_compose_applies_in_order_and_refuses_mixup():
    wb = make(activation=None)
    acts = ["relu", "tanh", "relu", "tanh"]
    out = Compose([RandomPermutation(seed=1), RandomScaling(seed=2), GaussianNoise(seed=3)])(wb, activation=acts)
    expect = GaussianNoise(seed=3)(RandomScaling(seed=2)(RandomPermutation(seed=1)(wb), activation=acts))
    assert same(out, expect)
    with pytest.raises(ValueError, match="AlignedMixUp"):
        Compose([RandomPermutation(), AlignedMixUp()])

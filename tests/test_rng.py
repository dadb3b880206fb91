"""Per-model random streams (zoo.rng) and the population draws built on them (zoo.train):
correct distributions, and a model's draws never depend on the rest of its population."""
import numpy as np
import pytest
import torch

from zoo.architectures import build_spec, init_bounds, population_init
from zoo.rng import permutations, stream_keys, uniform
from zoo.train import (epoch_order, epoch_orders, initial_params, noisy_labels, population_labels,
                       training_subset, training_subsets)

SEEDS = [0, 1, 2, 3, 2 ** 31, 2 ** 32 - 1]  # model seeds are uint32


def test_keys_differ_by_seed_purpose_and_extra():
    keys = {tuple(stream_keys(SEEDS, p, *extra).tolist())
            for p in ("init", "subset", "noise", "order", "dropout") for extra in ((), (1,), (2,))}
    assert len(keys) == 15
    flat = [k for ks in keys for k in ks]
    assert len(set(flat)) == len(flat)
    assert stream_keys(SEEDS, "init").dtype == torch.int32
    torch.testing.assert_close(stream_keys(torch.tensor(SEEDS), "order", 3), stream_keys(SEEDS, "order", 3))


def test_uniform_draws_are_uniform_and_independent_of_the_population():
    keys = stream_keys(range(64), "init")
    u = uniform(keys, 4096)
    assert u.dtype == torch.float32 and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    counts = torch.histc(u, bins=16, min=0, max=1)
    expected = u.numel() / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 50  # 15 degrees of freedom: p < 1e-5 beyond 50
    corr = np.corrcoef(u[:, :-1].flatten().numpy(), u[:, 1:].flatten().numpy())[0, 1]
    assert abs(corr) < 0.01  # neighbouring draws uncorrelated
    assert abs(np.corrcoef(u[0].numpy(), uniform(keys, 4096, stream=1)[0].numpy())[0, 1]) < 0.06
    torch.testing.assert_close(uniform(keys[5:6], 4096)[0], u[5], rtol=0, atol=0)


def test_permutations_are_permutations_then_padding_and_depend_only_on_the_key():
    lengths = [5, 1, 0, 7, 7]
    keys = stream_keys(range(5), "order")
    perm = permutations(keys, lengths, 7)
    for row, n in zip(perm.tolist(), lengths):
        assert sorted(row[:n]) == list(range(n)) and row[n:] == [-1] * (7 - n)
    assert perm[3].tolist() != perm[4].tolist()
    alone = permutations(keys[3:4], lengths[3:4], 9)
    assert alone[0, :7].tolist() == perm[3].tolist() and alone[0, 7:].tolist() == [-1, -1]


def test_population_draws_equal_each_models_own():
    n_train, seeds = 300, [11, 12, 13, 14]
    fractions, noise = [0.9, 0.1, 0.5, 0.5], [0.3, 0.0, 0.5, 0.2]
    y = torch.arange(n_train) % 10
    examples, sizes = training_subsets(seeds, n_train, fractions)
    assert sizes.tolist() == [270, 30, 150, 150] and examples.shape == (4, 270)
    labels = population_labels(seeds, y, examples, sizes, noise, 10)
    for i, s in enumerate(seeds):
        subset = training_subset(s, n_train, fractions[i])
        assert torch.equal(subset, examples[i, :sizes[i]]) and (examples[i, sizes[i]:] == -1).all()
        assert len(set(subset.tolist())) == sizes[i] and 0 <= int(subset.min()) and int(subset.max()) < n_train
        own = noisy_labels(s, y, subset, noise[i], 10)
        assert torch.equal(own, labels[i])
        changed = (own != y).nonzero().flatten()
        assert len(changed) == round(noise[i] * sizes[i])  # wrong labels: exactly that many, all in the subset
        assert set(changed.tolist()) <= set(subset.tolist())
        for epoch in (1, 2):
            order = epoch_orders(seeds, examples, sizes, epoch)[i]
            assert torch.equal(order[:sizes[i]], epoch_order(s, subset, epoch))
            assert sorted(order[:sizes[i]].tolist()) == sorted(subset.tolist())
    assert not torch.equal(epoch_order(11, examples[0, :270], 1), epoch_order(11, examples[0, :270], 2))


def test_regression_label_noise_takes_other_examples_targets():
    y = torch.linspace(0, 1, 200).view(-1, 1)
    subset = training_subset(3, 200, 0.5)
    noisy = noisy_labels(3, y, subset, 0.4, None)
    changed = (noisy != y).any(1).nonzero().flatten()
    assert 35 <= len(changed) <= 40 and set(changed.tolist()) <= set(subset.tolist())
    assert all(bool((y == noisy[i]).all(1).any()) for i in changed.tolist())  # each a target of the set


@pytest.mark.parametrize("arch", ["mlp", "siren"])
def test_initialisation_bounds_scale_and_independence(arch):
    spec = build_spec(arch, (2,) if arch == "siren" else (64,), 10, hidden=[32, 32])
    scales = [0.5, 1.0, 2.0]
    params = population_init(spec, [5, 6, 7], scales)
    for p, bound, ps in zip(params, init_bounds(spec), spec.params):
        assert tuple(p.shape) == (3, *ps.shape)
        for m, c in enumerate(scales):
            assert float(p[m].abs().max()) <= bound * c
            if p[m].numel() >= 320:
                assert abs(float(p[m].std()) - bound * c / 3 ** 0.5) < 0.15 * bound * c
    assert not torch.equal(params[0][0], params[0][1])
    for k, p in enumerate(initial_params(spec, 6, 1.0)):
        torch.testing.assert_close(p, params[k][1], rtol=0, atol=0)
    if arch == "siren":
        assert init_bounds(spec)[0] == pytest.approx(1 / 2) and init_bounds(spec)[2] == pytest.approx((6 / 32) ** 0.5 / 30)

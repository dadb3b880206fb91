"""Merging (wsl.merging) and linear mode connectivity (wsl.landscape.connectivity): each method equals
a hand computation on tiny weight vectors; alignment is what makes averaging permuted networks
work; barriers vanish after weight matching; ``wsl merge`` writes a zoo that reads like any other."""

import pytest
import torch

from conftest import SPECS, generate_zoo, hidden_perms, max_diff, random_weights, save_untrained_predictor
from wsl.cli import main
from wsl.data.task import source_task
from wsl.landscape.connectivity import barrier, interpolate, linear_mode_connectivity, path_metrics
from wsl.merging.soups import aligned_average, greedy_soup, uniform_soup
from wsl.merging.task_vectors import (breadcrumbs_vectors, dare, dare_vectors, model_breadcrumbs, task_arithmetic,
                                      ties_merging, ties_vector)
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute
from zoo.architectures import build_spec
from zoo.errors import InputError
from zoo.functional import population_forward
from zoo.store import Zoo
from zoo.train import evaluate
from zoo.verify import verify

TINY = build_spec("mlp", (1,), 1, hidden=[1])  # 4 parameters: w0, b0, w1, b1
PRE = torch.tensor([[1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
TAU = torch.tensor([[3.0, -1.0, 2.0, 0.5],
                    [-4.0, 0.1, 3.0, 2.0]], dtype=torch.float64)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors and weight matching: one thread (see conftest)."""


def flat(*rows) -> WeightBatch:
    return WeightBatch.from_flat(TINY, torch.tensor(rows, dtype=torch.float64))


def tiny_pair():
    pre = WeightBatch.from_flat(TINY, PRE)
    return pre, WeightBatch.from_flat(TINY, PRE + TAU)


# --- the methods, by hand -------------------------------------------------------------------------

def test_uniform_soup_is_the_mean():
    soup = uniform_soup(flat([1, 2, 3, 4], [3, 2, 1, 0], [2, 5, 2, -1]))
    assert torch.allclose(soup.flatten(), torch.tensor([[2.0, 3.0, 2.0, 1.0]], dtype=torch.float64))


def test_greedy_soup_adds_networks_in_order_while_the_score_does_not_drop():
    # score: minus the squared distance to 0. Alone: a -0.36, b -0.49, c -9, d -0.25, so the order is d, a, b, c.
    wb = flat([-0.6, 0, 0, 0], [0, 0.7, 0, 0], [3, 0, 0, 0], [0.5, 0, 0, 0])
    calls = []

    def score(w):
        calls.append(len(w))
        return -(w.flatten() ** 2).sum(1)

    soup, ingredients = greedy_soup(wb, score)
    # d + a -> mean (-0.05, 0, 0, 0): -0.0025 >= -0.25, kept; + b -> -0.0556 < -0.0025 and + c -> -0.934: refused
    assert ingredients == [3, 0]
    assert torch.allclose(soup.flatten(), torch.tensor([[-0.05, 0, 0, 0]], dtype=torch.float64))
    assert calls == [4, 1, 1, 1]  # the networks alone in one batched call, then one soup per candidate


def test_task_arithmetic_by_hand_one_network_per_lambda():
    pre, ft = tiny_pair()
    merged = task_arithmetic(pre, ft, [0.5, 1.0])
    # Σ τ = (-1, -0.9, 5, 2.5); θ = 1 + λ Σ τ
    expected = torch.tensor([[0.5, 0.55, 3.5, 2.25], [0.0, 0.1, 6.0, 3.5]], dtype=torch.float64)
    assert torch.allclose(merged.flatten(), expected)


def test_ties_trims_elects_and_takes_the_disjoint_mean_by_hand():
    # top_k 0.5 keeps 2 of 4 entries per task vector:
    #   τ̂1 = ( 3, 0, 2, 0)      τ̂2 = (-4, 0, 3, 0)
    # elected signs sgn(Σ τ̂) = sgn(-1, 0, 5, 0) = (-1, 0, +1, 0)
    # disjoint mean: entry 0 only τ̂2 agrees: -4; entry 2 both: (2 + 3) / 2 = 2.5; entries 1, 3 none: 0
    assert torch.allclose(ties_vector(TAU, top_k=0.5), torch.tensor([-4.0, 0.0, 2.5, 0.0], dtype=torch.float64))
    pre, ft = tiny_pair()
    merged = ties_merging(pre, ft, top_k=0.5, lam=0.5)
    assert torch.allclose(merged.flatten(), torch.tensor([[-1.0, 1.0, 2.25, 1.0]], dtype=torch.float64))
    # keeping everything: entry 1's -1 and 0.1 give sign -, mean -1
    assert torch.allclose(ties_vector(TAU, top_k=1.0), torch.tensor([-4.0, -1.0, 2.5, 1.25], dtype=torch.float64))


def test_dare_drops_and_rescales_by_hand_for_seed_0_and_is_unbiased():
    # seed 0's draws u = torch.rand(2, 4, float64): (0.970, 0.708, 0.459, 0.921), (0.645, 0.791, 0.179, 0.351);
    # p = 0.5 keeps u >= 0.5: masks (1, 1, 0, 1) and (1, 1, 0, 0), kept entries doubled
    expected = torch.tensor([[6.0, -2.0, 0.0, 1.0], [-8.0, 0.2, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(dare_vectors(TAU, 0.5, seed=0), expected)
    pre, ft = tiny_pair()
    merged = dare(pre, ft, p=0.5, seed=0, lam=1.0)
    assert torch.allclose(merged.flatten(), PRE + expected.sum(0))
    assert torch.equal(dare(pre, ft, p=0.5, seed=0).flatten(), merged.flatten())  # seeded
    # then TIES: top_k 0.5 of (6, -2, 0, 1) and (-8, 0.2, 0, 0): (6, -2, 0, 0), (-8, 0.2, 0, 0); signs (-, -, 0, 0)
    ties = dare(pre, ft, p=0.5, seed=0, merge="ties", top_k=0.5, lam=1.0)
    assert torch.allclose(ties.flatten(), PRE + torch.tensor([-8.0, -2.0, 0.0, 0.0], dtype=torch.float64))
    # E[τ̃] = τ: 20000 draws of a task vector average back to it (standard error |τ| / 141 at p = 0.5)
    many = dare_vectors(TAU[:1].repeat(20000, 1), 0.5, seed=1).mean(0)
    assert torch.allclose(many, TAU[0], rtol=0.05)
    with pytest.raises(InputError, match=r"p must lie in \[0, 1\)"):
        dare_vectors(TAU, 1.0)


def test_breadcrumbs_masks_the_largest_and_smallest_of_each_parameter_tensor():
    spec = build_spec("mlp", (4,), 1, hidden=[2])  # layers.0.weight 8, layers.0.bias 2, layers.1.weight 2, bias 1
    w0 = [0.1, -5.0, 0.3, 2.0, -0.2, 1.0, 0.05, -3.0]
    rest = [0.4, -0.7, 0.9, 0.6, -0.8]
    tau = torch.tensor([w0 + rest], dtype=torch.float64)
    pre = WeightBatch.from_flat(spec, torch.zeros(1, 13, dtype=torch.float64))
    # beta 0.125: the 1 largest of 8 (-5) masked; gamma 0.25: the 2 smallest (0.05, 0.1); the tensors of
    # 2 and 1 entries lose floor(0.125 * 2) = floor(0.25 * 2) = 0 entries
    masked = breadcrumbs_vectors(pre, tau, beta=0.125, gamma=0.25)
    expected = torch.tensor([[0.0, 0.0, 0.3, 2.0, -0.2, 1.0, 0.0, -3.0] + rest], dtype=torch.float64)
    assert torch.equal(masked, expected)
    ft = WeightBatch.from_flat(spec, torch.cat([tau, -tau]) + 0.0)
    merged = model_breadcrumbs(pre, ft, beta=0.125, gamma=0.25, lam=[2.0])
    assert torch.allclose(merged.flatten(), torch.zeros(1, 13, dtype=torch.float64))  # τ and -τ cancel
    with pytest.raises(InputError, match="beta \\+ gamma < 1"):
        breadcrumbs_vectors(pre, tau, beta=0.5, gamma=0.5)


# --- symmetry: why alignment matters --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_averaging_a_permuted_copy_needs_alignment(kind):
    spec = SPECS[kind]
    wb = random_weights(spec, seed=3, n=1)
    copy = permute(wb, hidden_perms(spec, 1, seed=4))
    pair = WeightBatch.cat([wb, copy])
    x = torch.randn(16, *spec.input_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = population_forward(spec, wb.params(), x, activation="relu")
    soup = uniform_soup(pair)
    assert max_diff(soup, wb) > 0.1  # the plain mean is another network, computing another function
    assert (population_forward(spec, soup.params(), x, activation="relu") - out).abs().max() > 1e-2
    back = aligned_average(pair)
    assert max_diff(back, wb) < 1e-10  # matching undoes the permutation: the network itself


def test_merges_refuse_too_few_or_mixed_networks():
    with pytest.raises(InputError, match="at least 2 networks"):
        uniform_soup(flat([1, 2, 3, 4]))
    wb = flat([1, 2, 3, 4], [0, 0, 0, 0])
    wb.activation = ["relu", "tanh"]
    with pytest.raises(InputError, match="different activations"):
        aligned_average(wb)


# --- linear mode connectivity ---------------------------------------------------------------------

def test_barrier_is_the_rise_over_the_endpoints_interpolation():
    alphas = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    loss = torch.tensor([[1.0, 3.0, 2.0], [1.0, 0.5, 1.0]], dtype=torch.float64)
    assert torch.allclose(barrier(loss, alphas), torch.tensor([1.5, 0.0], dtype=torch.float64))
    acc = torch.tensor([[0.9, 0.5, 0.7]], dtype=torch.float64)
    assert torch.allclose(barrier(acc, alphas, higher_is_better=True), torch.tensor([0.3], dtype=torch.float64))
    a, b = flat([0, 0, 0, 0]), flat([2, 4, 6, 8])
    mid = interpolate(a, b, torch.tensor([0.25]))
    assert torch.allclose(mid.flatten(), torch.tensor([[0.5, 1.0, 1.5, 2.0]], dtype=torch.float64))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two digits MLPs trained independently, the task and a hidden-neuron-permuted copy of the first."""
    raw = {"name": "lmc", "seed": 2, "num_models": 2, "epochs": 10, "checkpoints": [0, 10],
           "task": {"name": "digits", "n_train": 300, "n_val": 100},
           "architecture": {"name": "mlp", "hidden": [16], "activation": "relu"},
           "hparams": {"lr": 0.05, "momentum": 0.9}}
    path = generate_zoo(raw, tmp_path_factory.mktemp("lmc") / "lmc.h5")
    with Zoo(path) as z:
        wb, task = WeightBatch.from_params(z.spec, z.batch([0, 1], -1)), source_task(z.config)
    return wb, task, permute(wb[0], hidden_perms(wb.spec, 1, seed=1))


def test_lmc_barrier_of_a_permuted_copy_is_large_raw_and_vanishes_after_matching(trained):
    wb, task, copy = trained
    a = WeightBatch.cat([wb[0], wb[0]])
    b = WeightBatch.cat([wb[0], copy])
    res = linear_mode_connectivity(a, b, task.x_val, task.y_val, task.kind, points=11)
    raw, matched = res["raw"], res["matched"]
    assert raw["loss"].shape == (2, 11) and raw["acc"].shape == (2, 11)
    assert abs(raw["loss_barrier"][0]) < 1e-6 and abs(raw["acc_barrier"][0]) < 1e-9  # a network and itself
    endpoint = float(raw["loss"][1, 0])
    assert raw["loss_barrier"][1] > 0.2 * endpoint  # the permuted copy: same endpoints, a hill between
    assert abs(raw["loss"][1, -1] - endpoint) < 1e-5  # (same function at both ends)
    assert abs(matched["loss_barrier"][1]) < 1e-6 and abs(matched["acc_barrier"][1]) < 1e-9
    # the path's ends are the networks' own metrics, as zoo.train.evaluate computes them
    direct = evaluate(wb.spec, [t.float() for t in wb[0].params()], task, task.x_val, task.y_val)
    assert raw["loss"][0, 0] == pytest.approx(float(direct["loss"][0]), rel=1e-6)
    assert raw["acc"][0, 0] == pytest.approx(float(direct["acc"][0]))


def test_lmc_of_many_pairs_at_once_equals_one_pair_at_a_time(trained):
    wb, task, copy = trained
    a, b = WeightBatch.cat([wb[0], wb[1], wb[0]]), WeightBatch.cat([wb[1], copy, copy])
    together = path_metrics(a, b, task.x_val, task.y_val, task.kind, points=5, networks_per_pass=4)
    for n in range(3):
        alone = path_metrics(a[n], b[n], task.x_val, task.y_val, task.kind, points=5)
        assert torch.allclose(together["loss"][n], alone["loss"][0], rtol=1e-5)
        assert torch.equal(together["acc"][n], alone["acc"][0])
    with pytest.raises(InputError, match="at least 2 points"):
        path_metrics(a, b, task.x_val, task.y_val, task.kind, points=1)


# --- wsl merge ------------------------------------------------------------------------------------
RAW = {"name": "merge_src", "seed": 1, "num_models": 6, "epochs": 3, "checkpoints": [0, 3],
       "task": {"name": "digits", "n_train": 200, "n_val": 100},
       "architecture": {"name": "mlp", "hidden": [8], "activation": "relu"},
       "hparams": {"lr": 0.05, "momentum": 0.9}, "init": "shared"}


@pytest.fixture(scope="module")
def src_zoo(tmp_path_factory):
    return generate_zoo(RAW, tmp_path_factory.mktemp("merge") / "src.h5")


def _read(path):
    with Zoo(path) as z:
        return (z.merged, z.generated, z.config_hash, WeightBatch.from_params(z.spec, z.batch([0], -1)),
                {m: float(z.metric(m)[0, 0]) for m in z.metric_names}, z.checkpoint_epochs)


def test_wsl_merge_soup_writes_a_merged_zoo_that_reads_like_any(src_zoo, tmp_path, capsys):
    out = tmp_path / "soup.h5"
    assert main(["merge", src_zoo, "--method", "soup", "--runs", "0,2,4", "--out", str(out)]) == 0
    assert "merged zoo written" in capsys.readouterr().out
    assert verify(out) == []
    merged, generated, config_hash, wb, metrics, epochs = _read(out)
    assert generated is None and config_hash.startswith("merged-") and epochs == [3]
    assert merged["method"] == "soup" and merged["runs"] == [0, 2, 4] and merged["source_zoo"] == src_zoo
    with Zoo(src_zoo) as z:
        runs = WeightBatch.from_params(z.spec, z.batch([0, 2, 4], -1))
        task = source_task(z.config)
    assert torch.allclose(wb.flatten(), runs.flatten().mean(0, keepdim=True), atol=1e-6)
    direct = evaluate(wb.spec, wb.params(), task, task.x_test, task.y_test)
    assert metrics["test_acc"] == pytest.approx(float(direct["acc"][0]))
    assert main(["zoo", "info", str(out)]) == 0
    assert "merged     " in capsys.readouterr().out
    # joining (wsl zoo merge) and cutting (wsl zoo subset) keep the mark
    from zoo.merge import merge
    from zoo.subset import subset_zoo

    joined = merge([out], tmp_path / "joined.h5")
    subset_zoo(out, tmp_path / "cut.h5", ["test_acc>=0"])
    for path in (joined, tmp_path / "cut.h5"):
        assert _read(path)[0] == merged


def test_wsl_merge_task_arithmetic_chooses_lambda_on_validation_data(src_zoo, tmp_path):
    out = tmp_path / "ta.h5"
    grid = [0.2, 0.5, 1.0]
    assert main(["merge", src_zoo, "--method", "task-arithmetic", "--runs", "1,2,3", "--pretrained", "init",
                 "--lambdas", ",".join(map(str, grid)), "--out", str(out)]) == 0
    merged, _, _, wb, _, _ = _read(out)
    with Zoo(src_zoo) as z:
        pre = WeightBatch.from_params(z.spec, z.batch([1], 0))
        ft = WeightBatch.from_params(z.spec, z.batch([1, 2, 3], -1))
        task = source_task(z.config)
    val = evaluate(ft.spec, task_arithmetic(pre, ft, grid).params(), task, task.x_val, task.y_val)["acc"]
    best = int(val.argmax())
    assert merged["lambda"] == grid[best] and merged["pretrained"] == "init" and merged["score_on"] == "val"
    assert merged["lambda_scores"] == pytest.approx(val.double().tolist())
    assert torch.allclose(wb.flatten(), task_arithmetic(pre, ft, grid[best]).flatten(), atol=1e-6)
    assert verify(out) == []


def test_wsl_merge_every_method_runs(src_zoo, tmp_path):
    for method in ("greedy-soup", "aligned-average"):
        assert main(["merge", src_zoo, "--method", method, "--runs", "0,1", "--out", str(tmp_path / f"{method}.h5")]) == 0
    for method, extra in (("ties", ["--top-k", "0.5"]), ("dare", ["--p", "0.3", "--seed", "2"]),
                          ("breadcrumbs", ["--beta", "0.02", "--gamma", "0.5"])):
        out = tmp_path / f"{method}.h5"
        assert main(["merge", src_zoo, "--method", method, "--runs", "0,1", "--pretrained", "5", "--lambda", "0.7",
                     "--out", str(out), *extra]) == 0
        merged = _read(out)[0]
        assert merged["method"] == method and merged["lambda"] == 0.7 and merged["pretrained"] == 5
    assert _read(tmp_path / "dare.h5")[0]["p"] == 0.3 and _read(tmp_path / "ties.h5")[0]["top_k"] == 0.5


def test_wsl_predict_reads_a_merged_zoo(src_zoo, tmp_path):
    out = tmp_path / "soup.h5"
    assert main(["merge", src_zoo, "--method", "soup", "--runs", "0,1", "--out", str(out)]) == 0
    ckpt = save_untrained_predictor(out, tmp_path / "p.ckpt")
    csv = tmp_path / "p.csv"
    assert main(["predict", "--model", str(ckpt), str(out), "--csv", str(csv)]) == 0
    assert len(csv.read_text().strip().splitlines()) == 2


@pytest.mark.parametrize("args, message", [
    (["--method", "soup", "--runs", "0,99"], "run 99 is not in"),
    (["--method", "soup", "--runs", "3"], "at least 2 runs, found 1"),
    (["--method", "soup", "--runs", "1,1"], "each run once"),
    (["--method", "soup", "--runs", "0,x"], "comma-separated ints"),
    (["--method", "average", "--runs", "0,1"], "--method: expected one of"),
    (["--method", "greedy-soup", "--runs", "0,1", "--score-on", "test"], "choosing on test data"),
    (["--method", "ties", "--runs", "0,1"], "give --pretrained"),
    (["--method", "ties", "--runs", "0,1", "--pretrained", "1"], "also one of the merged --runs"),
    (["--method", "soup", "--runs", "0,1", "--lambda", "0.5"], "apply to task-vector methods"),
    (["--method", "ties", "--runs", "0,1", "--pretrained", "2", "--top-k", "0"], "top_k must lie in"),
])
def test_wsl_merge_bad_input_gives_one_line(src_zoo, tmp_path, capsys, args, message):
    assert main(["merge", src_zoo, *args, "--out", str(tmp_path / "m.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wsl: error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "m.h5").exists()


def test_wsl_merge_never_replaces_another_zoo(src_zoo, tmp_path, capsys):
    assert main(["merge", src_zoo, "--method", "soup", "--runs", "0,1", "--out", src_zoo]) == 2
    assert "the file exists" in capsys.readouterr().err
    assert main(["merge", src_zoo, "--method", "soup", "--runs", "0,1", "--out", src_zoo, "--overwrite"]) == 2
    assert "not a merged zoo" in capsys.readouterr().err
    with Zoo(src_zoo) as z:
        assert z.merged is None and len(z) == 6


def test_wsl_merge_of_a_zoo_whose_activation_varies_per_run(tmp_path, capsys):
    raw = {"name": "acts", "seed": 1, "num_models": 6, "epochs": 2, "checkpoints": [0, 2],
           "task": {"name": "digits", "n_train": 200, "n_val": 100}, "architecture": {"name": "mlp", "hidden": [8]},
           "hparams": {"lr": 0.05, "activation": {"choice": ["relu", "tanh"]}}}
    path = generate_zoo(raw, tmp_path / "acts.h5")
    with Zoo(path) as z:
        acts = z.hparam("activation")
    same = [i for i in range(6) if acts[i] == acts[0]]
    other = next(i for i in range(6) if acts[i] != acts[0])
    out = tmp_path / "m.h5"
    assert main(["merge", path, "--method", "aligned-average", "--runs", f"0,{other}", "--out", str(out)]) == 2
    assert "runs of different activations cannot be merged" in capsys.readouterr().err
    assert main(["merge", path, "--method", "task-arithmetic", "--runs", f"{same[1]},{same[2]}", "--pretrained",
                 str(other), "--out", str(out)]) == 2
    assert f"has activation {acts[other]}" in capsys.readouterr().err
    for method in ("greedy-soup", "aligned-average"):
        assert main(["merge", path, "--method", method, "--runs", f"{same[0]},{same[1]}", "--out", str(out),
                     "--overwrite"]) == 0
        with Zoo(out) as z:  # the merged network's activation, where wsl predict and the data modules read it
            assert z.hparam("activation").tolist() == [acts[0]] and z.done.all()


def test_lmc_of_a_cnn_on_a_regression_target():
    spec = SPECS["cnn"]
    wb = random_weights(spec, seed=5, n=1)
    copy = permute(wb, hidden_perms(spec, 1, seed=6))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, *spec.input_shape, generator=gen)
    y = torch.randn(32, spec.layers[-1].out_features, generator=gen)
    res = linear_mode_connectivity(WeightBatch.cat([wb, wb]), WeightBatch.cat([wb, copy]), x, y, "regression", points=7)
    assert "acc" not in res["raw"] and res["raw"]["loss"].shape == (2, 7)
    assert abs(res["raw"]["loss_barrier"][0]) < 1e-6 and abs(res["matched"]["loss_barrier"][1]) < 1e-5
    assert not torch.allclose(res["raw"]["loss"][1], res["raw"]["loss"][1, :1].expand(7), rtol=1e-3)
    with pytest.raises(InputError, match="task kind"):
        path_metrics(wb, copy, x, y, "ranking")

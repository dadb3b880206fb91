"""LMC annotations of a zoo (``wsl zoo annotate --lmc``): partners, barriers, and how they travel
through subset, merge, export and import."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from conftest import QUIET, generate_zoo, hidden_perms
from wsl.cli.main import main
from wsl.data.task import source_task
from wsl.landscape.connectivity import linear_mode_connectivity
from wsl.landscape.partners import choose_partners
from wsl.weights import WeightBatch
from wsl.weights.symmetry import permute
from zoo.config import parse_config
from zoo.errors import InputError
from zoo.generate import generate
from zoo.merge import merge
from zoo.store import Zoo, ZooFileError

# 4 grid points (lr x activation) x 2 seeds: runs i and i + 4 share their hyperparameters
GRID_ZOO = {"name": "lmc", "seed": 3, "num_models": 8, "epochs": 2, "checkpoints": [0, 2],
            "task": {"name": "digits", "n_train": 200, "n_val": 97},
            "architecture": {"name": "mlp", "hidden": [6, 5]},
            "hparams": {"lr": {"grid": [0.05, 0.2]}, "optimizer": "sgd", "momentum": 0.9,
                        "activation": {"grid": ["relu", "tanh"]}},
            "training": {"chunk_size": 8}}
EXAMPLES = 64


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmc")
    plain = generate_zoo(GRID_ZOO, root / "plain.h5")
    annotated = str(root / "annotated.h5")
    shutil.copy(plain, annotated)
    assert main(["zoo", "annotate", annotated, "--lmc", "--pairs", "1", "--examples", str(EXAMPLES)]) == 0
    return root, plain, annotated


def _pairs(path):
    with Zoo(path) as z:
        return z.annotation_pairs, z.annotation_pairs_info


def test_partners_share_hyperparameters_and_differ_in_seed(zoo_files):
    _, _, path = zoo_files
    pairs, info = _pairs(path)
    with Zoo(path) as z:
        lr, act, seed = z.hparam("lr"), z.hparam("activation"), z.seed
    assert list(pairs["run_a"]) == [0, 1, 2, 3] and list(pairs["run_b"]) == [4, 5, 6, 7]
    assert set(pairs["kind"]) == {"same_hparams"}
    for a, b in zip(pairs["run_a"], pairs["run_b"]):
        assert lr[a] == lr[b] and act[a] == act[b] and seed[a] != seed[b]
    assert info["points"] == 11 and info["pairs"] == 4 and info["same_hparams_pairs"] == 4 and info["population"]


def test_runs_without_an_equal_partner_get_random_ones_of_their_activation():
    index = np.arange(6)
    hp = {"lr": np.array([0.1, 0.1, 0.2, 0.3, 0.4, 0.5]), "activation": np.array(["relu"] * 3 + ["tanh"] * 3)}
    acts = list(hp["activation"])
    a, b, kinds = choose_partners(index, np.arange(6) + 10, hp, acts, pairs=2, seed=1)
    got = {(int(x), int(y)): k for x, y, k in zip(a, b, kinds)}
    assert got[(0, 1)] == "same_hparams"
    # runs 0 and 1 draw only each other; run 2, the relu without an equal partner, may draw them
    assert all(2 in p for p in got if p != (0, 1) and {0, 1} & set(p))
    for (x, y), k in got.items():
        assert x < y and acts[x] == acts[y]
        if (x, y) != (0, 1):
            assert k == "random"
    for r in (2, 3, 4, 5):  # each run without an equal partner has 2 of its own draws
        assert sum(r in p for p in got) >= 2
    assert (a, b, kinds)[2] == choose_partners(index, np.arange(6) + 10, hp, acts, pairs=2, seed=1)[2]
    with pytest.raises(InputError, match="--pairs"):
        choose_partners(index, index, hp, acts, pairs=0)


def _weights(z, runs):
    rows = [int(np.flatnonzero(z.index == r)[0]) for r in runs]
    wb = WeightBatch.from_params(z.spec, z.batch(rows, -1))
    wb.activation = [str(z.hparam("activation")[r]) for r in rows]
    return wb


def test_stored_barriers_equal_a_direct_call_and_runs_hold_their_pairs_mean(zoo_files):
    _, _, path = zoo_files
    pairs, _ = _pairs(path)
    with Zoo(path) as z:
        task = source_task(z.config)
        a, b = _weights(z, pairs["run_a"]), _weights(z, pairs["run_b"])
        per_run = {n: z.annotation(n) for n in z.annotation_names}
        index = z.index
    want = linear_mode_connectivity(a, b, task.x_train[:EXAMPLES], task.y_train[:EXAMPLES], task.kind, points=11)
    for side, suffix in (("raw", ""), ("matched", "_matched")):
        for m in ("loss_barrier", "acc_barrier"):
            assert np.allclose(pairs[m + suffix], want[side][m].numpy(), rtol=1e-6, atol=1e-7), m + suffix
    assert (pairs["loss_barrier"] > 0).any() and (pairs["loss_barrier_matched"] <= pairs["loss_barrier"] + 1e-6).all()
    assert sorted(per_run) == ["lmc_acc_barrier", "lmc_acc_barrier_matched", "lmc_loss_barrier",
                               "lmc_loss_barrier_matched"]
    for m in ("loss_barrier", "acc_barrier_matched"):
        for row, run in enumerate(index):
            hold = (pairs["run_a"] == run) | (pairs["run_b"] == run)
            assert per_run["lmc_" + m][row] == pytest.approx(pairs[m][hold].mean(), rel=1e-6)


def test_a_network_and_its_permuted_copy_have_no_matched_barrier(zoo_files):
    _, _, path = zoo_files
    with Zoo(path) as z:
        task = source_task(z.config)
        a = _weights(z, [0, 2])  # a relu and a tanh network
    b = permute(a, hidden_perms(a.spec, n=2, seed=4))
    b.activation = a.activation
    res = linear_mode_connectivity(a, b, task.x_train[:EXAMPLES], task.y_train[:EXAMPLES], task.kind, points=11)
    assert (res["raw"]["loss_barrier"] > 1e-3).all()  # the permutation makes a barrier ...
    assert res["matched"]["loss_barrier"].abs().max() < 1e-5  # ... that matching removes
    assert res["matched"]["acc_barrier"].abs().max() < 1e-6


def test_summary_select_and_where_read_lmc_annotations(zoo_files, capsys):
    root, _, path = zoo_files
    with Zoo(path) as z:
        v = z.column("lmc_loss_barrier_matched")
        med = float(np.median(v))
        assert list(z.select(lmc_loss_barrier_matched=(None, med))) == list(np.flatnonzero(v <= med))
        assert z.summary().count("(annotation, epoch 2)") == 4
        assert "annotated pairs: 4 (4 same_hparams), epoch 2" in z.summary()
    from wsl.data.runs import ZooRuns

    assert ZooRuns(path).kind(0, "lmc_loss_barrier_matched") == "annotation"  # a predictor target by name
    out = root / "flat.h5"
    assert main(["zoo", "subset", path, "--where", f"lmc_loss_barrier_matched<={med!r}", "--out", str(out)]) == 0
    with Zoo(out) as s:
        assert list(s.index) == list(np.flatnonzero(v <= med))


def _subset_case(path, out, where):
    assert main(["zoo", "subset", path, *sum((["--where", w] for w in where), []), "--out", str(out)]) == 0
    with Zoo(path) as z, Zoo(out) as s:
        rows = np.flatnonzero(np.isin(z.index, s.index))
        for n in z.annotation_names:
            assert s.annotation(n).tobytes() == z.annotation(n)[rows].tobytes()
            assert s.annotation_info(n) == z.annotation_info(n)
        src, got = z.annotation_pairs, s.annotation_pairs
        keep = np.isin(src["run_a"], s.index) & np.isin(src["run_b"], s.index)
        assert sorted(got) == sorted(src) and s.annotation_pairs_info == z.annotation_pairs_info
        for k in src:
            assert list(got[k]) == list(src[k][keep])
        return int(keep.sum())


def test_subset_keeps_exactly_the_pairs_of_kept_runs(zoo_files):
    root, _, path = zoo_files
    assert _subset_case(path, root / "lr.h5", ["lr=0.05"]) == 2  # whole grid points: both their pairs
    with Zoo(path) as z:
        acc = z.column("train_acc")
    kept = _subset_case(path, root / "acc.h5", [f"train_acc>={float(np.median(acc))!r}"])
    assert kept < 4


def test_merge_joins_per_run_annotations_and_refuses_partner_ones(zoo_files):
    root, plain, _ = zoo_files
    cfg = parse_config(GRID_ZOO)
    parts = [str(generate(cfg, root / f"part{i}.h5", shard=(i, 2), **QUIET)) for i in range(2)]
    with h5py.File(merge(parts, root / "plain_merged.h5")) as f:  # parts without annotations merge as before
        assert "annotations" not in f and len(f["models/index"]) == 8
    cka = str(root / "cka.h5")
    shutil.copy(parts[1], cka)
    assert main(["zoo", "annotate", cka, "--cka", "--examples", "32"]) == 0
    with pytest.raises(ZooFileError, match=r"\['cka_mean'\] compare each run with partners"):
        merge([parts[0], cka], root / "never.h5")
    hess = ["--hessian", "--probes", "2", "--iters", "5", "--examples", "32"]
    whole = str(root / "whole_hessian.h5")
    shutil.copy(plain, whole)
    assert main(["zoo", "annotate", whole, *hess]) == 0
    for p in parts:
        assert main(["zoo", "annotate", p, *hess]) == 0
    merged = merge(parts, root / "merged.h5")
    with Zoo(merged) as m, Zoo(whole) as w:
        assert m.annotation_names == w.annotation_names == ["hessian_top_eig", "hessian_trace"]
        for n in w.annotation_names:
            assert np.allclose(m.annotation(n), w.annotation(n), rtol=1e-5) and m.annotation_info(n) == w.annotation_info(n)
        assert m.annotation_pairs is None
    with pytest.raises(ZooFileError, match="annotate every part alike"):  # one part annotated otherwise
        other = str(root / "other.h5")
        shutil.copy(parts[1], other)
        assert main(["zoo", "annotate", other, "--hessian", "--probes", "3", "--iters", "5", "--examples", "32"]) == 0
        merge([parts[0], other], root / "never.h5")
    for p in parts:
        assert main(["zoo", "annotate", p, "--lmc", "--pairs", "1", "--examples", "32"]) == 0
    with pytest.raises(ZooFileError, match=r"partners chosen among this part's runs.*annotate on the merged file"):
        merge(parts, root / "never.h5")
    assert not (root / "never.h5").exists()


def test_export_then_import_keeps_annotations_bitwise(zoo_files):
    root, _, path = zoo_files
    assert main(["zoo", "annotate", path, "--hessian", "--probes", "2", "--iters", "5", "--examples", "32"]) == 0
    assert main(["zoo", "export", path, "--out", str(root / "exp"), "--status", "all"]) == 0
    header = (root / "exp" / "runs.csv").read_text().splitlines()[0].split(",")
    assert {"lmc_loss_barrier", "hessian_trace"} <= set(header)
    assert (root / "exp" / "pairs.csv").read_text().splitlines()[0].split(",")[-2:] == ["run_a", "run_b"]
    assert main(["zoo", "import", str(root / "exp"), "--out", str(root / "back.h5"), "--quiet"]) == 0
    with h5py.File(path) as a, h5py.File(root / "back.h5") as b:
        names = []
        a["annotations"].visit(names.append)
        assert "pairs/kind" in names and len(names) == 6 + 1 + 7
        for n in names:
            x, y = a["annotations"][n], b["annotations"][n]
            assert json.loads(x.attrs.get("info", "{}")) == json.loads(y.attrs.get("info", "{}")), n
            if isinstance(x, h5py.Dataset):
                assert x.dtype == y.dtype and x[()].tobytes() == y[()].tobytes(), n
        assert sorted(b["annotations"]) == sorted(a["annotations"])
    with Zoo(root / "back.h5") as z:
        assert z.signal_names == [] and "lmc_loss_barrier" not in z.hparam_names


def test_a_file_without_annotations_reads_and_travels_as_before(zoo_files):
    root, plain, _ = zoo_files
    with Zoo(plain) as z:
        assert z.annotation_names == [] and z.annotation_pairs is None and z.annotation_pairs_info is None
    assert main(["zoo", "subset", plain, "--where", "lr=0.2", "--out", str(root / "plain_sub.h5")]) == 0
    assert main(["zoo", "export", plain, "--out", str(root / "plain_exp")]) == 0
    assert not (root / "plain_exp" / "pairs.csv").exists()
    assert main(["zoo", "import", str(root / "plain_exp"), "--out", str(root / "plain_back.h5"), "--quiet"]) == 0
    for p in ("plain_sub.h5", "plain_back.h5"):
        with h5py.File(root / p) as f:
            assert "annotations" not in f
    assert main(["zoo", "annotate", plain, "--lmc", "--pairs", "0"]) == 2  # bad input: one line, exit 2


def test_matching_pairs_at_once_equals_matching_each_pair_alone(zoo_files):
    from wsl.weights.align import align

    _, _, path = zoo_files
    with Zoo(path) as z:
        a, b = _weights(z, [0, 1, 2, 3]), _weights(z, [4, 5, 6, 7])
    batched = align(b, a, per_network=True)
    for n in range(4):
        one = align(b[n], a[n])
        assert all(torch.equal(x[n:n + 1], y) for x, y in zip(batched.params(), one.params()))
    with pytest.raises(InputError, match="one network or one per network"):
        align(b[:2], a[:3], per_network=True)

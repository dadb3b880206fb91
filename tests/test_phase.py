"""Phase diagrams: cell values held to per-cell reductions computed by hand, empty cells, the
command line's PNG and table, and its one-line errors."""
import shutil

import h5py
import numpy as np
import pytest

from conftest import generate_zoo
from wsl.cli import main
from wsl.cli.plots import phase_diagram
from wsl.landscape.phase import PhaseGrid, axis_scale, format_table, phase_grid
from zoo.errors import InputError
from zoo.store import STATUS_DIVERGED, STATUS_PENDING, Zoo, write_annotations

# a 2 x 3 grid (data fraction x learning rate), 2 seeds per cell, 2 epochs
GRID_ZOO = {"name": "phase_tiny", "seed": 3, "num_models": 12, "epochs": 2, "checkpoints": [0, 1, 2],
            "task": {"name": "digits", "n_train": 200, "n_val": 97},
            "architecture": {"name": "mlp", "hidden": [6, 5]},
            "hparams": {"data_fraction": {"grid": [0.5, 1.0]}, "lr": {"grid": [0.01, 0.1, 1.0]},
                        "optimizer": "sgd", "momentum": 0.9, "init_scale": {"uniform": [0.5, 2.0]}},
            "training": {"chunk_size": 12}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors on shared cores (see conftest)."""


@pytest.fixture(scope="module")
def grid_zoo(tmp_path_factory):
    return generate_zoo(GRID_ZOO, tmp_path_factory.mktemp("phase") / "zoo.h5")


@pytest.fixture
def emptied_zoo(grid_zoo, tmp_path):
    """A copy whose cell (data_fraction 0.5, lr 1.0) is all pending and (1.0, 0.01) all diverged."""
    path = tmp_path / "emptied.h5"
    shutil.copy(grid_zoo, path)
    with Zoo(path) as z:
        df, lr = z.hparam("data_fraction"), z.hparam("lr")
    status = {STATUS_PENDING: (df == 0.5) & (lr == 1.0), STATUS_DIVERGED: (df == 1.0) & (lr == 0.01)}
    with h5py.File(path, "a") as f:
        s = f["models/status"][()]
        for code, rows in status.items():
            s[rows] = code
        f["models/status"][...] = s
    return path


def by_hand(path, metric, checkpoint=-1, reduce=np.mean):
    """{(data_fraction, lr): reduction over the cell's done runs with a value}, from Zoo's own columns."""
    with Zoo(path) as z:
        df, lr, done = z.hparam("data_fraction"), z.hparam("lr"), z.done
        vals = z.column(metric, checkpoint).astype(np.float64)
    out = {}
    for d in (0.5, 1.0):
        for r in (0.01, 0.1, 1.0):
            cell = vals[done & (df == d) & (lr == r) & np.isfinite(vals)]
            out[d, r] = reduce(cell) if len(cell) else np.nan
    return out


@pytest.mark.parametrize("reduce,fn", [("mean", np.mean), ("median", np.median), ("std", np.std)])
@pytest.mark.parametrize("checkpoint", [-1, 1])
def test_cells_are_the_reductions_over_their_seeds(grid_zoo, reduce, fn, checkpoint):
    with Zoo(grid_zoo) as z:
        g = phase_grid(z, "data_fraction", "lr", "test_acc", checkpoint=checkpoint, reduce=reduce)
    assert g.x_values.tolist() == [0.5, 1.0] and g.y_values.tolist() == [0.01, 0.1, 1.0]
    assert g.values.shape == g.counts.shape == (3, 2) and (g.counts == 2).all()  # 2 seeds per cell
    want = by_hand(grid_zoo, "test_acc", checkpoint, fn)
    got = {(d, r): g.values[i, j] for i, r in enumerate(g.y_values) for j, d in enumerate(g.x_values)}
    assert got == pytest.approx(want, rel=1e-12)
    if reduce == "std":
        assert np.nanmax(g.values) > 0  # seeds of a cell differ


def test_swapped_axes_transpose_the_grid(grid_zoo):
    with Zoo(grid_zoo) as z:
        a = phase_grid(z, "data_fraction", "lr", "test_loss")
        b = phase_grid(z, "lr", "data_fraction", "test_loss")
    np.testing.assert_array_equal(a.values, b.values.T)


def test_empty_cells_are_nan_with_count_zero(emptied_zoo):
    with Zoo(emptied_zoo) as z:
        g = phase_grid(z, "data_fraction", "lr", "test_acc")
    assert g.counts.tolist() == [[2, 0], [2, 2], [0, 2]]  # rows lr 0.01, 0.1, 1.0; columns 0.5, 1.0
    assert np.isnan(g.values[0, 1]) and np.isnan(g.values[2, 0])
    assert np.isfinite(np.delete(g.values.ravel(), [1, 4])).all()
    want = by_hand(emptied_zoo, "test_acc")
    assert np.isnan(want[1.0, 0.01]) and g.values[1, 1] == pytest.approx(want[1.0, 0.1])


def test_annotations_and_gaps_are_drawable(grid_zoo, tmp_path):
    path = tmp_path / "annotated.h5"
    shutil.copy(grid_zoo, path)
    sharp = np.arange(12, dtype=np.float32) ** 2
    sharp[0] = np.nan  # a run not annotated: left out of its cell
    write_annotations(path, {"hessian_trace": sharp}, {"checkpoint_epoch": 2})
    with Zoo(path) as z:
        g = phase_grid(z, "data_fraction", "lr", "hessian_trace", checkpoint=0)  # annotations keep their epoch
        gap = phase_grid(z, "data_fraction", "lr", "acc_gap", checkpoint=1)
        df, lr = z.hparam("data_fraction"), z.hparam("lr")
        acc_gap = z.metric("train_acc")[:, 1].astype(np.float64) - z.metric("test_acc")[:, 1]
    i, j = list(g.y_values).index(lr[0]), list(g.x_values).index(df[0])
    assert g.counts[i, j] == 1 and g.counts.sum() == 11  # run 0's cell keeps its other seed
    want = [[sharp[(lr == r) & (df == d) & ~np.isnan(sharp)].mean() for d in g.x_values] for r in g.y_values]
    assert g.values == pytest.approx(np.array(want), rel=1e-6)
    assert gap.values == pytest.approx(np.array([[acc_gap[(lr == r) & (df == d)].mean() for d in gap.x_values]
                                                 for r in gap.y_values]))


def test_bad_axes_and_metrics_are_input_errors(grid_zoo):
    with Zoo(grid_zoo) as z:
        for args, words in [(("momentum", "lr", "test_acc"), "found 1 value"),  # a fixed hyperparameter
                            (("width", "lr", "test_acc"), "found no hyperparameter"),
                            (("lr", "lr", "test_acc"), "both 'lr'"),
                            (("data_fraction", "lr", "sharpness"), "expected a metric"),
                            (("data_fraction", "lr", "optimizer"), "numeric")]:
            with pytest.raises(InputError, match=words):
                phase_grid(z, *args)
        with pytest.raises(InputError, match="reduce"):
            phase_grid(z, "data_fraction", "lr", "test_acc", reduce="max")
        # a sampled hyperparameter has as many values as runs: an axis only while that is a few
        assert phase_grid(z, "init_scale", "lr", "test_acc").counts.sum(0).tolist() == [1] * 12


def test_axis_scales():
    assert axis_scale(np.array([0.001, 0.00316, 0.01, 0.0316])) == "log"
    assert axis_scale(np.array([0.05, 0.09, 0.16, 0.3, 0.55, 1.0])) == "log"
    assert axis_scale(np.array([0.25, 0.5, 0.75, 1.0])) == "linear"
    assert axis_scale(np.array([16, 32, 64])) == "log"
    assert axis_scale(np.array([0.0, 0.1, 0.5])) == "category"
    assert axis_scale(np.array(["adam", "sgd"])) == "category"
    assert axis_scale(np.array([0.001, 0.1])) == "log" and axis_scale(np.array([0.5, 1.0])) == "linear"


def test_cli_writes_png_and_table(grid_zoo, tmp_path, capsys):
    png = tmp_path / "figs" / "phase.png"
    assert main(["zoo", "phase", str(grid_zoo), "--x", "data_fraction", "--y", "lr", "--metric", "test_acc",
                 "--reduce", "median", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "test_acc at epoch 2, median over seeds" in out and f"written to {png}" in out
    with Zoo(grid_zoo) as z:
        g = phase_grid(z, "data_fraction", "lr", "test_acc", reduce="median")
    assert format_table(g, "data_fraction", "lr") in out
    assert f"{g.values[2, 0]:.4g} (2)" in out.splitlines()[2]  # highest lr first, as drawn


def test_cli_counts_empty_cells(emptied_zoo, tmp_path, capsys):
    png = tmp_path / "phase.png"
    assert main(["zoo", "phase", str(emptied_zoo), "--x", "lr", "--y", "data_fraction", "--metric", "train_loss",
                 "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "2 of 6 cells have no done run with a value of train_loss (blank)" in out
    assert "2 diverged and 2 pending runs" in out and png.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("args,words", [
    (["--x", "momentum", "--y", "lr", "--metric", "test_acc"], "--x 'momentum': expected a hyperparameter"),
    (["--x", "data_fraction", "--y", "depth", "--metric", "test_acc"], "--y 'depth': expected a hyperparameter"),
    (["--x", "data_fraction", "--y", "lr", "--metric", "hessian_trace"], "(none: see wsl zoo annotate)"),
    (["--x", "data_fraction", "--y", "lr", "--metric", "test_acc", "--checkpoint", "7"], "checkpoint position 7"),
])
def test_cli_errors_are_one_line(grid_zoo, tmp_path, capsys, args, words):
    png = tmp_path / "phase.png"
    assert main(["zoo", "phase", str(grid_zoo), *args, "--out", str(png)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("wsl: error: ") and words in err
    assert not png.exists()


def test_plot_of_categories_and_blank_cells(tmp_path):
    g = PhaseGrid(np.array(["adam", "sgd"]), np.array([0.0, 0.1, 0.5]),
                  np.array([[0.5, np.nan], [0.9, 0.2], [np.nan, 0.7]]), np.array([[3, 0], [3, 3], [0, 3]]))
    out = phase_diagram(g, "optimizer", "dropout", "val_acc, mean over seeds", "t", tmp_path / "p.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_color_scale_is_log_for_positive_values_spanning_orders_of_magnitude():
    from matplotlib.colors import LogNorm

    from wsl.cli.plots import color_norm

    spread = np.array([[0.5, 8.0], [np.nan, 120.0]])
    assert isinstance(color_norm(spread), LogNorm) and color_norm(spread).vmin == 0.5
    assert not isinstance(color_norm(np.array([[0.5, 0.9]])), LogNorm)  # one order: linear
    assert not isinstance(color_norm(np.array([[-1.0, 500.0]])), LogNorm)  # not all positive: linear
    assert not isinstance(color_norm(spread, "linear"), LogNorm)
    with pytest.raises(InputError, match="must all be positive"):
        color_norm(np.array([[0.0, 1.0]]), "log")

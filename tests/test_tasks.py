"""Tests for zoo.tasks: fixed splits, layouts, train-only standardisation and clear IDX errors."""
from __future__ import annotations

import gzip
import hashlib
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo import tasks
from zoo.tasks import TASKS, TaskData, load_idx_images, load_task, read_idx, resolve_idx_dir

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}


def write_idx(path: Path, array: np.ndarray) -> bytes:
    """Write ``array`` as an IDX file (gzip when the name ends in .gz); return the uncompressed bytes."""
    array = np.asarray(array)
    header = bytes([0, 0, _IDX_CODES[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return data


def make_fake_idx_dir(root: Path, name: str = "mnist", n_test: int = 100, n_train: int = 0, gz: bool = True) -> Path:
    """A ``root/<name>/`` folder of random 28x28 MNIST-style IDX files; returns ``root``."""
    rng = np.random.default_rng(0)
    folder = root / name
    folder.mkdir(parents=True)
    ext = ".gz" if gz else ""
    for part, n in (("t10k", n_test), ("train", n_train)):
        if n:
            write_idx(folder / f"{part}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
            write_idx(folder / f"{part}-labels-idx1-ubyte{ext}", rng.integers(0, 10, n, dtype=np.uint8))
    return root


def assert_same(a: TaskData, b: TaskData) -> None:
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(a, f"x_{s}"), getattr(b, f"x_{s}"))
        assert torch.equal(getattr(a, f"y_{s}"), getattr(b, f"y_{s}"))


@pytest.fixture(scope="module")
def digits() -> TaskData:
    return load_task("digits")


# ---------------------------------------------------------------------------------------------
# Registry and option errors

def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError) as err:
        load_task("cifar-1000")
    msg = str(err.value)
    assert "cifar-1000" in msg
    for name in TASKS:
        assert name in msg


def test_unknown_option_is_named_with_task_and_accepted_options():
    with pytest.raises(ValueError) as err:
        load_task("digits", n_trian=10)
    msg = str(err.value)
    assert "n_trian" in msg and "digits" in msg and "n_train" in msg and "layout" in msg


def test_bad_option_values_are_rejected():
    with pytest.raises(ValueError, match="layout"):
        load_task("sine", layout="volume")
    with pytest.raises(ValueError, match="exceeds|leaves no test"):
        load_task("digits", n_train=1500, n_val=297)
    with pytest.raises(ValueError, match="downsample"):
        tasks._downsample(np.zeros((1, 28, 28)), 3, "mnist")


def test_registry_is_a_plain_extensible_dict(digits):
    TASKS["digits-copy"] = lambda *, layout="flat": digits
    try:
        assert load_task("digits-copy") is digits
        with pytest.raises(ValueError, match="split_seed"):
            load_task("digits-copy", split_seed=1)
    finally:
        del TASKS["digits-copy"]


# ---------------------------------------------------------------------------------------------
# digits

def test_digits_shapes_dtypes_and_layouts(digits):
    image = load_task("digits", layout="image")
    assert digits.input_shape == (64,) and image.input_shape == (1, 8, 8)
    assert (digits.kind, digits.output_dim, digits.num_classes) == ("classification", 10, 10)
    for task, shape in ((digits, (64,)), (image, (1, 8, 8))):
        for s, n in (("train", 1000), ("val", 297), ("test", 500)):
            x, y = getattr(task, f"x_{s}"), getattr(task, f"y_{s}")
            assert x.dtype == torch.float32 and tuple(x.shape) == (n, *shape)
            assert y.dtype == torch.int64 and tuple(y.shape) == (n,)
    # The two layouts hold the same examples in the same order.
    assert torch.equal(image.x_train.reshape(1000, -1), digits.x_train)
    assert torch.equal(image.y_test, digits.y_test)
    assert set(digits.y_train.tolist()) == set(range(10))


def test_digits_is_deterministic_and_split_seed_changes_the_split(digits):
    assert_same(digits, load_task("digits"))
    other = load_task("digits", split_seed=1)
    assert other.info["split_indices"]["train"] != digits.info["split_indices"]["train"]
    assert not torch.equal(other.x_train, digits.x_train)


def test_digits_splits_are_disjoint_and_cover_everything(digits):
    idx = {s: set(v) for s, v in digits.info["split_indices"].items()}
    assert not idx["train"] & idx["val"] and not idx["train"] & idx["test"] and not idx["val"] & idx["test"]
    assert idx["train"] | idx["val"] | idx["test"] == set(range(1797))


def test_digits_size_options():
    task = load_task("digits", n_train=300, n_val=100)
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (300, 100, 1397)


def test_standardisation_uses_training_statistics_only(digits):
    from sklearn.datasets import load_digits

    raw = load_digits().images / 16.0
    train_raw = raw[digits.info["split_indices"]["train"]]
    assert digits.info["x_mean"] == pytest.approx(train_raw.mean())
    assert digits.info["x_std"] == pytest.approx(train_raw.std())
    assert abs(digits.x_train.mean().item()) < 1e-5
    assert digits.x_train.std(correction=0).item() == pytest.approx(1.0, abs=1e-4)
    # Val and test are transformed with the train constants, so they are not exactly centred.
    test_raw = raw[digits.info["split_indices"]["test"]]
    expected = (test_raw - train_raw.mean()) / train_raw.std()
    assert np.allclose(digits.x_test.numpy(), expected.reshape(500, -1), atol=1e-5)


def test_to_moves_tensors_and_keeps_metadata(digits):
    moved = digits.to("cpu")
    assert moved is not digits and moved.info is digits.info and moved.input_shape == (64,)
    assert torch.equal(moved.x_val, digits.x_val)
    assert "digits" in repr(digits) and "1000/297/500" in repr(digits)


def test_taskdata_rejects_inconsistent_tensors():
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="x_val"):
        TaskData("t", "classification", (3,), 2, x, y, torch.zeros(4, 5), y, x, y)
    with pytest.raises(ValueError, match="regression"):
        TaskData("t", "regression", (3,), 1, x, y, x, y, x, y)


# ---------------------------------------------------------------------------------------------
# mnist1d

def test_mnist1d_shapes_determinism_and_global_rng_untouched():
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    flat = load_task("mnist1d", num_samples=500, n_val=50)
    assert np.random.rand() == expected_np and random.random() == expected_py
    assert flat.input_shape == (40,) and flat.num_classes == 10
    assert (len(flat.x_train), len(flat.x_val), len(flat.x_test)) == (350, 50, 100)
    assert flat.x_train.dtype == torch.float32 and flat.y_train.dtype == torch.int64
    assert abs(flat.x_train.mean().item()) < 1e-5

    image = load_task("mnist1d", num_samples=500, n_val=50, layout="image")
    assert image.input_shape == (1, 40) and tuple(image.x_test.shape) == (100, 1, 40)
    assert torch.equal(image.x_train.squeeze(1), flat.x_train)
    assert not torch.equal(load_task("mnist1d", num_samples=500, n_val=50, split_seed=3).x_train, flat.x_train)
    assert not torch.equal(load_task("mnist1d", num_samples=500, n_val=50, data_seed=7).x_test, flat.x_test)


def test_mnist1d_default_sizes():
    task = load_task("mnist1d")
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (3500, 500, 1000)
    assert set(task.info["split_indices"]["train"]).isdisjoint(task.info["split_indices"]["val"])


def test_mnist1d_n_train_caps_the_training_split_only():
    full = load_task("mnist1d", num_samples=500, n_val=50)
    capped = load_task("mnist1d", num_samples=500, n_val=50, n_train=100)
    assert (len(capped.x_train), len(capped.x_val), len(capped.x_test)) == (100, 50, 100)
    assert torch.equal(capped.y_test, full.y_test)
    assert set(capped.info["split_indices"]["train"]) <= set(full.info["split_indices"]["train"])
    with pytest.raises(ValueError, match=r"n_train=351 is more than the 350"):
        load_task("mnist1d", num_samples=500, n_val=50, n_train=351)


# ---------------------------------------------------------------------------------------------
# sine

def test_sine_regression_shapes_and_standardised_targets():
    task = load_task("sine")
    assert (task.kind, task.output_dim, task.num_classes, task.input_shape) == ("regression", 1, None, (32,))
    assert tuple(task.y_train.shape) == (2000, 1) and task.y_train.dtype == torch.float32
    assert (len(task.x_val), len(task.x_test)) == (500, 1000)
    assert abs(task.y_train.mean().item()) < 1e-4 and abs(task.x_train.mean().item()) < 1e-5
    freq = task.y_test * task.info["y_std"] + task.info["y_mean"]
    assert freq.min().item() >= 0.5 - 1e-5 and freq.max().item() <= 3.0 + 1e-5
    image = load_task("sine", layout="image", n_points=16)
    assert image.input_shape == (1, 16) and tuple(image.x_val.shape) == (500, 1, 16)


def test_sine_is_deterministic_and_seeds_matter():
    a = load_task("sine", n_train=50, n_val=10, n_test=20)
    assert_same(a, load_task("sine", n_train=50, n_val=10, n_test=20))
    assert not torch.equal(load_task("sine", n_train=50, n_val=10, n_test=20, split_seed=1).y_train, a.y_train)
    assert not torch.equal(load_task("sine", n_train=50, n_val=10, n_test=20, data_seed=1).x_train, a.x_train)


def test_sine_target_is_learnable_from_the_signal():
    """The frequency is recoverable from the signal: the FFT peak correlates with the target."""
    task = load_task("sine", n_train=400, n_val=10, n_test=10, n_points=64, noise=0.0, freq_min=1.0, freq_max=8.0)
    spectrum = torch.fft.rfft(task.x_train, dim=1).abs()
    peak = spectrum[:, 1:].argmax(dim=1).float()
    corr = torch.corrcoef(torch.stack([peak, task.y_train[:, 0]]))[0, 1].item()
    assert corr > 0.9


# ---------------------------------------------------------------------------------------------
# IDX parsing

def test_read_idx_round_trip_raw_and_gzip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, array)
        out = read_idx(tmp_path / name, expected_magic=0x803)
        assert out.dtype == np.uint8 and np.array_equal(out, array)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    write_idx(tmp_path / "f.idx", floats)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), floats)


def test_read_idx_missing_file(tmp_path):
    missing = tmp_path / "nowhere-idx3-ubyte"
    with pytest.raises(FileNotFoundError, match="nowhere-idx3-ubyte"):
        read_idx(missing)


def test_read_idx_not_idx(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not an IDX file at all")
    with pytest.raises(ValueError, match="notes.txt.*magic number 0x74686973"):
        read_idx(path)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="tiny.*not an IDX"):
        read_idx(tiny)


def test_read_idx_wrong_expected_magic(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(5, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"labels.*0x00000801.*expected 0x00000803"):
        read_idx(tmp_path / "labels", expected_magic=0x803)


def test_read_idx_truncated_raw_file(tmp_path):
    path = tmp_path / "cut-idx3-ubyte"
    data = write_idx(path, np.ones((10, 28, 28), dtype=np.uint8))
    path.write_bytes(data[:-100])
    with pytest.raises(ValueError) as err:
        read_idx(path)
    msg = str(err.value)
    assert "cut-idx3-ubyte" in msg and "truncated" in msg
    assert str(len(data)) in msg and str(len(data) - 100) in msg


def test_read_idx_truncated_gzip_file(tmp_path):
    path = tmp_path / "cut-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut-idx3-ubyte\.gz.*truncated.*need 39216 bytes, found"):
        read_idx(path)


def test_read_idx_trailing_data_and_corrupt_gzip(tmp_path):
    path = tmp_path / "long-idx1-ubyte"
    data = write_idx(path, np.arange(8, dtype=np.uint8))
    path.write_bytes(data + b"\x00\x01")
    with pytest.raises(ValueError, match=f"long-idx1-ubyte.*trailing.*need {len(data)} bytes, found {len(data) + 2}"):
        read_idx(path)
    bad = tmp_path / "bad-idx1-ubyte.gz"
    write_idx(bad, np.arange(200, dtype=np.uint8))
    raw = bytearray(bad.read_bytes())
    raw[-6] ^= 0xFF  # damage the CRC trailer
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"bad-idx1-ubyte\.gz.*corrupt gzip"):
        read_idx(bad)


def test_read_idx_md5_mismatch(tmp_path):
    path = tmp_path / "x-idx1-ubyte"
    data = write_idx(path, np.arange(7, dtype=np.uint8))
    good = hashlib.md5(data).hexdigest()
    assert read_idx(path, expected_md5=good).shape == (7,)
    with pytest.raises(ValueError) as err:
        read_idx(path, expected_md5="0" * 32)
    msg = str(err.value)
    assert "x-idx1-ubyte" in msg and "0" * 32 in msg and good in msg


# ---------------------------------------------------------------------------------------------
# MNIST-style loaders on small synthetic IDX folders

def test_loader_verifies_known_md5(tmp_path, monkeypatch):
    root = make_fake_idx_dir(tmp_path)
    # The random images cannot match the official MNIST md5.
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz.*md5.*2646ac647ad5339dbf082846283269ea"):
        load_idx_images("mnist", root)
    # With the fake files' own md5 registered, verification passes.
    folder = root / "mnist"
    sums = {stem: hashlib.md5(gzip.decompress((folder / f"{stem}.gz").read_bytes())).hexdigest()
            for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    monkeypatch.setitem(tasks.IDX_MD5, "mnist", sums)
    raw = load_idx_images("mnist", folder)
    images, labels = raw["test"]
    assert set(raw) == {"test"} and images.shape == (100, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    monkeypatch.setitem(tasks.IDX_MD5, "mnist", dict(sums, **{"t10k-labels-idx1-ubyte": "f" * 32}))
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*expected f{32}"):
        load_idx_images("mnist", folder)


def test_loader_label_count_mismatch_names_both_files(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*5 images.*t10k-labels-idx1-ubyte.*4 labels"):
        load_idx_images("mnist", folder, verify_md5=False)


def test_loader_missing_files_name_what_was_searched(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        load_task("fashion-mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte" in msg and str(tmp_path / "fashion-mnist") in msg
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((5, 28, 28), dtype=np.uint8))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_idx_images("mnist", tmp_path, verify_md5=False)


def test_data_dir_resolution_env_var_and_dataset_folder(tmp_path, monkeypatch):
    root = make_fake_idx_dir(tmp_path / "data", "fashion-mnist", n_test=20)
    monkeypatch.setenv("WSL_DATA", str(root))
    assert resolve_idx_dir("fashion-mnist") == (root / "fashion-mnist").resolve()
    # An explicit data_dir may be the dataset folder itself or its parent.
    assert resolve_idx_dir("fashion-mnist", root / "fashion-mnist") == (root / "fashion-mnist").resolve()
    assert resolve_idx_dir("fashion-mnist", root) == (root / "fashion-mnist").resolve()


def test_test_set_only_split_defaults_and_layouts(tmp_path):
    root = make_fake_idx_dir(tmp_path, n_test=100, gz=False)
    task = load_task("mnist", data_dir=root, verify_md5=False)
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (50, 10, 40)
    assert task.input_shape == (196,) and task.info["files_present"] == ["test"]
    idx = {s: set(v) for s, v in task.info["split_indices"].items()}
    assert idx["train"] | idx["val"] | idx["test"] == set(range(100)) and not idx["train"] & idx["test"]
    assert_same(task, load_task("mnist", data_dir=root, verify_md5=False))
    assert not torch.equal(load_task("mnist", data_dir=root, verify_md5=False, split_seed=5).x_train, task.x_train)

    full = load_task("mnist", data_dir=root, verify_md5=False, layout="image", downsample=1,
                     n_train=30, n_val=20, max_images=80)
    assert full.input_shape == (1, 28, 28)
    assert (len(full.x_train), len(full.x_val), len(full.x_test)) == (30, 20, 30)
    assert abs(full.x_train.mean().item()) < 1e-5


def test_downsample_is_average_pooling(tmp_path):
    root = make_fake_idx_dir(tmp_path, n_test=20)
    coarse = load_task("mnist", data_dir=root, verify_md5=False, layout="image", downsample=4)
    fine = load_task("mnist", data_dir=root, verify_md5=False, layout="image", downsample=1)
    assert coarse.input_shape == (1, 7, 7)
    pooled = torch.nn.functional.avg_pool2d(fine.x_train * fine.info["x_std"] + fine.info["x_mean"], 4)
    restored = coarse.x_train * coarse.info["x_std"] + coarse.info["x_mean"]
    assert torch.allclose(pooled, restored, atol=1e-5)


def test_training_files_give_train_val_and_t10k_is_test(tmp_path):
    root = make_fake_idx_dir(tmp_path, n_test=30, n_train=120)
    task = load_task("mnist", data_dir=root, verify_md5=False)
    assert task.info["files_present"] == ["test", "train"]
    assert (len(task.x_train), len(task.x_val), len(task.x_test)) == (108, 12, 30)
    assert task.info["split_pools"] == {"train": "train", "val": "train", "test": "t10k"}
    assert set(task.info["split_indices"]["train"]).isdisjoint(task.info["split_indices"]["val"])
    assert len(load_task("mnist", data_dir=root, verify_md5=False, n_val=40).x_val) == 40


# ---------------------------------------------------------------------------------------------
# The real MNIST / Fashion-MNIST test sets, where this checkout has them

def _real_dir(name: str) -> Path:
    try:
        return resolve_idx_dir(name)
    except FileNotFoundError:
        pytest.skip(f"real {name} IDX files not found (../shared/data or WSL_DATA)")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_idx_files(name):
    _real_dir(name)
    raw = load_idx_images(name)  # verifies the official md5
    images, labels = raw["test"]
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(labels.tolist()) == set(range(10))
    task = load_task(name, layout="image")
    assert task.info["md5_verified"] and task.input_shape == (1, 14, 14)
    sizes = (len(task.x_train), len(task.x_val), len(task.x_test))
    assert sizes == (5000, 1000, 4000) and sum(sizes) == 10000
    assert abs(task.x_train.mean().item()) < 1e-5

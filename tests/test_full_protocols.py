"""The full-size benchmark protocols on tiny synthetic files: MNIST / Fashion-MNIST with their
60,000 training images (classification and INR tasks, DWSNets' split), CIFAR-10 from its binary
batches (grayscale as the Small CNN Zoo's CIFAR10-GS), and the configs that use them."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from test_tasks import make_fake_idx_dir
from zoo import tasks
from zoo.config import load_config, parse_config
from zoo.errors import InputError, MissingFileError
from zoo.generate import generate
from zoo.signals import load_signals
from zoo.store import Zoo
from zoo.tasks import IDX_MD5, load_cifar10_images, load_idx_images, load_task, read_cifar10_batch

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(progress=False, log=lambda s: None)
NEW_CONFIGS = ("mnist_inr_full", "fashion_inr_full", "mnist_cnn_full", "fashion_cnn_full", "cifar10_cnn_gs")
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Only the folders a test names are searched, whatever the machine holds."""
    monkeypatch.delenv("WSL_DATA", raising=False)


def restored(task, split: str) -> np.ndarray:
    """A split's inputs with the task's standardisation undone (pixels in [0, 1])."""
    return (getattr(task, f"x_{split}") * task.info["x_std"] + task.info["x_mean"]).numpy()


def fake_md5s(folder: Path) -> dict[str, str]:
    return {s: hashlib.md5(gzip.decompress((folder / f"{s}.gz").read_bytes())).hexdigest() for s in STEMS}


# ----------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: the 60,000 training images

def test_images_all_is_train_then_t10k_and_test_only_ignores_the_training_files(tmp_path):
    root = make_fake_idx_dir(tmp_path, "fashion-mnist", n_test=12, n_train=30)
    raw = load_idx_images("fashion-mnist", root, verify_md5=False)
    full = load_task("fashion-mnist", data_dir=root, verify_md5=False, images="all", layout="image", downsample=1,
                     n_val=6)
    assert (len(full.x_train), len(full.x_val), len(full.x_test)) == (24, 6, 12)
    assert full.info["split_pools"] == {"train": "train", "val": "train", "test": "t10k"}
    # train and val are the training images (a seeded partition of them), test is t10k in file order
    idx = full.info["split_indices"]
    assert sorted(idx["train"] + idx["val"]) == list(range(30))
    np.testing.assert_allclose(restored(full, "train")[:, 0], raw["train"][0][idx["train"]] / 255, atol=1e-5)
    np.testing.assert_array_equal(full.y_val.numpy(), raw["train"][1][idx["val"]])
    np.testing.assert_allclose(restored(full, "test")[:, 0], raw["test"][0] / 255, atol=1e-5)
    np.testing.assert_array_equal(full.y_test.numpy(), raw["test"][1])
    # the default keeps configs written before the option as they were: the training files when present
    auto = load_task("fashion-mnist", data_dir=root, verify_md5=False, layout="image", downsample=1, n_val=6)
    assert torch.equal(auto.x_train, full.x_train) and torch.equal(auto.x_test, full.x_test)
    test_only = load_task("fashion-mnist", data_dir=root, verify_md5=False, images="test")
    assert test_only.info["files_present"] == ["test"] and test_only.info["split_pools"]["train"] == "t10k"
    assert (len(test_only.x_train), len(test_only.x_val), len(test_only.x_test)) == (6, 1, 5)
    with pytest.raises(InputError, match=r"option 'images' must be one of \['auto', 'test', 'all'\], got 'train'"):
        load_task("fashion-mnist", data_dir=root, verify_md5=False, images="train")


def test_the_official_md5_refuses_a_wrong_training_file_and_names_it(tmp_path, monkeypatch):
    for name in ("mnist", "fashion-mnist"):  # every file of both protocols has its checksum
        assert set(IDX_MD5[name]) == set(STEMS)
        assert all(len(v) == 32 and int(v, 16) >= 0 for v in IDX_MD5[name].values())
    root = make_fake_idx_dir(tmp_path, "mnist", n_test=10, n_train=20)
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte\.gz: md5 mismatch.*expected "
                                         r"6bbc9ace898e44ae57da46a324031adb"):
        load_task("mnist", data_dir=root, images="all")
    sums = fake_md5s(root / "mnist")
    monkeypatch.setitem(IDX_MD5, "mnist", sums)
    assert len(load_task("mnist", data_dir=root, images="all").x_test) == 10
    monkeypatch.setitem(IDX_MD5, "mnist", dict(sums, **{"train-labels-idx1-ubyte": "e" * 32}))
    with pytest.raises(InputError, match=r"train-labels-idx1-ubyte\.gz: md5 mismatch.*expected e{32}, found "
                                         + sums["train-labels-idx1-ubyte"]):
        load_task("mnist", data_dir=root, images="all")
    # a test-only protocol never reads the training files
    assert len(load_task("mnist", data_dir=root, images="test").x_test) == 4


def test_inr_source_all_follows_the_dwsnets_split(tmp_path, monkeypatch):
    root = make_fake_idx_dir(tmp_path, "mnist", n_test=8, n_train=20)
    monkeypatch.setitem(IDX_MD5, "mnist", {})  # random images: not the real files' checksums
    raw = load_idx_images("mnist", root)
    s = load_signals("mnist-inr", data_dir=str(root), source="all", n_train=15, n_val=5, n_test=8, target_range=[0, 1])
    src, split = s.fields["source_index"], s.fields["split"]
    assert len(s) == 28 and list(src) == sorted(src)  # signals in source order: training images, then t10k
    assert sorted(src[split == "test"]) == list(range(20, 28))  # test INRs: exactly the t10k images
    assert sorted(src[split != "test"]) == list(range(20))  # train and val: the training images
    assert (split == "val").sum() == 5 and (split == "train").sum() == 15
    images = np.concatenate([raw["train"][0], raw["test"][0]])
    labels = np.concatenate([raw["train"][1], raw["test"][1]])
    np.testing.assert_allclose(s.values[:, :, 0].numpy(), images[src].reshape(28, 784) / 255, atol=1e-6)
    np.testing.assert_array_equal(s.fields["label"], labels[src])
    assert "DWSNets" in s.info["split_protocol"]
    other = load_signals("mnist-inr", data_dir=str(root), source="all", n_train=15, n_val=5, n_test=8, split_seed=1)
    assert set(other.fields["source_index"][other.fields["split"] == "val"]) != set(src[split == "val"])
    assert set(other.fields["source_index"][other.fields["split"] == "test"]) == set(range(20, 28))
    with pytest.raises(InputError, match=r"n_train \+ n_val = 21 exceeds the 20 training images"):
        load_signals("mnist-inr", data_dir=str(root), source="all", n_train=16, n_val=5, n_test=8)
    with pytest.raises(InputError, match=r"n_test = 9 exceeds the 8 test images"):
        load_signals("mnist-inr", data_dir=str(root), source="all", n_train=15, n_val=5, n_test=9)
    with pytest.raises(InputError, match=r"option 'source' must be one of \['test', 'train', 'all'\]"):
        load_signals("mnist-inr", data_dir=str(root), source="both")


def test_missing_training_files_say_which_files_go_where(tmp_path, monkeypatch):
    root = make_fake_idx_dir(tmp_path / "only_test", "mnist", n_test=10)
    monkeypatch.setitem(IDX_MD5, "mnist", {})
    for load in (lambda: load_task("mnist", data_dir=root, images="all"),
                 lambda: load_signals("mnist-inr", data_dir=str(root), source="all", n_train=1, n_val=0, n_test=1)):
        with pytest.raises(MissingFileError) as err:
            load()
        msg = str(err.value)
        assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
        assert str((root / "mnist").resolve()) in msg and "next to the t10k files" in msg
    # nothing at all: every file of the protocol and every place searched are named
    with pytest.raises(MissingFileError) as err:
        load_signals("fashion-mnist-inr", data_dir=str(tmp_path / "empty"), source="all")
    msg = str(err.value)
    assert all(stem in msg for stem in STEMS) and "WSL_DATA" in msg and str(tmp_path / "empty") in msg


# ----------------------------------------------------------------------------------------------
# CIFAR-10, binary version

def write_cifar_batches(folder: Path, records: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random binary batches of ``records`` records each; returns each file's images and labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    out = {}
    for name in (*tasks.CIFAR10_TRAIN_FILES, tasks.CIFAR10_TEST_FILE):
        labels = rng.integers(0, 10, records, dtype=np.uint8)
        images = rng.integers(0, 256, (records, 3, 32, 32), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], images.reshape(records, -1)], axis=1).tobytes())
        out[name] = (images, labels.astype(np.int64))
    return out


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """A data folder whose cifar10/cifar-10-batches-bin/ holds six batches of 4 records."""
    monkeypatch.setattr(tasks, "CIFAR10_RECORDS_PER_FILE", 4)
    batches = write_cifar_batches(tmp_path / "data" / "cifar10" / tasks.CIFAR10_DIR, 4)
    return tmp_path / "data", batches


def test_cifar10_reads_the_records_and_concatenates_the_batches_in_order(cifar):
    root, batches = cifar
    raw = load_cifar10_images(root)
    train_x = np.concatenate([batches[f][0] for f in tasks.CIFAR10_TRAIN_FILES])
    np.testing.assert_array_equal(raw["train"][0], train_x)
    np.testing.assert_array_equal(raw["train"][1], np.concatenate([batches[f][1] for f in tasks.CIFAR10_TRAIN_FILES]))
    np.testing.assert_array_equal(raw["test"][0], batches["test_batch.bin"][0])
    # a record is the label, then the red, green and blue planes, each row by row
    data = (root / "cifar10" / tasks.CIFAR10_DIR / "data_batch_2.bin").read_bytes()
    second = data[tasks.CIFAR10_RECORD:2 * tasks.CIFAR10_RECORD]
    image = raw["train"][0][5]  # batch 2, record 1
    assert second[0] == raw["train"][1][5] and second[1 + 1024 + 32 + 3] == image[1, 1, 3]
    task = load_task("cifar10", data_dir=root, layout="image", n_val=4)
    assert task.input_shape == (3, 32, 32) and (len(task.x_train), len(task.x_val), len(task.x_test)) == (16, 4, 4)
    np.testing.assert_allclose(restored(task, "test"), batches["test_batch.bin"][0] / 255, atol=1e-5)
    np.testing.assert_allclose(restored(task, "val"), train_x[task.info["split_indices"]["val"]] / 255, atol=1e-5)
    # the folder may also be named directly
    folder = root / "cifar10" / tasks.CIFAR10_DIR
    assert tasks.resolve_cifar10_dir(folder) == folder.resolve()


def test_cifar10_grayscale_is_the_channel_mean_of_the_small_cnn_zoo(cifar):
    root, batches = cifar
    gray = load_task("cifar10", data_dir=root, layout="image", n_val=4, grayscale=True)
    assert gray.input_shape == (1, 32, 32) and gray.info["options"]["grayscale"] is True
    rgb = batches["test_batch.bin"][0].astype(np.float64)
    expected = (rgb[:, 0] + rgb[:, 1] + rgb[:, 2]) / 3 / 255  # tf.math.reduce_mean over channels
    np.testing.assert_allclose(restored(gray, "test")[:, 0], expected, atol=1e-5)
    luminance = (0.2989 * rgb[:, 0] + 0.5870 * rgb[:, 1] + 0.1140 * rgb[:, 2]) / 255
    assert np.abs(restored(gray, "test")[:, 0] - luminance).max() > 0.05  # not rgb_to_grayscale's weights
    flat = load_task("cifar10", data_dir=root, n_val=4, grayscale=True)
    assert flat.input_shape == (1024,)
    with pytest.raises(InputError, match="option 'grayscale' must be true or false"):
        load_task("cifar10", data_dir=root, grayscale="yes")


def test_cifar10_refuses_files_that_are_not_binary_batches(cifar):
    root, _ = cifar
    folder = root / "cifar10" / tasks.CIFAR10_DIR
    bad = folder / "data_batch_3.bin"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(InputError, match=rf"{bad}: not a CIFAR-10 binary batch: expected 12292 bytes \(4 records "
                                         r"of 1 label byte \+ 3,072 pixel bytes\), found 12287"):
        load_task("cifar10", data_dir=root)
    pickle_like = folder / "pickled.bin"
    pickle_like.write_bytes(b"\x80\x02}q\x00" + bytes(100))
    with pytest.raises(InputError, match="first label byte is 128.*python version"):
        read_cifar10_batch(pickle_like)
    record = np.zeros((4, tasks.CIFAR10_RECORD), dtype=np.uint8)
    record[2, 0] = 10
    wrong_label = folder / "wrong_label.bin"
    wrong_label.write_bytes(record.tobytes())
    with pytest.raises(InputError, match="record 2 has label 10, expected 0-9"):
        read_cifar10_batch(wrong_label)


def test_cifar10_missing_files_say_which_files_go_where(tmp_path, cifar):
    with pytest.raises(MissingFileError) as err:
        load_task("cifar10", data_dir=tmp_path / "nothing")
    msg = str(err.value)
    assert "data_batch_1.bin" in msg and "data_batch_5.bin" in msg and "test_batch.bin" in msg
    assert "cifar-10-batches-bin" in msg and "WSL_DATA" in msg and str(tmp_path / "nothing") in msg
    root, _ = cifar
    (root / "cifar10" / tasks.CIFAR10_DIR / "test_batch.bin").unlink()
    with pytest.raises(MissingFileError, match=r"cifar10: test_batch.bin not found in .*cifar-10-batches-bin"):
        load_task("cifar10", data_dir=root)


# ----------------------------------------------------------------------------------------------
# The configs

def test_new_configs_parse_and_say_what_they_need():
    for name in NEW_CONFIGS:
        c = load_config(ROOT / "configs" / "zoo" / f"{name}.yaml")
        assert c.name == name
    inr = load_config(ROOT / "configs" / "zoo" / "mnist_inr_full.yaml")
    assert inr.num_models == 70000 and inr.task["source"] == "all"
    assert (inr.task["n_train"], inr.task["n_val"], inr.task["n_test"]) == (55000, 5000, 10000)
    gs = load_config(ROOT / "configs" / "zoo" / "cifar10_cnn_gs.yaml")
    assert gs.epochs == 86 and gs.checkpoints == [0, 1, 2, 3, 20, 40, 60, 80, 86]
    assert gs.architecture["channels"] == [16, 16, 16] and gs.task["grayscale"] is True


def _tiny(name: str, data_dir: Path) -> dict:
    """A new config shrunk to seconds: few images, models and epochs, its data in ``data_dir``."""
    raw = yaml.safe_load((ROOT / "configs" / "zoo" / f"{name}.yaml").read_text())
    raw["task"]["data_dir"] = str(data_dir)
    if "inr" in name:
        raw["task"].update(n_train=3, n_val=1, n_test=2)
        raw.update(num_models=6, epochs=2, checkpoints=[0, 2])
    else:
        raw["task"].update(n_val=4)
        raw.update(num_models=3, epochs=1, checkpoints=[0, 1])
        raw["hparams"]["batch_size"] = 8
    return raw


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_new_configs_fail_clearly_without_their_files(name, tmp_path):
    with pytest.raises(MissingFileError) as err:
        generate(parse_config(_tiny(name, tmp_path)), tmp_path / "never.h5", **QUIET)
    msg = str(err.value)
    expected = ("data_batch_1.bin", "test_batch.bin") if name.startswith("cifar") else STEMS
    assert all(f in msg for f in expected) and str(tmp_path) in msg and "WSL_DATA" in msg, msg
    assert not (tmp_path / "never.h5").exists()


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_a_tiny_zoo_from_each_new_config(name, tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "CIFAR10_RECORDS_PER_FILE", 4)
    dataset = {"mnist": "mnist", "fashion": "fashion-mnist"}.get(name.split("_")[0])
    if dataset is None:
        write_cifar_batches(tmp_path / "cifar10" / tasks.CIFAR10_DIR, 4)
    else:
        make_fake_idx_dir(tmp_path, dataset, n_test=6, n_train=12)
        monkeypatch.setitem(IDX_MD5, dataset, fake_md5s(tmp_path / dataset))
    path = generate(parse_config(_tiny(name, tmp_path)), tmp_path / "zoo.h5", **QUIET)
    with Zoo(path) as z:
        assert z.done.all()
        if "inr" in name:  # test INRs fit t10k images (source index >= 12), train and val INRs training images
            test = z.signal("split") == "test"
            assert test.sum() == 2 and (z.signal("source_index")[test] >= 12).all()
            assert (z.signal("source_index")[~test] < 12).all()
        elif name.startswith("cifar"):
            assert sum(p.numel for p in z.spec.params) == 4970  # the Small CNN Zoo's network
            assert z.task["input_shape"] == [1, 32, 32] and z.task["sizes"] == {"train": 16, "val": 4, "test": 4}
        else:  # train and val from the 12 training images, test all 6 t10k images
            assert z.task["split_pools"] == {"train": "train", "val": "train", "test": "t10k"}
            assert z.task["sizes"] == {"train": 8, "val": 4, "test": 6} and z.task["md5_verified"]


# ----------------------------------------------------------------------------------------------
# The real training files, where this checkout has them

@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_training_files(name):
    try:
        folder = tasks.resolve_idx_dir(name)
    except FileNotFoundError:
        pytest.skip(f"real {name} IDX files not found (../shared/data or WSL_DATA)")
    if tasks._find_idx_file(folder, "train-images-idx3-ubyte") is None:
        pytest.skip(f"{folder} holds only the {name} test set, not the training files")
    raw = load_idx_images(name, parts=("train", "test"))  # verifies the official md5 of all four files
    assert raw["train"][0].shape == (60000, 28, 28) and raw["test"][0].shape == (10000, 28, 28)

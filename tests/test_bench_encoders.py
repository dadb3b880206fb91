"""``scripts/bench_encoders.py``'s helpers: encoders built at their shipped settings, and the share
of a step's time spent in matrix products."""
import pytest
import torch

from conftest import load_script


def _bench():
    return load_script("bench_encoders")


def test_shipped_settings_read_the_config_and_dense_twins_share_it():
    bench = _bench()
    kw, batch = bench.shipped_settings("mnist_inr", "ngnn")
    assert kw == {"hidden": 64, "layers": 4, "fourier": 16, "fourier_scale": 0.3} and batch == 64
    assert bench.shipped_settings("mnist_inr", "ngnn-dense") == (kw, batch)
    assert bench.shipped_settings("mnist_inr", "hnp")[0]["channels"] == 32
    with pytest.raises(SystemExit, match="no shipped config"):
        bench.shipped_settings("mnist_inr", "deepsets")


def test_matmul_share_tells_products_from_elementwise_work(one_thread):
    bench = _bench()
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    x = torch.randn(2_000_000)
    assert bench.matmul_share(lambda: [a @ b for _ in range(20)]) > 0.9
    assert bench.matmul_share(lambda: [x.sin() for _ in range(5)]) < 0.1
    mixed = bench.matmul_share(lambda: ([a @ b for _ in range(20)], [x.sin() for _ in range(5)]))
    assert 0.05 < mixed < 0.95

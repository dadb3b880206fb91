"""The ``wsl`` command line: generate, info (with a plot), verify, merge, and its error handling."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from wsl.cli import main
from zoo.store import Zoo

CONFIG = {
    "name": "cli_zoo", "seed": 1, "num_models": 16, "epochs": 2, "checkpoints": [0, 2],
    "task": {"name": "digits", "n_train": 200, "n_val": 97},
    "architecture": {"name": "mlp", "hidden": [8, 8]},
    "hparams": {"lr": {"log_uniform": [0.003, 0.3]}, "optimizer": {"choice": ["sgd", "adam"]}},
    "training": {"chunk_size": 8},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_config(path: Path, **over) -> Path:
    path.write_text(yaml.safe_dump(dict(CONFIG, **over)))
    return path


@pytest.fixture(scope="module")
def cli_zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    out = d / "zoo.h5"
    assert main(["zoo", "generate", str(write_config(d / "cli_zoo.yaml")), "--out", str(out), "--quiet"]) == 0
    return out


def test_generate_then_info_with_plot(cli_zoo, tmp_path, capsys):
    png = tmp_path / "plots" / "hist.png"
    assert main(["zoo", "info", str(cli_zoo), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    with Zoo(cli_zoo) as z:
        assert len(z) == 16 and z.done.all()
        n_params = z.spec.num_params
        acc = z.metric("test_acc")[:, -1]
    assert n_params == 64 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10
    assert "cli_zoo" in out
    assert "task       digits (classification, input [64], output 10)" in out
    assert "mlp: layers.0 linear 64->8 -> layers.1 linear 8->8 -> layers.2 linear 8->10, activation relu" in out
    assert f"params     {n_params} per model" in out
    assert "models     16 (16 done, 0 diverged, 0 pending)" in out
    assert "checkpts   epochs [0, 2]" in out
    q = np.quantile(acc, [0, 0.05, 0.5, 0.95, 1])
    line = next(l for l in out.splitlines() if l.strip().startswith("test_acc"))
    assert line.split(None, 1)[1] == " / ".join(f"{x:.4g}" for x in q)
    assert "optimizer     adam x" in out and "lr            " in out
    assert f"histogram written to {png}" in out
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000


def test_generate_resumes_and_refuses_another_config(cli_zoo, tmp_path, capsys):
    before = cli_zoo.read_bytes()
    cfg = tmp_path / "cli_zoo.yaml"
    assert main(["zoo", "generate", str(write_config(cfg)), "--out", str(cli_zoo), "--quiet"]) == 0
    assert "16 of 16 models already finished" in capsys.readouterr().out
    assert main(["zoo", "generate", str(write_config(cfg, seed=2)), "--out", str(cli_zoo), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsl: error: ") and "different config" in err and "Traceback" not in err
    assert cli_zoo.read_bytes() == before


def test_shards_and_merge_from_the_command_line(cli_zoo, tmp_path, capsys):
    cfg = str(write_config(tmp_path / "cli_zoo.yaml"))
    parts = [str(tmp_path / f"part{i}.h5") for i in range(2)]
    for i, p in enumerate(parts):
        assert main(["zoo", "generate", cfg, "--shard", f"{i}/2", "--out", p, "--quiet"]) == 0
    merged = tmp_path / "merged.h5"
    assert main(["zoo", "merge", *parts, "--out", str(merged)]) == 0
    assert f"merged 2 parts into {merged}" in capsys.readouterr().out
    with Zoo(merged) as m, Zoo(cli_zoo) as z:
        for p in z.spec.params:
            assert np.array_equal(m.file["params"][p.name][()], z.file["params"][p.name][()])
    assert main(["zoo", "merge", parts[0], "--out", str(tmp_path / "m2.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsl: error: ") and "missing [1]" in err
    assert main(["zoo", "verify", str(merged)]) == 0


def test_bad_config_exits_2_with_the_field(tmp_path, capsys):
    bad = write_config(tmp_path / "bad.yaml", hparams={"lr": {"log_uniform": [0.1, 0.01]}})
    out = tmp_path / "never.h5"
    assert main(["zoo", "generate", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsl: error: ") and "hparams.lr" in err and "low 0.1 > high 0.01" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_config_from_the_installed_script(tmp_path):
    """The real entry point: exit status 2, one line on stderr, no traceback."""
    bad = write_config(tmp_path / "bad.yaml", hparams={"optimiser": "sgd"})
    script = Path(sys.executable).parent / "wsl"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "wsl.cli"]
    r = subprocess.run([*cmd, "zoo", "generate", str(bad), "--quiet", "--out", str(tmp_path / "z.h5")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("wsl: error: ") and "hparams.optimiser" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("shard,msg", [("3/2", "0 <= i < n"), ("1/0", "0 <= i < n"), ("-1/2", "0 <= i < n"),
                                       ("half", "expected i/n")])
def test_bad_shard_exits_2(tmp_path, capsys, shard, msg):
    cfg = str(write_config(tmp_path / "c.yaml"))
    out = tmp_path / "z.h5"
    assert main(["zoo", "generate", cfg, f"--shard={shard}", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsl: error: --shard: ") and msg in err and repr(shard) in err
    assert not out.exists()


def test_empty_shard_exits_2(tmp_path, capsys):
    cfg = str(write_config(tmp_path / "c.yaml"))  # 16 models
    out = tmp_path / "z.h5"
    assert main(["zoo", "generate", cfg, "--shard", "0/20", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsl: error: --shard: ") and "holds no models" in err and "at most 16 shards" in err
    assert not out.exists() and not (tmp_path / "z.h5.tmp").exists()


def test_generate_with_progress_bar(cli_zoo, tmp_path, capsys):
    out = tmp_path / "zoo.h5"
    assert main(["zoo", "generate", str(write_config(tmp_path / "cli_zoo.yaml")), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "chunk 1/2 written: models 0..7" in cap.out and "chunk 2/2 written: models 8..15" in cap.out
    assert "16/16 models" in cap.err  # the bar reached the end
    with Zoo(out) as a, Zoo(cli_zoo) as b:
        assert np.array_equal(a.file["params"]["layers.0.weight"][()], b.file["params"]["layers.0.weight"][()])


def test_missing_inputs_exit_2(tmp_path, capsys):
    assert main(["zoo", "generate", str(tmp_path / "nope.yaml"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsl: error: ") and "nope.yaml" in err and "digits_mlp" in err  # lists shipped configs
    assert main(["zoo", "info", str(tmp_path / "nope.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wsl: error: ") and "nope.h5: zoo file not found" in err
    assert main(["zoo", "verify", str(tmp_path / "nope.h5")]) == 1
    assert "file not found" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["zoo", "generate"])  # argparse usage error
    assert e.value.code == 2

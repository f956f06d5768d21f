"""The `cl-bench` command as `pip install .` installs it, and the notebook API (`cl_bench.load_results`, `run`)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import cl_bench
import run_suite
from benchmark.errors import ConfigError
from benchmark.results import iter_results
from cl_bench.cli import main as cli_main
from reports.__main__ import main as reports_main
from test_reports import fabricate, results_dir  # noqa: F401  (fixture: stored results with known numbers)
from test_suite import ROOT

NUMBERS = ("run_id", "accuracy_matrix", "metrics", "class_order", "task_classes", "test_sizes", "config",
           "retention_protocols", "retention_eval")


def install(target: Path) -> Path:
    """`pip install .` of a copy of this repository into `target` (no dependencies: they are this venv's); returns
    the installed `cl-bench` script."""
    source = target.parent / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "results", "data", "__pycache__",
                                                                 "build", "*.egg-info", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(source)], check=True, capture_output=True, timeout=300)
    return target / "bin" / "cl-bench"


def numbers(out: Path) -> dict:
    return {r["run_id"]: {key: r[key] for key in NUMBERS} for r in iter_results(out)}


def leaderboard_without_times(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "leaderboard.csv").drop(columns=["wall_time_s", "train_images_per_s", "eval_images_per_s",
                                                                "peak_host_mb", "peak_device_mb"])


def test_installed_cl_bench_run_and_the_api_give_run_suites_results(write_suite, tmp_path):
    config = write_suite(strategies={"linear": {"epochs": 1}})
    assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "script"), "--quiet"]) == 0

    script = install(tmp_path / "installed")
    env = {**os.environ, "PYTHONPATH": str(script.parent.parent)}  # the installed copy, not this checkout
    process = subprocess.run([str(script), "run", "--config", str(config), "--out", str(tmp_path / "command"),
                              "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    assert "1 runs done, 0 already finished, 0 failed, 0 diverged" in process.stdout

    frame = cl_bench.run(yaml.safe_load(config.read_text()), tmp_path / "api")
    expected = numbers(tmp_path / "script")
    assert len(expected) == 1
    assert numbers(tmp_path / "command") == expected and numbers(tmp_path / "api") == expected
    for other in ("command", "api"):
        pd.testing.assert_frame_equal(leaderboard_without_times(tmp_path / other),
                                      leaderboard_without_times(tmp_path / "script"))
    (result,) = iter_results(tmp_path / "script")
    assert frame["run_id"].tolist() == [result["run_id"]]
    assert frame.loc[0, "avg_acc"] == result["metrics"]["avg_acc"]
    assert frame.loc[0, "params_trainable"] == result["cost"]["params_trainable"]
    assert frame.loc[0, "accuracy_matrix"] == result["accuracy_matrix"]
    assert (tmp_path / "api" / "report.html").is_file()


def test_dry_run_and_report_are_the_scripts(write_suite, tmp_path, capsys, results_dir):  # noqa: F811
    config = write_suite(strategies={"linear": {"epochs": 1}, "lora": {"epochs": 1}})
    assert run_suite.main(["--config", str(config), "--dry-run"]) == 0
    script_plan = capsys.readouterr().out
    assert cli_main(["dry-run", "--config", str(config)]) == 0
    assert capsys.readouterr().out == script_plan and "2 runs planned" in script_plan

    assert reports_main([str(results_dir), "--out", str(tmp_path / "module")]) == 0
    assert cli_main(["report", str(results_dir), "--out", str(tmp_path / "command")]) == 0
    for name in ("leaderboard.csv", "leaderboard.md", "report.html"):
        assert (tmp_path / "command" / name).read_bytes() == (tmp_path / "module" / name).read_bytes()


def test_a_missing_or_unknown_command_prints_the_usage_and_exits_2(capsys):
    assert cli_main([]) == 2
    assert "choose one of run, dry-run, report" in capsys.readouterr().err
    assert cli_main(["train"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown command 'train'; choose one of run, dry-run, report")
    assert cli_main(["--help"]) == 0 and "dry-run" in capsys.readouterr().out


def test_load_results_has_one_row_per_run_with_metrics_and_costs(results_dir):  # noqa: F811
    frame = cl_bench.load_results(results_dir)
    assert len(frame) == 8 and frame["run_id"].is_unique  # 7 finished runs and the failed one
    full = frame[(frame["strategy"] == "full_ft")].set_index("seed")
    assert full.loc[0, "avg_acc"] == (40 + 80) / 2 and full.loc[1, "avg_acc"] == (50 + 90) / 2
    assert full.loc[0, "bwt"] == 40 - 90 and full.loc[0, "acc_pooled_last"] == 60
    assert full.loc[0, "retained_last_head"] == 60 and full.loc[0, "pretrain_drop_head"] == 20
    assert full.loc[0, "params_trainable"] == 5000 and full.loc[0, "flops_per_image"] == 2000
    assert full.loc[0, "wall_time_s"] == 1.5 and full.loc[0, "accuracy_matrix"] == [[90, 0], [40, 80]]
    assert full.loc[0, "config_id"] == full.loc[1, "config_id"]  # the seed is not part of it
    both = frame.set_index("strategy").loc["both"]
    assert both["pretrain_drop_knn"] == 5 and both["retained_last_knn"] == 70
    assert pd.isna(frame.set_index("strategy").loc["full_ft", "pretrain_drop_knn"]).all()
    broken = frame.set_index("strategy").loc["broken"]
    assert broken["status"] == "failed" and broken["error"] == "RuntimeError: boom <tag>" and pd.isna(
        broken["avg_acc"])
    assert set(cl_bench.load_results(results_dir, finished_only=True)["status"]) == {"ok"}


def test_load_results_merges_folders_and_names_a_wrong_one(results_dir, tmp_path):  # noqa: F811
    other = tmp_path / "other"
    fabricate(other, "split", "extra", 0, [[10, 0], [10, 30]], [80, 50, 40])
    shutil.copytree(results_dir / "runs", other / "runs", dirs_exist_ok=True)  # every run twice: counted once
    frame = cl_bench.load_results([results_dir, other])
    assert len(frame) == 9 and frame.set_index("strategy").loc["extra", "avg_acc"] == 20
    with pytest.raises(ConfigError, match="nowhere holds no runs/ folder"):
        cl_bench.load_results(tmp_path / "nowhere")


def fake_fashion_mnist(folder: Path, train: int = 600, test: int = 600) -> Path:
    """Fashion-MNIST in torchvision's raw layout (uncompressed IDX), enough images for the default suite's retention
    (500 evaluation images, a k-NN bank of 500)."""
    import gzip

    import numpy as np

    from conftest import fake_fashion_images, write_idx

    raw = folder / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, size in (("train", train), ("t10k", test)):
        labels = np.arange(size) % 10
        for kind, array in (("images-idx3", fake_fashion_images(labels, rng)), ("labels-idx1", labels)):
            packed = folder / f"{prefix}-{kind}-ubyte.gz"
            write_idx(packed, array)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(gzip.decompress(packed.read_bytes()))
    return folder


def test_a_built_wheel_in_a_fresh_venv_lists_and_dry_runs_the_default_suite(tmp_path):
    """`pip wheel .`, a new venv (the dependencies of this one visible through a .pth file: no network), the wheel
    installed into it, and its `cl-bench` run from another folder: the default suite ships inside the package."""
    import sysconfig

    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "results", "data", "__pycache__",
                                                                 "build", "*.egg-info", ".pytest_cache", "site"))
    run = lambda *command, **kw: subprocess.run(command, check=True, capture_output=True, text=True,  # noqa: E731
                                                timeout=600, **kw)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
        str(source))
    (wheel,) = (tmp_path / "dist").glob("cl_vit_bench-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    purelib = Path(run(str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                   .stdout.strip())
    (purelib / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(purelib), str(wheel))
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["CL_BENCH_DATA"] = str(fake_fashion_mnist(tmp_path / "data"))
    python = str(venv / "bin" / "python")
    where = run(python, "-c", "import benchmark, run_suite; print(benchmark.__file__)", cwd=cwd, env=env).stdout
    assert where.startswith(str(purelib)), where  # the installed copy, not this checkout
    listed = run(python, "-m", "cl_bench", "list", cwd=cwd, env=env).stdout
    assert "ranpac (presets: mini, reference, reference-imagenet-r)" in listed and "mini.yaml" in listed
    assert run(python, "-m", "cl_bench", "--version", cwd=cwd, env=env).stdout.strip() == "cl-bench 0.1.0"
    plan = run(python, "-m", "cl_bench", "dry-run", cwd=cwd, env=env).stdout
    assert "48 runs planned" in plan and "ranpac" in plan and "hide_prompt" in plan
    assert not list(cwd.iterdir())  # a dry run writes nothing


def test_list_version_and_each_commands_own_name_in_its_help(capsys):
    assert cli_main(["list"]) == 0
    listed = capsys.readouterr().out
    for expected in ("strategies:", "  sd_lora (presets: mini, reference, reference-imagenet-r)", "streams:",
                     "  split-cifar100", "input pipelines", "  unnormalised-resize224", "retention protocols:",
                     "mini.yaml", "ranpac_cifar100.yaml"):
        assert expected in listed, expected
    assert cli_main(["list", "extra"]) == 2 and "takes no arguments" in capsys.readouterr().err
    assert cli_main(["--version"]) == 0 and capsys.readouterr().out.startswith("cl-bench ")
    for command in ("run", "dry-run", "report"):
        with pytest.raises(SystemExit):
            cli_main([command, "--help"])
        assert capsys.readouterr().out.startswith(f"usage: cl-bench {command} ")
    assert cli_main(["run", "--sed", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error: unrecognized arguments: --sed 1; see cl-bench run --help"


def test_set_overrides_keys_of_the_suite_file_and_is_recorded(write_suite, tmp_path, capsys):
    config = write_suite(strategies={"linear": {"epochs": 2}}, streams={"mini-split-digits": {"n_tasks": 2}})
    out = tmp_path / "out"
    assert run_suite.main(["--config", str(config), "--out", str(out), "--quiet", "--set", "strategies.linear.epochs=1",
                           "--set", "seeds=[7, 8]", "--set", "strategies.linear.lr=0.05"]) == 0
    results = list(iter_results(out))
    assert sorted(r["seed"] for r in results) == [7, 8]
    assert {(r["strategy_params"]["epochs"], r["strategy_params"]["lr"]) for r in results} == {(1, 0.05)}
    assert "ok: linear on mini-split-digits, seed 7: avg_acc" in capsys.readouterr().out  # one line per run
    for bad, message in ((["--set", "seeds"], "--set 'seeds': must be KEY=VALUE with a dotted KEY"),
                         (["--set", "strategies.linear.lr=fast"], "strategies.linear.lr: must be a number, got 'fast'"),
                         (["--set", "device.kind=gpu"], "--set device.kind: device is 'cpu' in the file, not a mapping"),
                         (["--set", "streams.mini-split-digits.n_tasks=[oops"], "is not valid YAML")):
        assert run_suite.main(["--config", str(config), "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "bad").exists()

"""Every executor runs the same grid to the same result files: here, in worker processes, on a local Ray instance,
and as submitit jobs on this machine."""

import pytest

from benchmark.results import iter_results
from test_suite import suite

NUMBERS = ("run_id", "status", "accuracy_matrix", "metrics", "class_order", "task_classes")


def numbers(out) -> list[dict]:
    return [{key: result[key] for key in NUMBERS} for result in iter_results(out)]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_backbone_params):
    """A 2 x 2 grid (two strategies, two seeds) and its results from the default executor."""
    import yaml

    folder = tmp_path_factory.mktemp("grid")
    config = folder / "grid.yaml"
    config.write_text(yaml.safe_dump({
        "backbones": {"vit-mini": tiny_backbone_params}, "streams": {"mini-split-digits": {"n_tasks": 2}},
        "strategies": {"full_ft": {"epochs": 1}, "linear": {"epochs": 1}}, "seeds": [0, 1],
        "retention": {"eval_size": 50}, "device": "cpu"}))
    assert suite(config, folder / "serial") == 0
    return config, numbers(folder / "serial")


@pytest.mark.parametrize("flags", [
    ["--workers", "2"],
    ["--executor", "ray"],
    ["--executor", "submitit", "--submitit-cluster", "local"],
], ids=["local-workers", "ray", "submitit-local"])
def test_executor_gives_the_serial_results(grid, tmp_path, flags):
    if "ray" in flags:
        pytest.importorskip("ray", reason="the ray extra is not installed (pip install .[ray])")
    if "submitit" in flags:
        pytest.importorskip("submitit", reason="the slurm extra is not installed (pip install .[slurm])")
    config, serial = grid
    out = tmp_path / "out"
    assert suite(config, out, *flags) == 0
    assert numbers(out) == serial and len(serial) == 4


def test_unknown_executor_lists_the_valid_ones(grid, tmp_path, capsys):
    assert suite(grid[0], tmp_path / "out", "--executor", "dask") == 2
    assert "unknown executor 'dask'; valid: local, ray, submitit" in capsys.readouterr().err


def test_executors_do_not_import_the_suite():
    """The suite hands `execute` to the executor: importing the executors loads no suite (no import circle)."""
    import subprocess
    import sys

    code = "import sys, benchmark.executors; print('benchmark.suite' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"

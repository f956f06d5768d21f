"""Every executor runs the same grid to the same result files: here, in worker processes, on a local Ray instance,
and as submitit jobs on this machine."""

from pathlib import Path

import pytest

from benchmark.executors import machine_cores, threads_per_worker
from benchmark.results import iter_results
from test_suite import suite

NUMBERS = ("run_id", "status", "accuracy_matrix", "metrics", "class_order", "task_classes")


def numbers(out) -> list[dict]:
    return [{key: result[key] for key in NUMBERS} for result in iter_results(out)]


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_backbone_params):
    """A 2 x 2 grid (two strategies, two seeds) and its results from the default executor, computing on one thread
    as every other executor's run does here (a run's numbers may depend on its thread count in the last bits, which
    training then amplifies: the result records `cost.threads`)."""
    import torch
    import yaml

    folder = tmp_path_factory.mktemp("grid")
    config = folder / "grid.yaml"
    config.write_text(yaml.safe_dump({
        "backbones": {"vit-mini": tiny_backbone_params}, "streams": {"mini-split-digits": {"n_tasks": 2}},
        "strategies": {"full_ft": {"epochs": 1}, "linear": {"epochs": 1}}, "seeds": [0, 1],
        "retention": {"eval_size": 50}, "device": "cpu", "precision": "fp32"}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert suite(config, folder / "serial") == 0
    finally:
        torch.set_num_threads(threads)
    return config, numbers(folder / "serial")


@pytest.mark.parametrize("flags", [
    ["--workers", str(machine_cores())],  # one thread each
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
    threads = {result["cost"]["threads"] for result in iter_results(out)}
    # runs at once divide the machine's cores; a Ray or SLURM run computes on the CPUs it asked for (1 here)
    assert threads == ({threads_per_worker(2)} if "--workers" in flags else {1})


def test_threads_per_worker_divide_the_cores():
    assert threads_per_worker(1) == machine_cores()
    assert threads_per_worker(2) == max(1, machine_cores() // 2)
    assert threads_per_worker(10 * machine_cores()) == 1


def test_unknown_executor_lists_the_valid_ones(grid, tmp_path, capsys):
    assert suite(grid[0], tmp_path / "out", "--executor", "dask") == 2
    assert "unknown executor 'dask'; valid: local, ray, submitit" in capsys.readouterr().err


def test_executors_do_not_import_the_suite():
    """The suite hands `execute` to the executor: importing the executors loads no suite (no import circle)."""
    import subprocess
    import sys

    code = "import sys, benchmark.executors; print('benchmark.suite' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_share_groups_keep_a_family_together_and_start_with_the_largest():
    from types import SimpleNamespace

    from benchmark.executors import share_groups

    jobs = [SimpleNamespace(name=n, share_group=g) for n, g in
            [("full_ft", "a"), ("l2p", "prompts"), ("linear", "frozen"), ("dualprompt", "prompts"),
             ("simplecil", "frozen"), ("coda_prompt", "prompts"), ("lora", "b")]]
    assert [[j.name for j in group] for group in share_groups(jobs)] == [
        ["l2p", "dualprompt", "coda_prompt"], ["linear", "simplecil"], ["full_ft"], ["lora"]]


def test_runs_of_one_stream_and_seed_share_a_group_only_within_a_sharing_family(write_suite):
    from benchmark.config import load_suite
    from benchmark.runtime import Runtime
    from benchmark.suite import RunJob, plan_runs

    config = load_suite(write_suite({"linear": {}, "simplecil": {}, "l2p": {}, "dualprompt": {}, "full_ft": {},
                                     "lora": {}}, seeds=[1, 2]))
    runtime = Runtime.resolve("cpu", "fp32", progress=False)
    groups = {}
    for spec in plan_runs(config, runtime):
        groups.setdefault(RunJob(spec, Path("."), runtime).share_group, set()).add((spec.strategy, spec.seed))
    assert sorted(map(sorted, groups.values())) == sorted([
        [("linear", 1), ("simplecil", 1)], [("linear", 2), ("simplecil", 2)], [("dualprompt", 1), ("l2p", 1)],
        [("dualprompt", 2), ("l2p", 2)], [("full_ft", 1)], [("full_ft", 2)], [("lora", 1)], [("lora", 2)]])

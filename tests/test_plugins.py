"""Strategies from outside the package: the documented plugin (docs/extending.md) installed by entry point and named by
`--import`, run with two workers, killed after its first task and resumed to the results of an uninterrupted run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import run_suite
from benchmark.errors import UserInputError
from benchmark.plugins import load_plugins
from benchmark.results import iter_results
from test_suite import ROOT

NUMBERS = ("accuracy_matrix", "metrics", "class_order", "strategy_params")


def documented_plugin() -> str:
    text = (ROOT / "docs" / "extending.md").read_text().split("## Plugins", 1)[1]
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def plugin_folder(root: Path, as_entry_point: bool) -> Path:
    """A folder to put on PYTHONPATH: the plugin as package `l2_plugin`, with an installed distribution's metadata
    declaring it under `cl_bench.strategies` when `as_entry_point` (importlib.metadata reads *.dist-info folders on
    the path, as pip leaves them)."""
    root.mkdir()
    (root / "l2_plugin").mkdir()
    (root / "l2_plugin" / "__init__.py").write_text(documented_plugin())
    if as_entry_point:
        info = root / "l2_plugin-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: l2-plugin\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[cl_bench.strategies]\nl2_previous = l2_plugin\n")
    return root


def suite_command(config: Path, out: Path, as_entry_point: bool) -> list[str]:
    command = [sys.executable, str(ROOT / "run_suite.py"), "--config", str(config), "--out", str(out), "--quiet",
               "--workers", "2"]
    return command if as_entry_point else [*command, "--import", "l2_plugin"]


def test_a_plugin_by_entry_point_runs_in_workers_and_resumes_exactly_after_a_kill(write_suite, tmp_path,
                                                                                 monkeypatch):
    config = write_suite(strategies={"l2_previous": {"epochs": 2, "strength": 0.01}},
                         streams={"mini-split-digits": {"n_tasks": 2}}, seeds=[1, 2])
    folder = plugin_folder(tmp_path / "plugin", as_entry_point=True)
    env = {**os.environ, "PYTHONPATH": str(folder)}
    killed = tmp_path / "killed"
    process = subprocess.Popen(suite_command(config, killed, as_entry_point=True), cwd=tmp_path, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while not list(killed.rglob("checkpoint.pt")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the suite and its workers
    process.wait()
    assert list(killed.rglob("checkpoint.pt")), "no run reached its first checkpoint"
    assert len(list(killed.rglob("result.json"))) < 2, "the suite finished before it could be killed"
    resumed = subprocess.run(suite_command(config, killed, as_entry_point=True), cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    # the same runs uninterrupted, in this process on one thread as each worker computes, the plugin named by module
    monkeypatch.syspath_prepend(str(folder))
    straight = tmp_path / "straight"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_suite.main(["--config", str(config), "--out", str(straight), "--quiet", "--import",
                               "l2_plugin"]) == 0
    finally:
        torch.set_num_threads(threads)
    resumed, straight = ({r["seed"]: r for r in iter_results(out)} for out in (killed, straight))
    assert sorted(resumed) == [1, 2] and all(r["strategy"] == "l2_previous" for r in resumed.values())
    for seed in (1, 2):
        assert all(resumed[seed][key] == straight[seed][key] for key in NUMBERS), seed


def test_an_imported_plugin_reaches_worker_processes(write_suite, tmp_path):
    config = write_suite(strategies={"l2_previous": {"epochs": 1}}, streams={"mini-split-digits": {"n_tasks": 2}},
                         seeds=[1, 2])
    env = {**os.environ, "PYTHONPATH": str(plugin_folder(tmp_path / "plugin", as_entry_point=False))}
    done = subprocess.run(suite_command(config, tmp_path / "out", as_entry_point=False), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = list(iter_results(tmp_path / "out"))
    assert sorted(r["seed"] for r in results) == [1, 2] and {r["status"] for r in results} == {"ok"}
    assert {r["cost"]["threads"] for r in results} == {1}  # two workers on this 2-core machine's share: one each


def test_a_broken_or_missing_plugin_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match=r"^--import 'no_such_plugin': No module named 'no_such_plugin'; install"):
        load_plugins(["no_such_plugin"])
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cl_bench.strategies]\nbroken = broken_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserInputError, match=r"plugin 'broken' \(broken_plugin, entry point group cl_bench\.strategies\) "
                                             r"failed to load: RuntimeError: boom; fix or uninstall it"):
        load_plugins()

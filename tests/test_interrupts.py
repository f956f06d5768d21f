"""Interrupting a suite that runs worker processes: SIGINT, then SIGTERM, to the main process of `run_suite.py
--workers 2`, each while both workers train. Every process of the suite is gone within seconds, the results folder's
lock is free only once the workers are gone, the exit codes are 130 and 143, finished results stay, and the rerun's
results equal an uninterrupted run's (runs resume from their per-task checkpoints)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from benchmark.executors import threads_per_worker
from benchmark.results import iter_results
from test_suite import ROOT, suite

NUMBERS = ("run_id", "status", "accuracy_matrix", "metrics", "class_order")
STOP_WITHIN_S = 20.0  # workers gone and the lock free: SIGTERM to the workers is immediate, joining them takes a moment
EXIT_WITHIN_S = 40.0  # the main process gone too: its interpreter's shutdown (torch loaded) is slow on a shared machine


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def is_worker(pid: int) -> bool:
    """A worker process of the local executor (multiprocessing's spawn entry point; not its resource tracker, which
    lives as long as the main process)."""
    try:
        return b"spawn_main" in (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False


def alive(pid: int) -> bool:
    """Running (a zombie has exited: only its exit status is left for its parent)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def checkpoints_since(out: Path, started_ns: int) -> list[Path]:
    """The per-task checkpoints written since `started_ns` (a worker has trained a task in this invocation)."""
    fresh = []
    for path in out.glob("runs/*/checkpoint.pt"):
        try:
            if path.stat().st_mtime_ns > started_ns:
                fresh.append(path)
        except FileNotFoundError:  # replaced or removed meanwhile
            continue
    return fresh


def suite_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "run_suite.py", "--config", str(config), "--out", str(out), "--quiet", "--workers", "2"]


def numbers(out: Path) -> list[dict]:
    return [{key: result[key] for key in NUMBERS} for result in iter_results(out)]


def interruptible() -> None:
    """In the suite's process before it starts: SIGINT at its default, so that Python turns it into KeyboardInterrupt.
    A shell without job control starts background commands (`cmd &`, `nohup cmd &`, a CI runner's script) with SIGINT
    ignored, the suite and this test's pytest alike; Python then leaves it ignored, and the suite, as Unix intends for
    such jobs, does not stop on SIGINT (SIGTERM still stops it): the test asks for a suite started from a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(config: Path, out: Path, number: signal.Signals, after_checkpoints: int) -> int:
    """Start the suite, wait until its workers have written `after_checkpoints` per-task checkpoints (training),
    send `number` to the main process; check that every worker is gone and the lock free within STOP_WITHIN_S (the
    lock never free while a worker lives), every process of the suite within EXIT_WITHIN_S; return the exit code."""
    started = time.time_ns()
    suite = subprocess.Popen(suite_command(config, out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, preexec_fn=interruptible)
    deadline = time.monotonic() + 600
    while len(checkpoints_since(out, started)) < after_checkpoints or \
            sum(map(is_worker, descendants(suite.pid))) < 2:
        assert suite.poll() is None, suite.communicate()
        assert time.monotonic() < deadline, "the workers wrote no checkpoint in 10 minutes"
        time.sleep(0.05)
    processes = descendants(suite.pid)
    workers = [pid for pid in processes if is_worker(pid)]
    sent = time.monotonic()
    suite.send_signal(number)
    with open(out / ".lock") as lock:
        while True:  # poll the lock: when it frees, the workers must be gone already
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() - sent < STOP_WITHIN_S, "the suite still holds its lock"
                time.sleep(0.02)
        assert not [pid for pid in workers if alive(pid)], "the lock was released while workers ran"
        fcntl.flock(lock, fcntl.LOCK_UN)
    _, stderr = suite.communicate(timeout=EXIT_WITHIN_S)
    assert time.monotonic() - sent < EXIT_WITHIN_S
    time.sleep(1.0)  # the resource tracker exits once it reads the main process's end of its pipe close
    assert not [pid for pid in processes if alive(pid)], "a process of the suite outlived it"
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: finished runs and per-task checkpoints are kept"), stderr
    return suite.returncode


def test_interrupted_workers_stop_and_the_rerun_resumes(tmp_path, tiny_backbone_params):
    config = tmp_path / "suite.yaml"
    config.write_text(yaml.safe_dump({
        "backbones": {"vit-mini": tiny_backbone_params}, "streams": {"mini-split-digits": {"n_tasks": 5}},
        "strategies": {"full_ft": {"epochs": 1}}, "seeds": [0, 1, 2, 3], "retention": {"eval_size": 50},
        "device": "cpu", "precision": "fp32"}))
    out = tmp_path / "out"

    assert interrupt(config, out, signal.SIGINT, after_checkpoints=2) == 130
    assert interrupt(config, out, signal.SIGTERM, after_checkpoints=2) == 143
    resumed = subprocess.run(suite_command(config, out), cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.rglob("*.partial"))

    threads = torch.get_num_threads()  # uninterrupted, here, on the threads each of two workers computes on
    torch.set_num_threads(threads_per_worker(2))
    try:
        assert suite(config, tmp_path / "reference") == 0
    finally:
        torch.set_num_threads(threads)
    assert numbers(out) == numbers(tmp_path / "reference") and len(numbers(out)) == 4

"""A results folder is trusted only as far as it checks out. A truncated result, one of an older schema, one of
another configuration, and a checkpoint that is unreadable, of another run or of another code version are each
rerun, with one line naming the file and why; a result written by a newer suite is refused (exit 2, nothing
changed); `python -m reports` names every result file it leaves out. End to end through `run_suite.py` and
`python -m reports` as subprocesses, on the tiny backbone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchmark.results import iter_results
from reports.__main__ import main as reports_main
from test_suite import ROOT, snapshot, suite

NUMBERS = ("accuracy_matrix", "metrics", "class_order")
SEEDS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_backbone_params) -> tuple[Path, Path]:
    """A suite of one strategy on a two-task stream, four seeds, run once with per-task checkpoints kept."""
    folder = tmp_path_factory.mktemp("finished")
    config = folder / "suite.yaml"
    config.write_text(yaml.safe_dump({
        "backbones": {"vit-mini": tiny_backbone_params}, "streams": {"mini-split-digits": {"n_tasks": 2}},
        "strategies": {"linear": {"epochs": 1}}, "seeds": SEEDS, "retention": {"eval_size": 50}, "device": "cpu",
        "precision": "fp32"}))
    assert suite(config, folder / "out", "--keep-checkpoints") == 0
    return config, folder / "out"


def copy_of(finished: tuple[Path, Path], folder: Path) -> tuple[Path, Path, dict[int, Path]]:
    """A fresh copy of the finished folder at `folder`/out, and each seed's run folder in it."""
    config, out = finished
    shutil.copytree(out, folder / "out")
    runs = {seed: next((folder / "out" / "runs").glob(f"*__seed{seed}__*")) for seed in SEEDS}
    return config, folder / "out", runs


def numbers(out: Path) -> dict[int, dict]:
    return {r["seed"]: {key: r[key] for key in NUMBERS} for r in iter_results(out)}


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def edit_checkpoint(path: Path, **changes) -> None:
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if key == "git_commit":
            payload["versions"]["git_commit"] = value
        else:
            payload[key] = value
    torch.save(payload, path)


def test_damaged_folder_is_rerun_and_reports_say_what_they_skip(finished, tmp_path, capsys):
    config, out, runs = copy_of(finished, tmp_path)
    original = numbers(out)
    result = {seed: runs[seed] / "result.json" for seed in SEEDS}
    result[0].write_text(result[0].read_text()[:100])  # truncated, as by a full disk
    old = json.loads(result[1].read_text())
    result[1].write_text(json.dumps({**old, "schema_version": 1}))  # an older suite's
    result[2].unlink()  # killed after its last checkpoint; the checkpoint comes from other code
    (runs[3] / "checkpoint.pt").unlink()
    edit_checkpoint(runs[2] / "checkpoint.pt", git_commit="0" * 40)

    report = command("-m", "reports", str(out))
    assert report.returncode == 0, report.stderr
    skipped = sorted(line for line in report.stderr.splitlines() if line.startswith("skipped "))
    assert len(skipped) == 2
    assert skipped[0].startswith(f"skipped {result[0]}: is not valid JSON (") and skipped[0].endswith("; truncated?)")
    assert skipped[1] == f"skipped {result[1]}: has schema version 1; this suite reads version 2"
    assert list(pd.read_csv(out / "leaderboard.csv")["n_seeds"]) == [1]  # seed 3 only

    rerun = command("run_suite.py", "--config", str(config), "--out", str(out), "--quiet")
    assert rerun.returncode == 0, rerun.stderr
    lines = notices(rerun.stderr)
    id_of = {seed: runs[seed].name for seed in SEEDS}
    assert lines[0].startswith(f"rerunning {id_of[0]}: {result[0]} is not valid JSON (")
    assert lines[1] == f"rerunning {id_of[1]}: {result[1]} has schema version 1; this suite reads version 2"
    assert lines[2].startswith(f"restarting {id_of[2]} from its first task: {runs[2] / 'checkpoint.pt'} was written "
                               f"by another code version (git_commit '{'0' * 40}', now ")
    assert lines[2].endswith("); removed it") and len(lines) == 3
    assert "3 runs done, 1 already finished, 0 failed, 0 diverged" in rerun.stdout
    assert numbers(out) == original  # the same numbers again (same seeds, CPU)

    assert reports_main([str(out)]) == 0 and capsys.readouterr().err == ""  # nothing skipped any more
    assert list(pd.read_csv(out / "leaderboard.csv")["n_seeds"]) == [4]


def notices(stderr: str) -> list[str]:
    """What a suite said on stderr about the folder, without the line naming its precision (printed at every start)."""
    lines = stderr.strip().splitlines()
    assert sum(line.startswith("precision: ") for line in lines) == 1
    return [line for line in lines if not line.startswith("precision: ")]


def test_result_of_a_newer_suite_is_refused_and_nothing_changes(finished, tmp_path, capsys):
    config, out, runs = copy_of(finished, tmp_path)
    path = runs[0] / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema_version": 99}))
    before = snapshot(out)
    assert suite(config, out) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: {path} has schema version 99; this suite reads version 2 (a newer suite wrote it); "
                    "update the suite, or pass another --out")
    assert snapshot(out) == before


def test_results_and_checkpoints_that_do_not_check_out_are_rerun(finished, tmp_path, capsys):
    """Seeds 0-3: damaged results; seeds 0-2 again, in a second folder: damaged checkpoints (results removed)."""
    config, out, runs = copy_of(finished, tmp_path / "results")
    paths = {seed: runs[seed] / "result.json" for seed in SEEDS}
    result = json.loads(paths[0].read_text())
    damaged = {0: ({**result, "config": {**result["config"], "seed": 7}},
                   "records another configuration than this run's"),
               1: ([result], "holds a JSON list, not a result object"),
               2: ({k: v for k, v in result.items() if k != "metrics"}, "lacks the field 'metrics'"),
               3: ({**result, "run_id": "someone-else"}, "records run 'someone-else', not the run its folder names")}
    for seed, (content, _) in damaged.items():
        paths[seed].write_text(json.dumps(content))
    assert suite(config, out) == 0
    assert notices(capsys.readouterr().err) == [
        f"rerunning {runs[seed].name}: {paths[seed]} {why}" for seed, (_, why) in damaged.items()]
    assert numbers(out) == numbers(finished[1])

    config, out, runs = copy_of(finished, tmp_path / "checkpoints")
    checkpoints = {seed: runs[seed] / "checkpoint.pt" for seed in SEEDS}
    checkpoints[0].write_bytes(checkpoints[0].read_bytes()[:1000])
    edit_checkpoint(checkpoints[1], run_id="someone-else")
    edit_checkpoint(checkpoints[2], format=1)
    for seed in (0, 1, 2):
        (runs[seed] / "result.json").unlink()
    assert suite(config, out) == 0
    lines = notices(capsys.readouterr().err)
    for line, seed, why in zip(lines, (0, 1, 2), ("cannot be read (", "belongs to run 'someone-else' (another "
                                                  "configuration)", "is not a checkpoint of this suite's format 2")):
        assert line.startswith(f"restarting {runs[seed].name} from its first task: {checkpoints[seed]} {why}")
        assert line.endswith("; removed it")
    assert len(lines) == 3 and not checkpoints[0].exists()  # removed (and not kept: the run finished)
    assert numbers(out) == numbers(finished[1])

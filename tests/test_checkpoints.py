"""A run interrupted after a finished task (an exception, or SIGKILL in the middle of the next task) resumes from its
checkpoint and ends with exactly the numbers of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmark.checkpoints import load_resizing
from benchmark.results import iter_results
from strategies._heads import GrowingClassifier
from strategies.base import register
from strategies.full_ft import FullFineTuning
from strategies.selective_lora import SelectiveLoRA
from test_suite import ROOT, suite

NUMBERS = ("accuracy_matrix", "metrics", "diagnostics", "class_order", "test_sizes")


def only_result(out: Path) -> dict:
    (result,) = iter_results(out)
    return result


def crashing_once(cls: type, name: str) -> type:
    """Register `name`: strategy `cls` raising at its third task the first time only, like a machine failure."""

    class CrashesOnce(cls):
        crashes_left = 0

        def train_task(self, task):
            if task.index == 2 and CrashesOnce.crashes_left > 0:
                CrashesOnce.crashes_left -= 1
                raise RuntimeError("simulated crash")
            super().train_task(task)

    return register(name)(CrashesOnce)


def assert_resuming_changes_nothing(name: str, crashing: type, params: dict, write_suite, tmp_path: Path) -> None:
    """A run of `name` (made by `crashing_once`) interrupted after two tasks and resumed from its checkpoint ends
    with exactly the numbers of an uninterrupted run; the checkpoint is kept while needed, removed afterwards."""
    config = write_suite(strategies={name: params})
    suite(config, tmp_path / "straight")
    crashing.crashes_left = 1
    interrupted = tmp_path / "interrupted"
    assert suite(config, interrupted) == 1
    assert only_result(interrupted)["status"] == "failed"
    assert len(list(interrupted.rglob("checkpoint.pt"))) == 1  # kept: tasks 0 and 1 are done
    assert suite(config, interrupted) == 0
    resumed, straight = only_result(interrupted), only_result(tmp_path / "straight")
    assert len(resumed["cost"]["train_s"]) == 5
    assert all(resumed[key] == straight[key] for key in NUMBERS)
    assert not list(interrupted.rglob("checkpoint.pt"))  # removed once the run finished


FULL_FT_CRASHES_ONCE = crashing_once(FullFineTuning, "full_ft_crashes_once")
SELECTIVE_LORA_CRASHES_ONCE = crashing_once(SelectiveLoRA, "selective_lora_crashes_once")


def test_resumed_run_equals_an_uninterrupted_one(write_suite, tmp_path):
    assert_resuming_changes_nothing("full_ft_crashes_once", FULL_FT_CRASHES_ONCE, {"epochs": 1}, write_suite, tmp_path)


def test_a_resumed_selective_lora_run_equals_an_uninterrupted_one(write_suite, tmp_path):
    """Its per-task blocks are rebuilt from the checkpoint's masks before the tensors load (no penalty: every block
    of tasks 0 and 1 is stored, so there is something to rebuild)."""
    assert_resuming_changes_nothing("selective_lora_crashes_once", SELECTIVE_LORA_CRASHES_ONCE,
                                    {"epochs": 2, "rank": 2, "sparsity": 0.0}, write_suite, tmp_path)
    assert all(all(mask) for mask in only_result(tmp_path / "interrupted")["gate_masks"][:2])


def start_suite_until_first_checkpoint(config: Path, out: Path) -> subprocess.Popen:
    """Start the suite in a subprocess and return once its first task is checkpointed (or it ended)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "run_suite.py"), "--config", str(config), "--out",
                                str(out), "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.rglob("checkpoint.pt")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    return process


def test_sigkill_in_the_middle_of_a_task_loses_only_that_task(write_suite, tmp_path):
    config = write_suite(strategies={"full_ft": {"epochs": 4}},
                         streams={"mini-domain-digits": {"domains": ["clean", "inverted", "rotated"]}})
    killed = tmp_path / "killed"
    process = start_suite_until_first_checkpoint(config, killed)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list(killed.rglob("checkpoint.pt")), "the run never reached its first checkpoint"
    assert not list(killed.rglob("result.json")), "the run finished before it could be killed: make it longer"
    assert suite(config, killed) == 0
    suite(config, tmp_path / "straight")
    resumed, straight = only_result(killed), only_result(tmp_path / "straight")
    assert all(resumed[key] == straight[key] for key in NUMBERS)


def test_a_grown_head_is_restored_into_a_fresh_one():
    trained = GrowingClassifier(4)
    trained.grow(6)
    fresh = GrowingClassifier(4)
    load_resizing(fresh, trained.state_dict())
    assert torch.equal(fresh.weight, trained.weight) and fresh.num_outputs == 6


def test_two_suites_on_one_folder_do_not_mix(write_suite, tmp_path, capsys):
    """A second suite started while the first is writing is refused; the first finishes intact."""
    config = write_suite(strategies={"full_ft": {"epochs": 4}},
                         streams={"mini-domain-digits": {"domains": ["clean", "inverted", "rotated"]}})
    shared = tmp_path / "shared"
    first = start_suite_until_first_checkpoint(config, shared)
    assert first.poll() is None, "the first suite ended before the second could start: make it longer"
    assert suite(config, shared) == 2
    assert "is in use by another suite" in capsys.readouterr().err
    assert first.wait(timeout=300) == 0
    (result,) = iter_results(shared)
    assert result["status"] == "ok" and len(result["accuracy_matrix"]) == 3


def test_keep_checkpoints_keeps_them(write_suite, tmp_path):
    out = tmp_path / "out"
    assert suite(write_suite(strategies={"linear": {"epochs": 1}}), out, "--keep-checkpoints") == 0
    (checkpoint,) = out.rglob("checkpoint.pt")
    payload = torch.load(checkpoint, weights_only=True)
    assert len(payload["progress"]["matrix"]) == 5 and payload["run_id"] == only_result(out)["run_id"]
    assert sorted(payload["state"]) == ["head.bias", "head.weight"]  # the frozen backbone is not copied

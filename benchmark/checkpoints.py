"""Per-task checkpoints: a killed or crashed run resumes from its last finished task and ends with exactly the numbers
an uninterrupted run gets (same seed, CPU).

After each task the runner stores the strategy's parameters and buffers that differ from the pre-trained backbone
(heads, adapters, fine-tuned weights; a frozen backbone is not copied), the rows of the accuracy matrix and
retention so far, the timings, and every random number generator's state. Optimisers live within a task in the
shared loop, so there is no optimiser state between tasks to store. Files are written atomically
and read with `torch.load(weights_only=True)`: a checkpoint from someone else cannot execute code.

A checkpoint records its run id (which hashes the run's whole configuration) and the code's versions (git commit,
torch, timm, Avalanche, this format): `check_checkpoint` finds one that is unreadable, of another run or of another
code version, and the suite then reruns that run from its first task (saying so) instead of resuming from state
that another configuration or other code produced.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from torch import nn

from benchmark.errors import brief, shown
from benchmark.results import one_line_error, versions
from benchmark.safe_io import atomic_file

if TYPE_CHECKING:
    from strategies.base import Strategy

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # 2: records `versions`
PAYLOAD_KEYS = ("format", "run_id", "versions", "state", "progress", "rng")


@dataclass
class Progress:
    """What a run has measured so far."""

    retained: dict[str, list[float]] = field(default_factory=dict)  # per protocol: before training, after each task
    matrix: list[list[float]] = field(default_factory=list)  # one row per finished task
    task_aware_matrix: list[list[float]] = field(default_factory=list)  # the same, task id given (task-aware only)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # per finished task: diagnostics.after_task
    confusion: list[list[int]] = field(default_factory=list)  # after the latest task: [true, predicted, count]
    train_s: list[float] = field(default_factory=list)
    eval_s: list[float] = field(default_factory=list)
    train_steps: int = 0  # optimiser steps of the shared loop so far, counted when tracked (benchmark/tracking/steps.py)

    @property
    def tasks_done(self) -> int:
        return len(self.matrix)


def _rng_state() -> dict[str, Any]:
    """Every generator a run draws from, as tensors and plain values (what `weights_only` loading accepts)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position,
                                                     has_gauss, cached],
             "python": [version, list(python_state), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _changed(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of `state` that differ from the pre-trained `reference`: a frozen ViT-B backbone is not copied
    into every checkpoint, since the resumed run rebuilds it from the same pre-trained weights."""
    return {name: value for name, value in state.items()
            if name not in reference or reference[name].shape != value.shape
            or not torch.equal(reference[name], value.detach().to(reference[name].device))}


def save_checkpoint(path: Path, run_id: str, strategy: nn.Module, progress: Progress,
                    reference: dict[str, torch.Tensor]) -> None:
    """Store what the strategy changed or added (relative to `reference`, the pre-trained tensors under the
    strategy's names), the progress and the random generators."""
    payload = {"format": CHECKPOINT_FORMAT, "run_id": run_id, "versions": versions(),
               "state": _changed(strategy.state_dict(), reference), "progress": asdict(progress), "rng": _rng_state()}
    with atomic_file(path) as handle:  # the run's folder exists: the suite made it (`results.run_folder`)
        torch.save(payload, handle)


def load_resizing(module: nn.Module, state: dict[str, torch.Tensor], unchanged: frozenset[str] = frozenset()) -> None:
    """`load_state_dict`, first giving every tensor that grew during training (heads, per-task state) its stored
    shape, since a freshly built strategy starts small. Entries absent from `state` must be in `unchanged` (still
    the pre-trained values the fresh strategy was built with)."""
    for name, stored in state.items():
        try:
            target = module.get_parameter(name)
        except AttributeError:
            target = module.get_buffer(name)
        if target.shape != stored.shape:
            target.data = torch.empty(stored.shape, dtype=target.dtype, device=target.device)
    missing = module.load_state_dict(state, strict=False).missing_keys
    if set(missing) - unchanged:
        raise RuntimeError(f"checkpoint lacks {sorted(set(missing) - unchanged)[:3]}")


def check_checkpoint(path: Path, run_id: str) -> Optional[str]:
    """Why the checkpoint at `path` must not be resumed from (unreadable or truncated, of another run, of another
    code version, not a regular file: a FIFO would block the load), or None if it may be (or there is none)."""
    if not os.path.lexists(path):
        return None
    if not path.is_file():  # a folder, a FIFO (which would block the load), a link to nothing
        return "is not a regular file"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 (torch raises RuntimeError, pickle and zip errors, OSError, EOFError)
        return f"cannot be read ({brief(one_line_error(error))})"
    if not isinstance(payload, dict) or set(PAYLOAD_KEYS) - set(payload) or payload["format"] != CHECKPOINT_FORMAT \
            or not isinstance(payload["versions"], dict):
        return f"is not a checkpoint of this suite's format {CHECKPOINT_FORMAT}"
    if payload["run_id"] != run_id:
        return f"belongs to run {shown(payload['run_id'])} (another configuration)"
    differing = sorted(key for key in versions() if payload["versions"].get(key) != versions()[key])
    if differing:
        key = differing[0]
        return (f"was written by another code version ({key} {shown(payload['versions'].get(key))}, now "
                f"{versions()[key]!r})")
    return None


def resume(path: Path, run_id: str, strategy: "Strategy", reference: dict[str, torch.Tensor]) -> Optional[Progress]:
    """Restore `strategy` and the random generators from `path` and return the progress, or None if there is no
    checkpoint of this run."""
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("run_id") != run_id:
        return None
    strategy.prepare_to_load(payload["state"])
    load_resizing(strategy, payload["state"], frozenset(reference))
    _set_rng_state(payload["rng"])
    return Progress(**payload["progress"])

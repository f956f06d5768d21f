"""Per-step training numbers (loss, learning rate) from the shared loop to the sinks that want them, throttled.

The tracker of a run installs a `StepLog` for the time the run trains (`listening`); the shared loop
(`strategies._loop.run_epoch`) asks for it once per epoch (`current_step_log`) and, with one, reports each optimiser
step. Without tracking there is no log: the loop does one `is None` test per epoch and nothing else. With one, the loss
is read back from the device (`loss.item()`, a host sync) only at the steps a sink logs, and nothing is drawn from
any random generator, so a tracked run computes the same numbers as an untracked one.

The step is the run's optimiser step counted over all of its tasks (`Progress.train_steps`, checkpointed, so a
resumed run goes on counting where its checkpoint left off). A sink logs every `train_every`-th step (its parameter;
0 = never), so a long run sends a bounded number of points.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Mapping, Optional, Protocol

import torch

LOSS_KEY = "train/loss"
LR_KEY = "train/lr"  # the first parameter group's; further groups as train/lr_<i>


class StepSink(Protocol):
    def log(self, values: Mapping[str, float], step: int) -> None: ...


_CURRENT: contextvars.ContextVar[Optional["StepLog"]] = contextvars.ContextVar("step_log", default=None)


def learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The lr of every parameter group: `train/lr` for the first, `train/lr_<i>` for the others."""
    return {LR_KEY if i == 0 else f"{LR_KEY}_{i}": float(group["lr"]) for i, group in enumerate(optimizer.param_groups)}


class StepLog:
    """Counts a run's optimiser steps and sends the loss and lr of every `every`-th one to each sink."""

    def __init__(self, sinks: list[tuple[int, StepSink]], step: int = 0) -> None:
        self.sinks, self.step = sinks, step

    def record(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """One optimiser step, reported before `optimizer.step()` so that the lr is the one this step uses."""
        due = [sink for every, sink in self.sinks if self.step % every == 0]
        if due:
            values = {LOSS_KEY: float(loss.detach().float()), **learning_rates(optimizer)}
            for sink in due:
                sink.log(values, self.step)
        self.step += 1


def current_step_log() -> Optional[StepLog]:
    """The running run's step log, None when nothing tracks per-step numbers."""
    return _CURRENT.get()


@contextlib.contextmanager
def listening(log: Optional[StepLog]) -> Iterator[Any]:
    """`log` is the current step log inside the block (None: nothing is)."""
    token = _CURRENT.set(log)
    try:
        yield log
    finally:
        _CURRENT.reset(token)

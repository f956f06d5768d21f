"""Errors that the user can fix (bad configuration, unknown names, missing data, a busy results folder), and a
run's divergence.

The command line prints a UserInputError as one line (no traceback) and exits with code 2.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Something the user gave (a name, a value, a path) cannot be used; the message says how to fix it."""


class ConfigError(UserInputError):
    """A configuration key has an unknown name or a value outside its allowed range."""


class DatasetMissingError(UserInputError):
    """A data set is not on disk and could not be fetched."""


class RunDiverged(Exception):
    """The training loss became NaN or infinite: the run stops with status `diverged` instead of producing garbage."""

    def __init__(self, step: int, epoch: int, task: int | None = None) -> None:
        self.step, self.epoch, self.task = step, epoch, task
        super().__init__(f"non-finite loss at task {task}, step {step} (epoch {epoch})")

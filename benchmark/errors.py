"""Errors that the user can fix (bad configuration, unknown names, missing data, a busy results folder), and a
run's divergence; the exit codes of the command lines (`run_suite.py`, `python -m reports`).

The command lines print a UserInputError as one line (no traceback) and exit with code 2, before writing anything.
"""

from __future__ import annotations

import argparse

EXIT_OK = 0  # every run finished (ok or diverged) / the report was written
EXIT_RUNS_FAILED = 1  # some run raised (its result.json, status failed, holds the traceback); also a bug's traceback
EXIT_BAD_INPUT = 2  # a UserInputError: one line on stderr, nothing written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): finished runs and per-task checkpoints are kept; rerun to resume


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (an unknown flag, `--seeds abc`) are a UserInputError: one line, not the usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]  (argparse prints usage and exits 2)
        raise UserInputError(f"{message}; see {self.prog} --help")

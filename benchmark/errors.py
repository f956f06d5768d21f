"""Errors that the user can fix (bad configuration, unknown names, missing data, a busy results folder), and a
run's divergence; the exit codes of the command lines (`run_suite.py`, `python -m reports`).

The command lines print a UserInputError as one line (no traceback) and exit with code 2, before writing anything.
A message echoes the value it rejects through `shown`: bounded, one line, whatever the value (a 50 MB string, a YAML
alias bomb that expands to billions of items, an integer of a million digits).
"""

from __future__ import annotations

import argparse
import contextlib
import reprlib
import signal
from typing import Any, Iterator, Mapping

EXIT_OK = 0  # every run finished (ok or diverged) / the report was written
EXIT_RUNS_FAILED = 1  # some run raised (its result.json, status failed, holds the traceback); also a bug's traceback
EXIT_BAD_INPUT = 2  # a UserInputError: one line on stderr, nothing written
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): finished runs and per-task checkpoints are kept; rerun to resume
EXIT_TERMINATED = 143  # SIGTERM (128 + 15): as for Ctrl-C
ECHO_LIMIT = 160  # characters of a value an error message shows


class _Bounded(reprlib.Repr):
    """`reprlib`'s bounded repr (few levels, few items, short strings: a value shared by YAML aliases is shown a few
    items deep, never expanded), and an integer too long to convert (Python refuses beyond 4300 digits) by its size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxlong, self.maxother = 3, 80, 40, 80
        self.maxtuple = self.maxlist = self.maxdict = self.maxset = self.maxfrozenset = 6

    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 128:
            return f"<an integer of {value.bit_length()} bits>"
        return super().repr_int(value, level)


def brief(text: str) -> str:
    """A message from elsewhere (an exception's text) as one line of at most ECHO_LIMIT characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= ECHO_LIMIT else line[: ECHO_LIMIT - 3] + "..."


def shown(value: Any) -> str:
    """The value as an error message shows it: its repr, bounded in depth, items and length, on one line."""
    text = _Bounded().repr(value)
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 3] + "..."


class UserInputError(Exception):
    """Something the user gave (a name, a value, a path) cannot be used; the message says how to fix it."""


class ConfigError(UserInputError):
    """A configuration key has an unknown name or a value outside its allowed range."""


class DatasetMissingError(UserInputError):
    """A data set is not on disk and could not be fetched."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by `terminate_as_interrupt`'s handler: every cleanup that Ctrl-C runs
    (workers stopped, the results folder's lock released) runs for SIGTERM too."""


def _raise_terminated(number: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def signal_handlers(handlers: Mapping[int, Any]) -> Iterator[None]:
    """The signal handlers `handlers` (signal number -> handler) for the duration, the previous ones restored after;
    a no-op outside the main thread, where Python cannot change handlers."""
    try:
        previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def terminate_as_interrupt() -> contextlib.AbstractContextManager[None]:
    """SIGTERM raises `Terminated` in the main thread for the duration (`signal_handlers`)."""
    return signal_handlers({signal.SIGTERM: _raise_terminated})


def interrupt_exit(error: KeyboardInterrupt) -> int:
    """The exit code of an interrupted command: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(error, Terminated) else EXIT_INTERRUPTED


class RunDiverged(Exception):
    """The training loss became NaN or infinite: the run stops with status `diverged` instead of producing garbage."""

    def __init__(self, step: int, epoch: int, task: int | None = None) -> None:
        self.step, self.epoch, self.task = step, epoch, task
        super().__init__(f"non-finite loss at task {task}, step {step} (epoch {epoch})")


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors (an unknown flag, `--seeds abc`) are a UserInputError: one line, not the usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]  (argparse prints usage and exits 2)
        raise UserInputError(f"{message}; see {self.prog} --help")

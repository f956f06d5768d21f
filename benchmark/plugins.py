"""Strategies, streams and backbones written outside this package: declared by an installed package's entry points
(groups `cl_bench.strategies`, `cl_bench.streams`, `cl_bench.backbones`, the Python packaging convention), or
named by module (`--import my_module`, a suite file's `imports:`). Either way the module registers its entries on
import, with the same decorators the built-ins use (`cl_bench.extend`).

Every process that runs a suite's runs loads them: this one before the suite is validated, and each worker process,
Ray task or SLURM job before its first run (`benchmark.suite.execute`), from the entry points it sees and the
modules the run's job names; a module must therefore be importable there too (installed, or on PYTHONPATH).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Sequence

from benchmark.errors import UserInputError

GROUPS = ("cl_bench.strategies", "cl_bench.streams", "cl_bench.backbones")
_LOADED: set[str] = set()  # entry points and modules this process has loaded


def load_plugins(modules: Sequence[str] = ()) -> None:
    """Load every installed entry point of `GROUPS` and import `modules`, once per process; a plugin that fails to
    load is a one-line UserInputError naming it and the fix."""
    for group in GROUPS:
        for entry in entry_points(group=group):
            key = f"{group}:{entry.name}={entry.value}"
            if key in _LOADED:
                continue
            try:
                entry.load()
            except Exception as error:  # a third party's import can fail any way
                raise UserInputError(f"plugin {entry.name!r} ({entry.value}, entry point group {group}) failed to "
                                     f"load: {type(error).__name__}: {error}; fix or uninstall it") from None
            _LOADED.add(key)
    for module in modules:
        if module in _LOADED:
            continue
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise UserInputError(f"--import {module!r}: {error}; install the module or put its folder on PYTHONPATH "
                                 "(worker processes need it too)") from None
        _LOADED.add(module)

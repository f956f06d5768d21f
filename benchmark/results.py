"""The result of one run: its identity (spec), its schema on disk, atomic writing, loading and versions.

Layout: `<out>/runs/<run_id>/result.json`. A result is written once, whole (temporary file, then rename), so a
crash never leaves a half-written result; a run whose result says `ok` is finished and is skipped on re-runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from benchmark.errors import UserInputError

RESULT_FILE = "result.json"
STATUS_OK = "ok"
STATUS_FAILED = "failed"  # raised an exception: run again on the next invocation
STATUS_DIVERGED = "diverged"  # the loss became NaN/inf: an outcome, kept like a finished run
FINAL_STATUSES = (STATUS_OK, STATUS_DIVERGED)
LOCK_FILE = ".lock"
SCHEMA_VERSION = 2  # 2: retention by several protocols (`retention_protocols`)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything that determines a run's numbers; its hash names the run."""

    stream: str
    stream_params: Mapping[str, Any]
    strategy: str
    strategy_params: Mapping[str, Any]
    backbone: str
    backbone_params: Mapping[str, Any]
    seed: int
    retention: Mapping[str, Any]
    device: str  # cpu or cuda
    precision: str  # fp32 or bf16

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True))

    def config_hash(self, with_seed: bool = True) -> str:
        spec = self.as_dict()
        if not with_seed:
            spec.pop("seed")
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        """Readable and unique: a changed hyper-parameter gives a new id."""
        return f"{self.stream}__{self.strategy}__{self.backbone}__seed{self.seed}__{self.config_hash()}"


def result_path(out_dir: Path, run_id: str) -> Path:
    return out_dir / "runs" / run_id / RESULT_FILE


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file in the same folder, flush it to disk, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def load_result(path: Path) -> Optional[dict[str, Any]]:
    """The result at `path`, or None if there is none or it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(out_dir: Path, run_id: str) -> bool:
    """True for a run that ended for good (ok or diverged); failed runs are tried again."""
    result = load_result(result_path(out_dir, run_id))
    return result is not None and result.get("status") in FINAL_STATUSES


@contextlib.contextmanager
def results_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the results folder, so two suites never write to it at once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    handle = open(out_dir / LOCK_FILE, "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserInputError(f"results folder {out_dir} is in use by another suite; wait for it to finish or pass "
                             "another --out") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def iter_results(out_dir: Path) -> Iterator[dict[str, Any]]:
    """Every readable result of this schema version under `out_dir/runs`, in run-id order (results written by an
    older version of the suite are left out: their fields differ)."""
    for path in sorted((out_dir / "runs").glob(f"*/{RESULT_FILE}")):
        result = load_result(path)
        if result is not None and result.get("schema_version") == SCHEMA_VERSION:
            yield result


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, text=True,
                              capture_output=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Library versions and the git commit; computed once per process (each run's result records them)."""
    import avalanche
    import timm
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "avalanche": avalanche.__version__, "git_commit": _git_commit()}


def numeric_fields(values: Mapping[str, Any], prefix: str = "") -> dict[str, Optional[float]]:
    """The numbers of a result's `metrics` or `cost`, flat (for tables and trackers): a mapping of numbers (one per
    retention protocol, task-aware metrics) becomes `<key>_<name>`, a list of numbers (per-task times)
    `<key>_total`; curves (lists per protocol) and strings are left out; undefined numbers (null) stay None."""
    flat: dict[str, Optional[float]] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) or value is None:
            flat[prefix + key] = value
        elif isinstance(value, Mapping):
            flat.update(numeric_fields({k: v for k, v in value.items() if not isinstance(v, list)},
                                       f"{prefix}{key}_"))
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            flat[f"{prefix}{key}_total"] = float(sum(value))
    return flat

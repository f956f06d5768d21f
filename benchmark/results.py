"""The result of one run: its identity (spec), its schema on disk, atomic writing, loading and versions.

Layout: `<out>/runs/<run_id>/result.json`. A result is written once, whole (temporary file, then rename), so a
crash never leaves a half-written result; a run whose result says `ok` is finished and is skipped on re-runs.
A result is trusted only as far as it checks out (`read_result`): a file that is unreadable, not a regular file,
larger than `MAX_RESULT_BYTES`, truncated, of another schema version, with fields of the wrong types
(`benchmark.result_types`) or of another configuration is rerun (the suite says so) and left out of reports (they say
so); one a newer suite wrote is refused. Files are written through `benchmark.safe_io`: whole, never through a link.
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

from benchmark.errors import UserInputError, brief, shown
from benchmark.result_types import type_problem
from benchmark.safe_io import (MAX_RUN_ID, UnreadableFile, atomic_file, is_safe_name, open_lock_file, read_bounded,
                               real_folder)

RESULT_FILE = "result.json"
STATUS_OK = "ok"
STATUS_FAILED = "failed"  # raised an exception: run again on the next invocation
STATUS_DIVERGED = "diverged"  # the loss became NaN/inf: an outcome, kept like a finished run
FINAL_STATUSES = (STATUS_OK, STATUS_DIVERGED)
STATUSES = (STATUS_OK, STATUS_FAILED, STATUS_DIVERGED)
_IDENTITY = ("schema_version", "run_id", "status", "stream", "strategy", "backbone", "seed", "config")
REQUIRED_FIELDS = {  # what the suite and the reports read of a result, by status
    STATUS_OK: (*_IDENTITY, "accuracy_matrix", "metrics", "cost"),
    STATUS_FAILED: (*_IDENTITY, "error"),
    STATUS_DIVERGED: (*_IDENTITY, "error"),
}
LOCK_FILE = ".lock"
MAX_RESULT_BYTES = 64 * 2**20  # a result is kilobytes (a confusion matrix of 1000 classes: a few MB)
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
    class_order_seed: Optional[int] = None  # the class order's seed when fixed apart from `seed` (None: `seed`)
    train_seed: Optional[int] = None  # the training randomness' seed when fixed apart from `seed` (None: `seed`)

    @property
    def order_seed(self) -> int:
        """The seed of the stream's class order."""
        return self.seed if self.class_order_seed is None else self.class_order_seed

    @property
    def training_seed(self) -> int:
        """The seed of everything random in training (initialisation, shuffling, augmentation)."""
        return self.seed if self.train_seed is None else self.train_seed

    def as_dict(self) -> dict[str, Any]:
        """The spec as JSON; split seeds left unset are left out, so a run whose seed controls both keeps the id it
        had before the split existed."""
        spec = {k: v for k, v in dataclasses.asdict(self).items()
                if v is not None or k not in ("class_order_seed", "train_seed")}
        return json.loads(json.dumps(spec, sort_keys=True))

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


def run_folder(out_dir: Path, run_id: str) -> Path:
    """`<out>/runs/<run_id>`, created or checked to be real folders (`benchmark.safe_io.real_folder`)."""
    return real_folder(out_dir, "runs", run_id)


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON whole, never through a link (`benchmark.safe_io.atomic_file`); the folder must exist."""
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    with atomic_file(path) as handle:
        handle.write(text.encode())


class UnusableResult(Exception):
    """A result file that cannot be trusted (unreadable, truncated, of another schema, incomplete); the message says
    why. `newer`: written by a newer version of the suite, which this one must not overwrite."""

    def __init__(self, reason: str, newer: bool = False) -> None:
        super().__init__(reason)
        self.newer = newer


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A result file left out of a report, and why."""

    path: Path
    reason: str

    def line(self) -> str:
        shown_path = str(self.path) if str(self.path).isprintable() else repr(str(self.path))
        return f"skipped {shown_path}: {self.reason}"


def read_result(path: Path) -> dict[str, Any]:
    """The result at `path`, checked: a regular file of at most MAX_RESULT_BYTES, valid JSON, an object of this
    schema version with the fields a report reads, of their types, written for the run its folder names.
    FileNotFoundError if there is none, UnusableResult saying why it cannot be used."""
    try:
        text = read_bounded(path, MAX_RESULT_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise
    except UnreadableFile as error:
        raise UnusableResult(str(error)) from None
    except UnicodeDecodeError as error:
        raise UnusableResult(f"cannot be read ({one_line_error(error)})") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnusableResult(f"is not valid JSON ({error.msg} at line {error.lineno}; truncated?)") from None
    except (ValueError, RecursionError) as error:  # an integer of more than 4300 digits; nesting too deep
        raise UnusableResult(f"cannot be parsed ({brief(str(error)) or 'nested too deeply'})") from None
    if not isinstance(result, dict):
        raise UnusableResult(f"holds a JSON {type(result).__name__}, not a result object")
    version = result.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise UnusableResult(f"has schema version {shown(version)}; this suite reads version {SCHEMA_VERSION}"
                             + (" (a newer suite wrote it)" if newer else ""), newer=newer)
    status = result.get("status")
    if not isinstance(status, str) or status not in STATUSES:
        raise UnusableResult(f"has status {shown(status)}, not one of {', '.join(STATUSES)}")
    missing = [key for key in REQUIRED_FIELDS[status] if key not in result]
    if missing:
        raise UnusableResult(f"lacks the field {missing[0]!r}")
    problem = type_problem(result, finished=status == STATUS_OK)
    if problem:
        raise UnusableResult(f"has a field of the wrong type: {problem}")
    if result["run_id"] != path.parent.name:
        raise UnusableResult(f"records run {shown(result['run_id'])}, not the run its folder names")
    return result


def one_line_error(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def load_result(path: Path) -> Optional[dict[str, Any]]:
    """The result at `path`, or None if there is none or it cannot be used (`read_result` says why)."""
    try:
        return read_result(path)
    except (FileNotFoundError, UnusableResult):
        return None


def previous_result(out_dir: Path, spec: RunSpec) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """What the folder holds for `spec`: (result, None) for a usable result of exactly this configuration, (None,
    None) for none, (None, why) for one that must be rerun. A result a newer suite wrote is refused (UserInputError
    naming the file), so that this one never overwrites it."""
    path = result_path(out_dir, spec.run_id)
    try:
        result = read_result(path)
    except FileNotFoundError:
        return None, None
    except UnusableResult as error:
        if error.newer:
            raise UserInputError(f"{path} {error}; update the suite, or pass another --out") from None
        return None, f"{path} {error}"
    if result["config"] != spec.as_dict():
        return None, f"{path} records another configuration than this run's"
    return result, None


@contextlib.contextmanager
def results_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the results folder, so two suites never write to it at once. The lock file is
    opened without following a link (`benchmark.safe_io.open_lock_file`); whatever runs inside the block (workers
    included) is over when the lock is released."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"cannot create the results folder {out_dir} ({brief(error.strerror or '')}); "
                             "pass another --out") from None
    descriptor = open_lock_file(out_dir / LOCK_FILE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise UserInputError(f"results folder {out_dir} is in use by another suite; wait for it to finish or pass "
                             "another --out") from None
    try:
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def scan_results(out_dir: Path) -> tuple[list[dict[str, Any]], list[Skipped]]:
    """Every usable result under `out_dir/runs`, in run-id order, and the files left out with why (unreadable,
    truncated, of another schema version: their fields differ)."""
    results, skipped = [], []
    for path in sorted((out_dir / "runs").glob(f"*/{RESULT_FILE}")):
        if not is_safe_name(path.parent.name, MAX_RUN_ID):
            skipped.append(Skipped(path, "its folder's name is not a run id (a safe name)"))
            continue
        try:
            results.append(read_result(path))
        except FileNotFoundError:  # removed while scanning
            continue
        except UnusableResult as error:
            skipped.append(Skipped(path, str(error)))
    return results, skipped


def iter_results(out_dir: Path) -> Iterator[dict[str, Any]]:
    """Every usable result under `out_dir/runs`, in run-id order (`scan_results` also says what it left out)."""
    yield from scan_results(out_dir)[0]


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

    # str(): torch.__version__ is a TorchVersion, which `torch.load(weights_only=True)` refuses in a checkpoint
    return {"python": platform.python_version(), "torch": str(torch.__version__), "timm": timm.__version__,
            "avalanche": avalanche.__version__, "git_commit": _git_commit()}


def package_version() -> Optional[str]:
    """The installed cl-vit-bench distribution's version, None in a source tree that was never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cl-vit-bench")
    except PackageNotFoundError:
        return None


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

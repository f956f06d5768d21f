"""Features kept on disk, so that worker processes, Ray tasks, SLURM jobs and the next invocation reuse them.

The in-process memo (`benchmark.sharing`) dies with its process; a grid of frozen-feature strategies (SimpleCIL,
RanPAC, APER's frozen half, the linear probe, retention scoring before training) embeds the same images through the
same pre-trained network in every worker and every invocation. The store keeps those features as files under the
memo's own key (network fingerprint, image digest, device / precision / batch) joined with `code_version()` (the
suite's source, torch and timm): any change that could change a feature changes the file name.

- Verified on read: a file holds its whole key and a digest of its tensor's bytes; a file that does not load, holds
  another key or whose bytes do not match is recomputed and rewritten, never served (`damaged` counts them).
- Safe between processes: the computation of an entry runs under an exclusive `flock` of that entry's lock file
  (`safe_io.open_lock_file`), so a second process asking for the same features waits and then reads them instead of
  computing them again; files are written by `safe_io.atomic_file` (a fresh temporary, never through a planted
  link, renamed into place).
- Bounded: beyond `limit_bytes` the least recently used entries (by modification time, refreshed on every read) are
  deleted. A full disk or an unwritable folder only loses the entry: the run goes on with the computed features.

Same numbers bit for bit as without the store (tested for every built-in strategy in tests/test_sharing.py): a hit
returns the bytes of an earlier identical computation. The store trusts its folder as far as integrity goes, not
authorship: features planted by someone who can write the folder, under a correct key and digest, would be served.
Point `cache:` at a folder of your own (the default is inside the results folder).

Written by hand: no maintained library here offers a locked, verified, size-bounded tensor store (`diskcache` stores
pickles, which `torch.load(weights_only=True)` is there to avoid).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import xxhash

from benchmark.safe_io import FolderError, atomic_file, open_lock_file, read_bounded
from benchmark.sharing import content_digest

FORMAT = 1  # bump when the file layout changes


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of what computes features besides a network's weights: the suite's own source files (benchmark/,
    strategies/) and the torch and timm versions. Plugins' source is not included (their classes' names are, through
    the network fingerprint): after changing a plugin's forward, use a new `cache:` folder."""
    import timm

    digest = xxhash.xxh3_128(repr((FORMAT, str(torch.__version__), timm.__version__)).encode())
    root = Path(__file__).resolve().parent.parent
    for package in ("benchmark", "strategies"):
        for source in sorted((root / package).rglob("*.py")):
            digest.update(str(source.relative_to(root)).encode())
            digest.update(source.read_bytes())
    return digest.hexdigest()


class FeatureStore:
    """Tensors on disk under `root`, one file per key (see the module docstring); counts hits, misses, damaged."""

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = Path(root)
        self.limit_bytes = limit_bytes
        self.hits = self.misses = self.damaged = 0
        self._held: set[str] = set()

    def get_or_compute(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        text = repr((code_version(), key))
        name = xxhash.xxh3_128(text.encode()).hexdigest()
        with self._locked(name):
            stored = self._read(self.root / f"{name}.pt", text)
            if stored is not None:
                self.hits += 1
                return stored
            self.misses += 1
            value = compute()
            self._write(self.root / f"{name}.pt", text, value)
        return value

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        """An exclusive lock on this entry between processes, re-entrant within this one (a computation may ask for
        the same entry inside itself); without a usable folder, no lock (nothing is stored either)."""
        if name in self._held:
            yield
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            descriptor = open_lock_file(self.root / f"{name}.lock")
        except (OSError, FolderError):
            yield
            return
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            self._held.add(name)
            yield
        finally:
            self._held.discard(name)
            os.close(descriptor)  # closing releases the lock

    def _read(self, path: Path, text: str) -> Optional[torch.Tensor]:
        """The entry's tensor if it exists, holds this key and its bytes match its digest; None otherwise."""
        try:  # a regular file of bounded size only (`safe_io.read_bounded`): never a FIFO or device that would block
            entry = torch.load(io.BytesIO(read_bounded(path, self.limit_bytes)), map_location="cpu", weights_only=True)
            tensor = entry["features"]
            valid = (entry["key"] == text and isinstance(tensor, torch.Tensor)
                     and entry["digest"] == content_digest(tensor))
        except FileNotFoundError:  # never written, or evicted by another process a moment ago
            return None
        except Exception:  # noqa: BLE001  (any damage: truncation, garbage, a foreign pickle, missing fields)
            valid = False
        if not valid:
            self.damaged += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path, follow_symlinks=False)  # recently used: evicted last
        return tensor.to(entry["device"])

    def _write(self, path: Path, text: str, tensor: torch.Tensor) -> None:
        """Atomically (`safe_io.atomic_file`: never through a link); a failure leaves no file and is not an error."""
        host = tensor.detach().cpu()
        entry = {"key": text, "digest": content_digest(host), "device": str(tensor.device), "features": host}
        try:
            with atomic_file(path) as handle:
                torch.save(entry, handle)
            self._evict()
        except (OSError, FolderError):
            pass  # a full disk or a read-only folder: this entry is simply not kept

    def _evict(self) -> None:
        """Delete least recently used entries until the store holds at most `limit_bytes`."""
        entries = []
        for entry in os.scandir(self.root):
            if entry.name.endswith(".pt") and not entry.name.startswith("."):
                stat = entry.stat(follow_symlinks=False)
                entries.append((stat.st_mtime_ns, stat.st_size, entry.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.limit_bytes:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
            total -= size

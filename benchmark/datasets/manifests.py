"""Split manifests: the image files a benchmark folder holds, as a list file headed by a digest of the set, so that a
run records which split it used and refuses a folder that holds other files.

Format (UTF-8 text), written by `cl-bench manifest FOLDER` (benchmark/datasets/class_folders.py):

    # cl-bench split manifest: 7500 files, sha256 3f1c0a9e5b7d2468
    test/n01498041/0.000116_digital clock _ digital clock_0.865662.jpg
    ...
    train/n12267677/0.000592_acorn _ acorn_0.98939.jpg

- One path per line, relative to the benchmark folder, `/`-separated, `<split>/<class>/<file>` with split `train` or
  `test`: the class of an image is its folder, so the list fixes the classes and the train/test split together.
- The digest is the first 16 hex digits of SHA-256 over the paths sorted in Python's string order and joined by
  newlines (UTF-8): two copies of a benchmark share it exactly when they hold the same files under the same split
  and class folders, whatever order the file system lists them in. A manifest whose lines do not hash to its
  header was edited or cut short, and is refused.
- File contents are not hashed: a pre-resized or re-encoded copy (advisable for ObjectNet and OmniBenchmark, whose
  runs are decode-bound) keeps its digest, and checking a split costs a directory listing, not a read of every
  image. The archives' own md5 sums (docs/benchmarks.md) check the bytes once, after downloading.

A stream given `manifest:` checks its folder against the list and names the first files missing or extra; given only
`manifest_sha256:`, against the digest. Every run records the digest of the files it read (`manifest_sha256` in its
result), manifest or not.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional

from benchmark.config import require
from benchmark.errors import ConfigError, UserInputError

SPLITS = ("train", "test")
HEADER = "# cl-bench split manifest: {count} files, sha256 {digest}"
HEADER_PATTERN = re.compile(r"# cl-bench split manifest: (\d+) files, sha256 ([0-9a-f]{16})")
DIGEST_PATTERN = re.compile(r"[0-9a-f]{16}")
ENCODING = dict(encoding="utf-8", errors="surrogateescape")  # names the file system gives as undecodable bytes


@dataclass(frozen=True)
class Manifest:
    """A set of image files of one benchmark folder, as sorted relative paths `<split>/<class>/<file>`."""

    paths: tuple[str, ...]

    @staticmethod
    def of(files: Iterable[Path], folder: Path) -> Manifest:
        """The manifest of `files`, each under `folder`."""
        return Manifest(tuple(sorted(path.relative_to(folder).as_posix() for path in files)))

    @property
    def sha256(self) -> str:
        """The first 16 hex digits of SHA-256 over the sorted paths joined by newlines."""
        return hashlib.sha256("\n".join(self.paths).encode(**ENCODING)).hexdigest()[:16]

    def text(self) -> str:
        """The manifest file's content: the header, then one path per line."""
        return "\n".join([HEADER.format(count=len(self.paths), digest=self.sha256), *self.paths]) + "\n"

    def difference(self, found: Manifest) -> str:
        """What `found` (a folder's files) lacks and adds against this manifest, with the first path of each."""
        expected, present = set(self.paths), set(found.paths)
        missing, extra = sorted(expected - present), sorted(present - expected)
        parts = [f"{len(missing)} listed file(s) missing (first: {missing[0]})" if missing else "",
                 f"{len(extra)} file(s) not listed (first: {extra[0]})" if extra else ""]
        return "; ".join(part for part in parts if part)


def _relative_path(line: str, number: int, path: Path) -> str:
    """A manifest line checked to be `<train|test>/<class>/<file>`."""
    parts = PurePosixPath(line).parts
    if len(parts) != 3 or parts[0] not in SPLITS or line != "/".join(parts):
        raise UserInputError(f"{path}, line {number}: expected `train/<class>/<file>` or `test/<class>/<file>`, got "
                             f"{line!r}; write the manifest with `cl-bench manifest FOLDER`")
    return line


def read_manifest(path: Path) -> Manifest:
    """The manifest in `path`; a file that is not one, or whose paths do not hash to its header, is a one-line
    UserInputError."""
    try:
        lines = path.read_text(**ENCODING).split("\n")
    except OSError as error:
        raise UserInputError(f"cannot read the manifest {path} ({error.strerror or error})") from None
    header = HEADER_PATTERN.fullmatch(lines[0].rstrip("\r"))
    if header is None:
        raise UserInputError(f"{path} is not a split manifest: its first line must read "
                             f"{HEADER.format(count='N', digest='<16 hex digits>')!r}; write one with "
                             "`cl-bench manifest FOLDER`")
    entries = [line.rstrip("\r") for line in lines[1:]]
    entries = entries[:-1] if entries and entries[-1] == "" else entries
    manifest = Manifest(tuple(sorted(_relative_path(line, n, path) for n, line in enumerate(entries, start=2))))
    if len(set(manifest.paths)) != len(manifest.paths):
        raise UserInputError(f"{path} lists a file twice; write the manifest again with `cl-bench manifest FOLDER`")
    count, digest = int(header.group(1)), header.group(2)
    if (count, digest) != (len(manifest.paths), manifest.sha256):
        raise UserInputError(f"{path}: its {len(manifest.paths)} paths hash to {manifest.sha256}, but its header "
                             f"states {count} files hashing to {digest}: the file was edited or cut short; use the "
                             "original, or write it again with `cl-bench manifest FOLDER`")
    return manifest


def check_manifest(manifest: str, pinned: str) -> str:
    """Config check of a stream's `manifest` and `manifest_sha256`: the manifest readable and, with a pin, stating
    the pinned digest. Returns the digest the run must find ("" when neither is given)."""
    require(pinned == "" or DIGEST_PATTERN.fullmatch(pinned) is not None, "manifest_sha256",
            "16 lower-case hex digits (as a manifest's header and a result's manifest_sha256 state them) or empty",
            pinned)
    if not manifest:
        return pinned
    require(Path(manifest).is_file(), "manifest", "an existing manifest file (write one with `cl-bench manifest "
            "FOLDER`)", manifest)
    try:
        digest = read_manifest(Path(manifest)).sha256
    except UserInputError as error:
        raise ConfigError(f"manifest: {error}") from None
    if pinned and pinned != digest:
        raise ConfigError(f"manifest_sha256: the manifest {manifest} states {digest}, not the pinned {pinned}; use "
                          "the manifest the pin was taken from, or drop the pin")
    return digest


def require_match(found: Manifest, folder: Path, manifest: str, digest: str) -> None:
    """Refuse a folder whose files (`found`) are not the split the stream was configured with: the files of the
    `manifest` file, or (without one) the files hashing to `digest`; nothing to check when both are empty."""
    if not digest or found.sha256 == digest:
        return
    fix = (f"re-extract the benchmark's archive (docs/benchmarks.md), or, if this copy is the one you mean to use, "
           f"write its manifest with `cl-bench manifest {folder}`")
    if manifest:
        raise UserInputError(f"{folder} does not match the manifest {manifest}: "
                             f"{read_manifest(Path(manifest)).difference(found)}; {fix}")
    raise UserInputError(f"the files under {folder} hash to {found.sha256}, not the pinned manifest_sha256 "
                         f"{digest}; {fix} and pin its digest")


def write_manifest(manifest: Manifest, out: Optional[Path]) -> None:
    """Write the manifest to `out` (replacing it whole), or print it when `out` is None."""
    if out is None:
        sys.stdout.write(manifest.text())
        return
    partial = out.with_name(out.name + ".partial")
    try:
        partial.write_text(manifest.text(), **ENCODING)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)

"""Files in folders the suite did not create: names safe to become paths, folders that are real folders, writes that
never follow a link, reads that never block or fill memory, and a full disk as one line.

A results folder may come from someone else (`python -m reports their-folder`, `--out` a shared folder), so nothing
in it is trusted to be what its name says:
- a value becomes part of a path only if it is a safe name (`check_name`, `is_safe_name`: one rule, used by the
  configuration, results, reports, plots and tracking): letters, digits and `_ . + @ -`, starting with a letter or
  digit, at most `MAX_NAME` characters, so it is never `..`, never holds a `/` and always fits a file name;
- the folders the suite writes into below the folder the user named are real folders, created here or found as
  folders (`real_folder`): a link or a file in their place is refused with one line;
- every file is written whole to a new temporary file beside it (`O_CREAT | O_EXCL | O_NOFOLLOW`: a name planted
  there is never opened) and renamed over its name (`atomic_file`): a link planted at the name is replaced, never
  written through; a folder at the name is refused with one line;
- files are read only when they are regular files of bounded size (`read_bounded`): a FIFO would block forever,
  a device never end;
- a full disk (ENOSPC, EDQUOT) is one line naming the folder (`DiskFullError`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

from benchmark.errors import ConfigError, UserInputError, shown

MAX_NAME = 64  # a grid entry (stream, strategy, backbone)
MAX_RUN_ID = 3 * MAX_NAME + 40  # a run id joins three names, a seed and a hash (at most 224); with `.html`, < 255
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+@-]*")  # a registered name, or name@label
NAME_RULE = (f"a name of letters, digits and _ . + @ - that starts with a letter or digit, at most {MAX_NAME} "
             "characters (it names files)")
PARTIAL = ".partial"  # the suffix of temporary files: `.<name>.<random>.partial`, removed by `remove_partials`
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class FolderError(UserInputError):
    """A folder the suite writes into cannot take its files: not a run's fault, so no run is recorded as failed."""


class UnsafePathError(FolderError):
    """A part of a folder the suite writes into is a link, or of the wrong kind (a file where a folder belongs)."""


class DiskFullError(FolderError):
    """The device holding a folder the suite writes into has no space left (or the user's quota is spent)."""


class UnreadableFile(Exception):
    """A file that is not read: not a regular file, too large or unreadable; the message says why."""


def is_safe_name(value: object, limit: int = MAX_NAME) -> bool:
    """Whether `value` may become one component of a path (`NAME_RULE`; a run id may be `MAX_RUN_ID` long)."""
    return isinstance(value, str) and len(value) <= limit and NAME.fullmatch(value) is not None


def check_name(value: object, key: str, limit: int = MAX_NAME) -> str:
    """`value` if it is a safe name (at most `limit` characters), else a ConfigError naming `key` and the rule."""
    if not is_safe_name(value, limit):
        rule = NAME_RULE if limit == MAX_NAME else NAME_RULE.replace(f"{MAX_NAME} characters", f"{limit} characters")
        raise ConfigError(f"{key}: must be {rule}, got {shown(value)}")
    return value  # type: ignore[return-value]


def _writing_error(error: OSError, path: Path) -> Exception:
    """The one-line error for an OSError met writing `path`, or the error itself when it is not the user's to fix."""
    if error.errno in DISK_FULL:
        return DiskFullError(f"no space left on the device holding {path.parent} ({os.strerror(error.errno)}); "
                             "free space there or pass another --out")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return FolderError(f"cannot write {path} ({os.strerror(error.errno)}); fix its permissions or pass "
                           "another --out")
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        return UnsafePathError(f"cannot write {path}: a file stands where a folder belongs on its path; remove it or "
                               "pass another --out")
    if error.errno == errno.ELOOP:
        return UnsafePathError(f"{path} is a symbolic link; the suite does not write through links in a results "
                               "folder: remove it or pass another --out")
    return error


def real_folder(root: Path, *names: str) -> Path:
    """`root / names...`, each level below `root` created if missing, else required to be a real folder: a link
    (which could lead anywhere) or a file there is an UnsafePathError. `root` is the folder the user named (created
    if missing; a link there is the user's choice)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _writing_error(error, root / ".") from None
    folder = root
    for name in names:
        folder = folder / name
        try:
            os.mkdir(folder)
            continue
        except FileExistsError:
            pass
        except OSError as error:
            raise _writing_error(error, folder / ".") from None
        kind = os.lstat(folder).st_mode
        if not stat.S_ISDIR(kind):
            what = "a symbolic link" if stat.S_ISLNK(kind) else "a file"
            raise UnsafePathError(f"{folder} is {what}, not a folder; the suite writes only into real folders "
                                  "inside a results folder: remove it or pass another --out")
    return folder


def _new_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty file beside `name`, opened for writing; never an existing file or link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        path = folder / f".{name[:MAX_NAME]}.{secrets.token_hex(8)}{PARTIAL}"  # short: any name + this fits 255
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise UnsafePathError(f"cannot create a temporary file in {folder}; remove its .*{PARTIAL} files")


class _Writer:
    """A binary file's `write` and `flush`, remembering the OSError a write met: a writer that catches it and raises
    its own error (torch.save's zip writer raises a RuntimeError) must not hide a full disk."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def require_file_slot(path: Path) -> None:
    """`path` is free for a file the suite will write: nothing there, a file, or a link (replaced when written); a
    folder there is an UnsafePathError now, before any work whose output it would refuse."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise UnsafePathError(f"{path} is a folder where the suite writes a file; remove it or pass another --out")
    except (FileNotFoundError, NotADirectoryError):
        pass


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[_Writer]:
    """A binary handle whose bytes become the file `path` once written whole: a new temporary file in the same
    folder, flushed to disk, then renamed over `path` (which replaces a link there instead of following it). On an
    error the temporary file is removed and `path` is unchanged. A missing folder is created (the suite makes its
    folders inside a results folder with `real_folder` first, so this creates nothing there)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file where a folder belongs on the way, a full disk
        raise _writing_error(error, path) from None
    require_file_slot(path)
    try:
        descriptor, temporary = _new_temporary(path.parent, path.name)
    except OSError as error:
        raise _writing_error(error, path) from None
    writer = None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            writer = _Writer(handle)
            yield writer
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        cause = error if isinstance(error, OSError) else writer.error if writer else None
        if cause is not None:
            raise _writing_error(cause, path) from None
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` as the file `path`, whole or not at all (`atomic_file`)."""
    with atomic_file(path) as handle:
        handle.write(data)


def remove_partials(folder: Path) -> None:
    """Remove the temporary files an interrupted write left in `folder` (regular files named as `atomic_file` names
    them; nothing else)."""
    for path in folder.glob(f".*{PARTIAL}"):
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them. FileNotFoundError if there is none;
    UnreadableFile (saying why) for a folder, a FIFO, a device or socket (reading one could block or never end), a
    larger file, or an error reading it."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnreadableFile(f"cannot be read ({os.strerror(error.errno or 0)})") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(descriptor)
        raise UnreadableFile("is a folder, not a file" if stat.S_ISDIR(info.st_mode) else "is not a regular file"
                             if not stat.S_ISREG(info.st_mode) else f"is larger than {limit // 2**20} MiB")
    with os.fdopen(descriptor, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise UnreadableFile(f"cannot be read ({os.strerror(error.errno or 0)})") from None
    if len(data) > limit:
        raise UnreadableFile(f"is larger than {limit // 2**20} MiB")
    return data


def open_lock_file(path: Path) -> int:
    """A descriptor of the regular file `path` (created if missing) to hold a lock on; never a link, FIFO or folder."""
    flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno == errno.EISDIR:
            raise UnsafePathError(f"{path} is a folder where the suite keeps its lock file; remove it or pass "
                                  "another --out") from None
        raise _writing_error(error, path) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise UnsafePathError(f"{path} is not a regular file; remove it or pass another --out")
    return descriptor

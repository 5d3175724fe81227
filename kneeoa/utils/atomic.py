"""Atomic outputs: write to a temp file in the same folder, fsync, rename. A crash leaves nothing half-written."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def umask_mode(mode: int = 0o666) -> int:
    """`mode` filtered by the process umask: what `open()` would give a new file.

    `tempfile.mkstemp` always creates 0600 files, so an atomically written output would stay private
    whatever the umask (colleagues on a shared server could not open a report). Reading the umask needs
    setting it; /proc/self/status tells it without that on Linux (no window where another thread sees 0).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return mode & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return mode & ~current


NAME_MAX = 255  # bytes in one file name on every common file system (ext4, xfs, btrfs, APFS, NTFS in UTF-16)
_RANDOM = 8  # characters mkstemp adds


def temp_stem(stem: str, reserve: int) -> str:
    """`stem` cut (on a character boundary) so that a temp name built from it plus `reserve` bytes still fits
    NAME_MAX: an output named with 250 bytes is valid, but `.<name>.<8 random characters>.tmp.nii.gz` would
    not be."""
    budget = max(1, NAME_MAX - reserve)
    encoded = stem.encode("utf-8")
    if len(encoded) <= budget:
        return stem
    return encoded[:budget].decode("utf-8", "ignore")


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Re-raise an OSError of the block as one about `path`: a full disk or read-only folder shows while
    writing a temp file (or without a file name at all, from write()); the user knows the output's name."""
    try:
        yield
    except OSError as err:
        if err.filename is not None and not Path(str(err.filename)).name.startswith("."):
            raise
        raise OSError(err.errno, err.strerror or str(err), str(path)) from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success it replaces `path` atomically, on error it is removed.

    The temp name keeps the final suffixes (e.g. `.nii.gz`) so libraries that choose a format by
    extension write the right one.
    """
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tail = f".tmp{suffix}"
    stem = temp_stem(path.stem, 2 + _RANDOM + len(tail.encode("utf-8")))
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=tail, dir=path.parent)
        try:
            os.fchmod(fd, umask_mode())
        finally:
            os.close(fd)
    tmp_path = Path(tmp)
    try:
        with naming(path):
            yield tmp_path
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            # a library may have replaced the temp file (new inode, its own mode): set the mode again
            os.chmod(tmp_path, umask_mode())
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def create_once(path: str | Path, text: str) -> None:
    """Create `path` holding `text` unless it exists, atomically: of several processes creating it at once
    (shards appending rows to one table) exactly one wins and nobody ever sees it half-written.

    A hard link, not `os.replace`: linking onto an existing name fails instead of replacing it."""
    path = Path(path)
    if path.exists():
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{temp_stem(path.name, 2 + _RANDOM + 4)}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, umask_mode())  # mkstemp makes 0600: the file follows the umask like any output
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def append_line(path: str | Path, line: str) -> None:
    """Append one complete line with a single write + fsync (O_APPEND): concurrent writers never interleave."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    with naming(path):
        _append(path, data)


def _append(path: str | Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # umask applies
    try:
        written = os.write(fd, data)
        if written != len(data):  # a full disk may take part of the line without an error: say so
            raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written (disk full?)", str(path))
        os.fsync(fd)
    finally:
        os.close(fd)

"""Exclusive output locks: one writer per run folder and per output table (or per shard of a table).

A lock is a small file created with O_CREAT | O_EXCL (atomic on local and NFSv3+ file systems) holding
{"pid", "host", "started", "proc_start", "argv"}. A second writer gets a ConfigError naming the output and
the holder. A lock whose holder is gone (same host, pid no longer running, or the pid now belongs to a
process that started later) is stale: it is removed and taken over. A lock from another host cannot be
checked and is never taken over; the message says how to remove it.

Why by hand: `fcntl.flock` locks vanish with the process (no stale locks) but are advisory per open file
and not shared over NFS consistently, and `filelock` is not a dependency; an O_EXCL file with
owner details is what tools like git and pip do, and it tells the user *who* holds the output.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kneeoa.errors import ConfigError
from kneeoa.utils.processes import alive

UNREADABLE_STALE_S = 60.0  # a lock file nobody finished writing within a minute is left over from a crash


def _proc_start(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a reused pid from the lock's owner."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def owner_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "proc_start": _proc_start(os.getpid()), "argv": sys.argv[:6]}


def read_lock(path: Path) -> dict | None:
    """The lock's owner details, or None if the file is unreadable or half-written."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_stale(path: Path) -> bool:
    """True when the lock's holder certainly no longer runs (only decidable on the holder's own host)."""
    owner = read_lock(path)
    if owner is None:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_STALE_S
        except OSError:
            return True  # gone meanwhile
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    if not alive(pid):
        return True
    started = owner.get("proc_start")
    now = _proc_start(pid)
    return started is not None and now is not None and now != started  # the pid was reused


def describe_owner(path: Path) -> str:
    owner = read_lock(path)
    if owner is None:
        return "another process (lock file being written)"
    argv = " ".join(str(a) for a in owner.get("argv") or [])
    return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')} ({argv})"


def try_lock(path: Path) -> bool:
    """Create the lock file (taking over a stale one); False if someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not is_stale(path):
                return False
            # Two processes may find the same stale lock: rename it to a unique name first, so exactly one
            # removes it (a rename of an already-renamed file fails) and neither deletes a fresh lock.
            grave = path.with_name(f"{path.name}.stale.{os.getpid()}")
            with contextlib.suppress(OSError):
                os.rename(path, grave)
                grave.unlink()
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(owner_info()))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError:  # a full disk: leave no empty lock behind
            path.unlink(missing_ok=True)
            raise
        return True
    return False


def release(path: Path) -> None:
    """Remove the lock if this process holds it."""
    owner = read_lock(path)
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(OSError):
            path.unlink()


@contextlib.contextmanager
def exclusive(path: str | Path, output: str | Path, what: str) -> Iterator[Path]:
    """Hold lock file `path` for `output` (a run folder, a table) while the block runs; ConfigError if taken."""
    from kneeoa.utils.atomic import naming

    path = Path(path)
    with naming(output):
        taken = try_lock(path)
    if not taken:
        raise ConfigError(f"{what} is in use by {describe_owner(path)}; wait for it to finish (if that process "
                          f"is gone for good, delete {path})", output)
    try:
        yield path
    finally:
        release(path)


@contextlib.contextmanager
def sharded(output: str | Path, shard: tuple[int, int] | None, what: str,
            named_after: str | Path | None = None) -> Iterator[Path]:
    """One writer per output, or per shard of it: a whole-output writer excludes every shard writer and the
    other way round (shards of one table, or ranks saving maps into one folder, run side by side).

    The locks are `.NAME.lock` and `.NAME.shard-I-of-N.lock` of `named_after` (default `output`; an output
    folder passes a file inside it, so the locks live in the folder). ConfigError names `output`."""
    output = Path(output)
    base = Path(named_after) if named_after is not None else output
    whole = lock_path_for(base)
    mine = whole if shard is None else lock_path_for(base, f"shard-{shard[0]}-of-{shard[1]}")
    with exclusive(mine, output, what if shard is None else f"shard {shard[0]}/{shard[1]} of {what}"):
        others = [whole] if shard is not None else sorted(base.parent.glob(f".{base.name}.shard-*.lock"))
        busy = [p for p in others if p.exists() and not is_stale(p)]
        if busy:
            raise ConfigError(f"{what} is being written by {describe_owner(busy[0])} "
                              f"({'a run over every case' if shard is not None else 'a shard'}); wait for it",
                              output)
        yield mine


def lock_path_for(output: str | Path, tag: str = "") -> Path:
    """The lock file of an output file: `.NAME.lock` beside it (`.NAME.TAG.lock` for one shard)."""
    output = Path(output)
    return output.with_name(f".{output.name}{'.' + tag if tag else ''}.lock")

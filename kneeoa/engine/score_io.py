"""The scores table: one CSV row per volume, appended as one complete line (safe to interrupt, safe to share).

Several processes (shards, torchrun ranks) may append to the same file: the header is created with an
atomic link (only the first process wins) and every row is a single O_APPEND write. A reader skips a row
that a hard kill could have cut short, so `--resume` never trusts half a line.
"""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

from kneeoa.contracts.schemas import SCORE_COLUMNS
from kneeoa.errors import InputError
from kneeoa.utils.atomic import create_once
from kneeoa.utils.cells import csv_line, quote_formula, unquote_formula


def format_row(row: dict) -> str:
    """One CSV line (with newline) in SCORE_COLUMNS order; floats with 8 significant digits."""
    values = []
    for col in SCORE_COLUMNS:
        value = row.get(col)
        if value is None:
            values.append("")
        elif isinstance(value, bool):
            values.append("1" if value else "0")
        elif isinstance(value, float):
            values.append(f"{value:.8g}")
        else:
            # one physical line per case: messages never carry newlines into the table
            values.append(quote_formula(" ".join(str(value).split()) if col == "error" else str(value)))
    return csv_line(values)


class RowWriter:
    """Appends rows to a scores table: each row at once as one O_APPEND write, fsync'd in groups.

    A killed process loses no row it wrote (the kernel holds it); a machine crash loses at most the rows
    of the last `sync_every_s` seconds, which `--resume` scores again (a cut last line is skipped by
    `read_scores`). One fsync per row cost more than a quick model's forward pass (measured).
    """

    def __init__(self, path: Path, sync_every_s: float = 1.0):
        self.path = Path(path)
        self.sync_every_s = float(sync_every_s)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._synced = time.monotonic()
        self._dirty = False

    def write(self, line: str) -> None:
        import errno

        from kneeoa.utils.atomic import naming

        data = (line.rstrip("\n") + "\n").encode("utf-8")
        with naming(self.path):  # a full disk names the table, not "(file unknown)"
            written = os.write(self._fd, data)
            if written != len(data):  # a full disk may take part of the row without an error: say so
                raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written (disk full?)")
        self._dirty = True
        if time.monotonic() - self._synced >= self.sync_every_s:
            self.sync()

    def sync(self) -> None:
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._synced = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ensure_header(path: Path) -> None:
    """Create `path` holding just the header unless it exists (atomic: concurrent creators cannot race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    create_once(path, csv_line(SCORE_COLUMNS))


def read_scores(path: str | Path) -> list[dict]:
    """The complete rows of a scores table (rows of the wrong width — a cut-off line — are skipped)."""
    return read_table(path, SCORE_COLUMNS, "scores")


def read_table(path: str | Path, columns: list[str], what: str) -> list[dict]:
    """The complete rows of a KneeOA `what` table with header `columns` (scores, segmentations): a row of the
    wrong width or a last line a hard kill cut short is skipped, so `--resume` never trusts half a line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")  # read_text would turn a CR inside a quoted id into LF
    except OSError as err:
        raise InputError(f"cannot read the {what} table ({err.strerror})", path) from None
    except UnicodeDecodeError:
        raise InputError(f"{what} table is not UTF-8 text", path) from None
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a hard kill mid-write: the last line is incomplete
    # csv parses the whole text: a quoted case id may hold CR or LF (file names can), str.splitlines would cut it
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        if header != columns:
            raise InputError(f"not a KneeOA {what} table (header {header[:4]}...)", path)
        return [dict(zip(header, map(unquote_formula, values))) for values in reader if len(values) == len(header)]
    except csv.Error as err:
        raise InputError(f"malformed {what} table: {err}", path) from None


def write_scores(path: Path, rows: list[dict]) -> None:
    """Write a whole table atomically (used by merge); values are written as they were read."""
    from kneeoa.utils.atomic import atomic_write_text

    text = csv_line(SCORE_COLUMNS) + "".join(csv_line([quote_formula(row.get(c, "")) for c in SCORE_COLUMNS]) for row in rows)
    atomic_write_text(path, text)


def natural_key(case_id: str) -> tuple:
    """Sort key: digits compare as numbers ('case_2' < 'case_10'), then the plain string breaks ties."""
    import re

    parts = re.split(r"(\d+)", case_id)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != ""), case_id

"""Atomic outputs follow the umask like any new file (mkstemp alone would leave them 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kneeoa.engine.score_io import ensure_header
from kneeoa.utils.atomic import append_line, atomic_path, atomic_write_text, create_once, umask_mode


@pytest.fixture
def umask():
    """Run the test under a chosen umask and restore the old one afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(value: int) -> None:
        os.umask(value)

    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_outputs_honour_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert umask_mode() == expected
    atomic_write_text(tmp_path / "report.html", "<html></html>")
    with atomic_path(tmp_path / "map.nii.gz") as tmp:
        tmp.write_bytes(b"x")
    append_line(tmp_path / "log.jsonl", "{}")
    ensure_header(tmp_path / "scores.csv")
    for name in ("report.html", "map.nii.gz", "log.jsonl", "scores.csv"):
        assert _mode(tmp_path / name) == expected, name


def test_a_library_that_recreates_the_temp_file_still_gets_the_umask_mode(tmp_path, umask):
    umask(0o022)
    with atomic_path(tmp_path / "table.csv") as tmp:
        tmp.unlink()  # e.g. a writer that removes and recreates its target
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
    assert _mode(tmp_path / "table.csv") == 0o644


def test_replacing_an_output_keeps_nothing_half_written(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_create_once_never_replaces_an_existing_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "table.csv"
    create_once(target, "header\n")
    append_line(target, "row")
    create_once(target, "another header\n")  # a second shard starting later: the rows stay
    assert target.read_text() == "header\nrow\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]

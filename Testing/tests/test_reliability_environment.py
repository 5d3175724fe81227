"""Robustness class 6: environment failures are one line, never a traceback, and lose nothing.

We run as root in CI, and root ignores file modes. So one driver process first gives up the
capabilities that let root bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER; no-op when
not root), then runs the CLI commands in sequence: read-only output folders, unreadable inputs, and a
full disk simulated with RLIMIT_FSIZE (at the first byte and in the middle of a scoring run). A real
full disk (a 64 KiB tmpfs) is added where this process may mount one. Names too long for the temp-file
scheme run in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import run_main, volume_folder
from reliability_helpers import (
    assert_one_clear_error,
    assert_scores_whole,
    good_array,
    is_temp,
    tiny_checkpoint,
)

from kneeoa.data.volume import write_nifti

ROOT = Path(__file__).resolve().parents[2]

DRIVER = r'''
import contextlib, ctypes, io, json, resource, signal, sys
from kneeoa.cli import main

def drop_dac_capabilities():
    """Give up CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER: file modes now apply to root too."""
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        return
    mask = ~((1 << 1) | (1 << 2) | (1 << 3)) & 0xFFFFFFFF
    data[0].effective &= mask
    data[0].permitted &= mask
    data[0].inheritable &= mask
    assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past RLIMIT_FSIZE a write fails with EFBIG instead of killing us
drop_dac_capabilities()
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
out = []
for fsize, argv in json.load(open(sys.argv[1])):
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard if fsize is None else fsize, hard))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exit_:
            rc = exit_.code
        except BaseException as escaped:
            import traceback
            traceback.print_exc(file=err)
            rc = "escaped"
    out.append([rc, err.getvalue()])
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
print(json.dumps(out))
'''


def _run_driver(calls: list[tuple[int | None, list[str]]], folder: Path) -> list[tuple[int, str]]:
    listing = folder / "calls.json"
    listing.write_text(json.dumps(calls))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "KNEEOA_PROGRESS": "none"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(listing)], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs, read-only and writable folders, and the outcome of every driver call (one process)."""
    root = tmp_path_factory.mktemp("env")
    cohort = root / "cohort"
    volume_folder(cohort, 4, shape=(16, 16, 16))
    checkpoint = tiny_checkpoint(root / "model.safetensors")
    image = write_nifti(root / "knee.nii.gz", good_array(), np.eye(4))
    locked_image = write_nifti(root / "locked.nii.gz", good_array(seed=1), np.eye(4))
    locked_checkpoint = tiny_checkpoint(root / "locked.safetensors")
    readonly = root / "readonly"
    readonly.mkdir()
    (readonly / "existing.csv").write_text("keep me\n")
    full, partial = root / "full", root / "partial"
    full.mkdir()
    partial.mkdir()
    grade = ["grade", str(image), "--checkpoint", str(checkpoint), "--device", "cpu", "--result-json"]
    score = ["score", str(cohort), "--checkpoint", str(checkpoint), "--device", "cpu", "--out"]
    calls = {
        "grade into a read-only folder": (None, [*grade, str(readonly / "r.json")]),
        "score into a read-only folder": (None, [*score, str(readonly / "scores.csv")]),
        "saliency into a read-only folder": (None, ["saliency", "--checkpoint", str(checkpoint), "--image", str(image),
                                                    "--out", str(readonly / "maps"), "--device", "cpu"]),
        "unreadable image": (None, ["grade", str(locked_image), "--checkpoint", str(checkpoint), "--device", "cpu",
                                    "--result-json", str(root / "r1.json")]),
        "unreadable checkpoint": (None, [*grade[:2], "--checkpoint", str(locked_checkpoint), "--device", "cpu",
                                         "--result-json", str(root / "r2.json")]),
        "unreadable cohort volume": (None, [*score, str(root / "s_locked.csv")]),
        "disk full at start (grade)": (0, [*grade, str(full / "r.json")]),
        "disk full at start (score)": (0, [*score, str(full / "scores.csv")]),
        "disk full mid-run (score)": (700, [*score, str(partial / "scores.csv")]),
        "resume after the disk was freed": (None, [*score, str(partial / "scores.csv"), "--resume"]),
    }
    os.chmod(readonly, 0o555)
    for path in (locked_image, locked_checkpoint, cohort / "knee_2.nii.gz"):
        os.chmod(path, 0o000)
    try:
        outcomes = dict(zip(calls, _run_driver(list(calls.values()), root)))
    finally:
        os.chmod(readonly, 0o755)
        for path in (locked_image, locked_checkpoint, cohort / "knee_2.nii.gz"):
            os.chmod(path, 0o644)
    return {"root": root, "outcomes": outcomes, "readonly": readonly, "image": image, "locked_image": locked_image,
            "locked_checkpoint": locked_checkpoint, "cohort": cohort, "full": full, "partial": partial,
            "checkpoint": checkpoint}


@pytest.mark.parametrize("case,command,target", [
    ("grade into a read-only folder", "grade", "readonly/r.json"),
    ("score into a read-only folder", "score", "readonly"),
    ("saliency into a read-only folder", "saliency", "readonly"),
    ("unreadable checkpoint", "grade", "locked.safetensors"),
    ("disk full at start (grade)", "grade", "full"),
    ("disk full at start (score)", "score", "full/scores.csv"),
])
def test_environment_failures_are_one_line_naming_the_file(world, case, command, target):
    rc, err = world["outcomes"][case]
    assert_one_clear_error(rc, err, command, world["root"] / target)


def test_an_unreadable_image_is_one_line_naming_it(world):
    rc, err = world["outcomes"]["unreadable image"]
    assert_one_clear_error(rc, err, "grade", world["locked_image"], "ermission denied")


def test_nothing_in_a_read_only_folder_is_lost_or_left_behind(world):
    assert sorted(p.name for p in world["readonly"].iterdir()) == ["existing.csv"]
    assert (world["readonly"] / "existing.csv").read_text() == "keep me\n"


def test_an_unreadable_volume_in_a_cohort_is_an_error_row(world):
    rc, err = world["outcomes"]["unreadable cohort volume"]
    assert rc == 0, err
    rows = {r["case_id"]: r for r in assert_scores_whole(world["root"] / "s_locked.csv", world["root"] / "none")}
    assert rows["knee_2"]["status"] == "error" and "ermission denied" in rows["knee_2"]["error"]
    assert [rows[f"knee_{k}"]["status"] for k in (0, 1, 3)] == ["ok"] * 3


def test_a_disk_that_fills_mid_run_keeps_whole_rows_and_resume_finishes(world):
    rc, err = world["outcomes"]["disk full mid-run (score)"]
    table = world["partial"] / "scores.csv"
    assert_one_clear_error(rc, err, "score", table, "larger than this system allows|disk is full")
    rc, err = world["outcomes"]["resume after the disk was freed"]
    assert rc == 0, err
    import re

    assert int(re.search(r"(\d+) already done", err).group(1)) >= 1, err  # the disk filled mid-run, not at start
    rows = assert_scores_whole(table, world["root"] / "none")
    assert sorted(r["case_id"] for r in rows) == [f"knee_{k}" for k in range(4)]
    assert not [p for p in world["full"].iterdir() if not is_temp(p)]
    assert not [p for p in (world["full"], world["partial"]) for q in p.iterdir() if is_temp(q)]


@pytest.fixture()
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs: a real full disk (ENOSPC). Only where this process may mount (root in a container)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; RLIMIT_FSIZE cases above cover a full disk")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_is_one_line_and_leaves_no_temp_file(tiny_tmpfs, tmp_path, monkeypatch, capsys):
    (tiny_tmpfs / "filler").write_bytes(b"x" * (60 << 10))
    image = write_nifti(tmp_path / "knee.nii.gz", good_array(), np.eye(4))
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors")
    out = tiny_tmpfs / "maps"
    rc = run_main(monkeypatch, "saliency", "--checkpoint", str(checkpoint), "--image", str(image), "--out", str(out),
                  "--device", "cpu", "--method", "grad")
    message = assert_one_clear_error(rc, capsys.readouterr().err, "saliency", None, "disk is full")
    assert str(tiny_tmpfs) in message
    assert not [p for p in tiny_tmpfs.rglob("*") if is_temp(p)]


@pytest.mark.parametrize("length", [200, 240, 250])
def test_long_output_names_that_the_file_system_accepts_work(length, tmp_path, monkeypatch):
    image = write_nifti(tmp_path / "knee.nii.gz", good_array(), np.eye(4))
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors")
    result = tmp_path / ("r" * (length - len(".json")) + ".json")
    saliency = tmp_path / ("s" * (length - len(".nii.gz")) + ".nii.gz")
    assert run_main(monkeypatch, "grade", str(image), "--checkpoint", str(checkpoint), "--result-json", str(result),
                    "--saliency-out", str(saliency), "--saliency-method", "grad", "--device", "cpu") == 0
    assert json.loads(result.read_text())["saliency_path"] == str(saliency)
    assert not [p for p in tmp_path.iterdir() if is_temp(p)]


def test_an_output_name_too_long_for_the_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    image = write_nifti(tmp_path / "knee.nii.gz", good_array(), np.eye(4))
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors")
    result = tmp_path / ("r" * 300 + ".json")
    rc = run_main(monkeypatch, "grade", str(image), "--checkpoint", str(checkpoint), "--result-json", str(result),
                  "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", None, "too long")

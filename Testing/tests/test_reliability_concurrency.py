"""Robustness class 5: concurrent writers and --overwrite lose nothing.

Generated: processes racing for one lock many times (no two inside at once), holders killed with
SIGKILL (their stale lock is taken over), locks from another host or a reused pid, real `train` and
`score` processes racing for one output, and folders of user files named like run outputs that
`train --overwrite` must leave untouched (only what a run manifest lists is ever deleted).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import TINY, kneeoa_cmd, run_main, volume_folder
from reliability_helpers import assert_one_clear_error, tiny_checkpoint

from kneeoa.engine.rundir import MANIFEST, RUN_ENTRIES, RunDir
from kneeoa.errors import ConfigError
from kneeoa.utils import locks

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

RACER = r"""
import os, random, sys, time
from kneeoa.errors import ConfigError
from kneeoa.utils import locks
lock, log, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
got = 0
while got < n:
    try:
        with locks.exclusive(lock, lock, "x"):
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(fd, f"enter {os.getpid()}\n".encode())
            time.sleep(rng.random() * 0.004)
            os.write(fd, f"exit {os.getpid()}\n".encode())
            os.close(fd)
            got += 1
    except ConfigError:
        time.sleep(rng.random() * 0.002)
"""


def test_racing_processes_are_never_inside_one_lock_together(tmp_path):
    lock, log = tmp_path / ".out.lock", tmp_path / "log"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(lock), str(log), "15", str(seed)], env=ENV)
             for seed in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    lines = log.read_text().splitlines()
    assert len(lines) == 4 * 15 * 2
    for enter, leave in zip(lines[::2], lines[1::2]):  # strictly alternating enter/exit of the same process
        assert enter.startswith("enter ") and leave == "exit " + enter.split()[1]
    assert not lock.exists()


HOLDER = r"""
import sys, time
from kneeoa.utils import locks
assert locks.try_lock(__import__("pathlib").Path(sys.argv[1]))
print("held", flush=True)
time.sleep(300)
"""


def _holder(lock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("seed", range(3))
def test_the_lock_of_a_killed_holder_is_taken_over(seed, tmp_path):
    lock = tmp_path / f".table{seed}.csv.lock"
    proc = _holder(lock)
    try:
        assert not locks.try_lock(lock)  # alive: refused
        assert str(proc.pid) in locks.describe_owner(lock)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert locks.try_lock(lock)  # dead: stale, taken over
    assert locks.read_lock(lock)["pid"] == os.getpid()
    locks.release(lock)
    assert not lock.exists()


def test_locks_that_cannot_be_proven_stale_are_respected(tmp_path):
    other_host = tmp_path / ".a.lock"
    other_host.write_text(json.dumps({"pid": 1, "host": "another-machine", "started": "x", "argv": ["kneeoa"]}))
    with pytest.raises(ConfigError, match="another-machine") as err:
        with locks.exclusive(other_host, tmp_path / "a", "the scores table"):
            pass
    assert str(other_host) in str(err.value)  # tells the user which file to delete
    half_written = tmp_path / ".b.lock"
    half_written.write_text("")
    assert not locks.try_lock(half_written)
    old = time.time() - 2 * locks.UNREADABLE_STALE_S
    os.utime(half_written, (old, old))
    assert locks.try_lock(half_written)  # a crash between create and write, long ago
    reused = tmp_path / ".c.lock"
    reused.write_text(json.dumps({**locks.owner_info(), "proc_start": -1}))  # our pid, but not our process
    assert locks.try_lock(reused)


def test_a_held_run_folder_stops_train_before_it_writes_anything(phantom_cohort, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    proc = _holder(RunDir(out).lock_file)
    try:
        rc = run_main(monkeypatch, "train", "--data", str(phantom_cohort), "--backbone", "resnet3d", "--variant",
                      "dual", "--out", str(out), "--epochs", "1", "--input-size", "24", "24", "24", "--width", "4",
                      "--device", "cpu")
        assert_one_clear_error(rc, capsys.readouterr().err, "train", out, "in use by pid")
        assert sorted(p.name for p in out.iterdir()) == [".kneeoa.lock"]
    finally:
        proc.kill()
        proc.wait()


def test_a_held_scores_table_or_shard_stops_score(tmp_path, monkeypatch, capsys):
    volume_folder(tmp_path / "cohort", 4, shape=(16, 16, 16))
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "scores.csv"
    base = ["score", str(tmp_path / "cohort"), "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu"]
    for held, extra in ((locks.lock_path_for(out), []), (locks.lock_path_for(out), ["--shard", "1/2"]),
                        (locks.lock_path_for(out, "shard-0-of-2"), []),
                        (locks.lock_path_for(out, "shard-1-of-2"), ["--shard", "1/2"])):
        proc = _holder(held)
        try:
            rc = run_main(monkeypatch, *base, *extra)
            assert_one_clear_error(rc, capsys.readouterr().err, "score", out, "in use by|being written by")
            assert not out.exists()
        finally:
            proc.kill()
            proc.wait()
    assert run_main(monkeypatch, *base, "--shard", "0/2") == 0  # a different shard may run alongside another
    assert run_main(monkeypatch, *base, "--shard", "1/2", "--resume") == 0
    assert len(list(csv.DictReader(out.open(encoding="utf-8")))) == 4


@pytest.mark.slow
def test_two_fresh_score_runs_into_one_table_write_every_case_once(tmp_path):
    volume_folder(tmp_path / "cohort", 6, shape=(16, 16, 16))
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "scores.csv"
    argv = kneeoa_cmd("score", str(tmp_path / "cohort"), "--checkpoint", str(checkpoint), "--out", str(out),
                      "--device", "cpu")
    procs = [subprocess.Popen(argv, env=ENV, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    rc, err = next(r for r in results if r[0] == 1)
    assert_one_clear_error(rc, err, "score", out, "in use by|exists")
    ids = [r["case_id"] for r in csv.DictReader(out.open(encoding="utf-8"))]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 6


@pytest.mark.slow
def test_two_train_runs_into_one_folder_leave_one_consistent_run(phantom_cohort, tmp_path):
    from kneeoa.models.checkpoint import read_card

    out = tmp_path / "run"
    common = ["--data", str(phantom_cohort), "--backbone", "resnet3d", "--out", str(out), "--epochs", "1",
              "--input-size", "24", "24", "24", "--width", "4", "--device", "cpu"]
    procs = [subprocess.Popen(kneeoa_cmd("train", *common, "--variant", variant), env=ENV, stderr=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, text=True) for variant in ("dual", "single-oa")]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    rc, err = next(r for r in results if r[0] == 1)
    assert_one_clear_error(rc, err, "train", out, "in use by|already holds")
    import yaml

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert read_card(out / "checkpoints" / "last.safetensors")["spec"]["variant"] == config["variant"]
    resumed = subprocess.run(kneeoa_cmd("train", "--out", str(out), "--resume", "--device", "cpu"), env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr


def _foreign_folder(folder: Path, rng: np.random.Generator) -> dict[Path, bytes]:
    """User files, some named like run outputs (config.yaml, checkpoints/, tensorboard/ ...), no manifest."""
    folder.mkdir(parents=True)
    names = [n for n in RUN_ENTRIES if n != "cache" and rng.random() < 0.6] or ["config.yaml"]
    files = {}
    for name in [*names, "notes.txt"]:
        if name in ("checkpoints", "tensorboard"):
            path = folder / name / f"mine_{int(rng.integers(100))}.bin"
        else:
            path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(int(rng.integers(1, 200))))
        files[path] = path.read_bytes()
    return files


@pytest.mark.parametrize("seed", range(8))
def test_overwrite_never_deletes_files_no_run_manifest_lists(seed, phantom_cohort, tmp_path, monkeypatch, capsys):
    out = tmp_path / "not a run"
    files = _foreign_folder(out, np.random.default_rng(seed))
    rc = run_main(monkeypatch, "train", "--data", str(phantom_cohort), "--backbone", "resnet3d", "--variant", "dual",
                  "--out", str(out), "--overwrite", "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "train", out, "no KneeOA run manifest")
    assert {p: p.read_bytes() for p in files} == files
    assert not (out / MANIFEST).exists()


def test_overwrite_deletes_only_the_entries_the_manifest_lists(phantom_cohort, tmp_path):
    from kneeoa.engine.train import train

    out = tmp_path / "run"
    train(phantom_cohort, "resnet3d", "single-oa", out, overrides=TINY)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["entries"] = [e for e in manifest["entries"] if e != "train.log"]  # pretend train.log is the user's
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "train.log").write_text("my notes")
    with pytest.raises(ConfigError, match="train.log"):
        train(phantom_cohort, "resnet3d", "dual", out, overrides=TINY, overwrite=True)
    assert (out / "train.log").read_text() == "my notes"

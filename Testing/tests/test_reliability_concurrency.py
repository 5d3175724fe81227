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


def _stats_job(tmp: Path) -> tuple[list[str], Path, Path]:
    """(argv, the output the message names, the lock file) of `kneeoa stats` on tiny synthetic predictions."""
    from kneeoa.analysis.synthetic_preds import write_synthetic_predictions

    write_synthetic_predictions(tmp / "preds", n_subjects=20, seed=0, backbones=("resnet3d",))
    out = tmp / "stats.csv"
    return ["stats", str(tmp / "preds"), "--out", str(out), "--resamples", "20"], out, locks.lock_path_for(out)


def _merge_job(tmp: Path) -> tuple[list[str], Path, Path]:
    from kneeoa.engine.score_io import ensure_header, format_row
    from kneeoa.utils.atomic import append_line

    parts = []
    for k in range(2):
        part = tmp / f"scores_{k}.csv"
        ensure_header(part)
        append_line(part, format_row({"case_id": f"knee_{k}", "path": f"/d/knee_{k}.nii.gz", "status": "ok",
                                      "error": "", "oa_prob": 0.5}))
        parts.append(str(part))
    out = tmp / "scores.csv"
    return ["merge", str(out), *parts], out, locks.lock_path_for(out)  # the lock `score` takes on a table too


def _latent_job(tmp: Path) -> tuple[list[str], Path, Path]:
    rng = np.random.default_rng(0)
    arrays = {"name": np.array("resnet3d_dual")}
    for split, n in (("train", 20), ("test", 10)):
        kl = np.arange(n) % 5
        arrays[f"{split}_embedding"] = (kl[:, None] + rng.normal(0, 0.3, (n, 4))).astype(np.float32)
        arrays[f"{split}_kl"] = kl
    np.savez(tmp / "resnet3d_dual_embeddings.npz", **arrays)
    out = tmp / "latent"
    return ["latent", str(tmp / "resnet3d_dual_embeddings.npz"), "--out", str(out)], out, \
        locks.lock_path_for(out / "latent_summary.csv")


def _saliency_job(tmp: Path) -> tuple[list[str], Path, Path]:
    image = volume_folder(tmp / "images", 1, shape=(16, 16, 16))[0]
    out = tmp / "maps"
    argv = ["saliency", "--checkpoint", str(tiny_checkpoint(tmp / "m.safetensors")), "--image", str(image),
            "--out", str(out), "--n-samples", "1", "--device", "cpu"]
    return argv, out, locks.lock_path_for(out / "saliency_overlap.csv")


def _score_saliency_job(tmp: Path) -> tuple[list[str], Path, Path]:
    volume_folder(tmp / "cohort", 2, shape=(16, 16, 16))
    out = tmp / "maps"
    argv = ["score", str(tmp / "cohort"), "--checkpoint", str(tiny_checkpoint(tmp / "m.safetensors")), "--out",
            str(tmp / "scores.csv"), "--saliency", str(out), "--device", "cpu"]
    return argv, out, locks.lock_path_for(out / "saliency_overlap.csv")


def _written(folder: Path) -> set[str]:
    """Every file under `folder` but the lock files and the inputs the job builders wrote."""
    inputs = {"preds", "images", "cohort", "m.safetensors", "resnet3d_dual_embeddings.npz", "scores_0.csv",
              "scores_1.csv"}
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock")
            and p.relative_to(folder).parts[0] not in inputs}


@pytest.mark.parametrize("job", [_stats_job, _merge_job, _latent_job, _saliency_job, _score_saliency_job],
                         ids=["stats", "merge", "latent", "saliency", "score-saliency"])
def test_a_held_output_stops_the_writer_and_a_dead_holders_lock_is_taken_over(job, tmp_path, monkeypatch, capsys):
    argv, out, lock = job(tmp_path)
    proc = _holder(lock)
    try:
        rc = run_main(monkeypatch, *argv)
        assert_one_clear_error(rc, capsys.readouterr().err, argv[0], out, f"in use by pid {proc.pid}")
        assert _written(tmp_path) == set()  # refused before anything was written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert locks.read_lock(lock)["pid"] == proc.pid  # the dead holder's lock is still there: stale
    assert run_main(monkeypatch, *argv) == 0, capsys.readouterr().err
    assert _written(tmp_path) and not lock.exists()  # taken over, the outputs written, the lock released


def test_saliency_folder_shards_of_one_score_run_side_by_side_but_exclude_a_whole_run(tmp_path, monkeypatch,
                                                                                      capsys):
    argv, out, _ = _score_saliency_job(tmp_path)
    proc = _holder(locks.lock_path_for(out / "saliency_overlap.csv", "shard-1-of-2"))
    try:
        rc = run_main(monkeypatch, *argv)  # a run over every case would write the shard's maps as well
        assert_one_clear_error(rc, capsys.readouterr().err, "score", out, "being written by .* \\(a shard\\)")
        assert run_main(monkeypatch, *argv, "--shard", "0/2") == 0  # the other shard's maps are its own
        assert sorted(p.name for p in out.glob("*.nii.gz")) == ["knee_0_saliency.nii.gz"]
    finally:
        proc.kill()
        proc.wait()


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

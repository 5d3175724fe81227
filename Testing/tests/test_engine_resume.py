"""Interrupted work: SIGKILL a training or a scoring job, `--resume`, and get what an uninterrupted run gives."""

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from engine_helpers import kneeoa_cmd, run_cli, state_dict_of, tiny_checkpoint, volume_folder

from kneeoa.engine.score_io import read_scores

pytestmark = pytest.mark.slow

TRAIN_ARGS = ["--backbone", "resnet3d", "--variant", "dual", "--epochs", "4", "--input-size", "24", "--width", "4",
              "--batch-size", "2", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "KNEEOA_PROGRESS": "none"}


def _lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def _assert_consistent(run: Path) -> None:
    """After a kill: every output file is complete (loadable), whatever moment the kill hit."""
    from kneeoa.engine.state import read_trainer_meta
    from kneeoa.models.checkpoint import read_card

    if (run / "checkpoints" / "last.safetensors").exists():
        card = read_card(run / "checkpoints" / "last.safetensors")
        meta = read_trainer_meta(run / "checkpoints" / "trainer_state.safetensors")
        assert meta["epoch"] >= card["training"]["epochs_done"]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def _kill_when(cmd: list[str], ready, extra_delay: float = 0.0, timeout: float = 240) -> int:
    """Start `cmd`, SIGKILL it as soon as `ready()` holds (plus a delay); returns its exit code."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            time.sleep(extra_delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    return proc.returncode


def test_training_killed_twice_then_resumed_equals_an_uninterrupted_run(phantom_cohort, tmp_path: Path):
    full = tmp_path / "full"
    proc = run_cli("train", "--data", str(phantom_cohort), "--out", str(full), *TRAIN_ARGS, env={"KNEEOA_PROGRESS": "none"})
    assert proc.returncode == 0, proc.stderr

    run = tmp_path / "killed"
    cmd = kneeoa_cmd("train", "--data", str(phantom_cohort), "--out", str(run), *TRAIN_ARGS)
    rc = _kill_when(cmd, lambda: _lines(run / "metrics.jsonl") >= 1)
    assert rc == -signal.SIGKILL
    _assert_consistent(run)
    # second kill at a random moment inside a later epoch (possibly mid-write)
    delay = random.Random(7).uniform(0.0, 0.5)
    rc = _kill_when(kneeoa_cmd("train", "--out", str(run), "--resume"),
                    lambda: _lines(run / "metrics.jsonl") >= 2, extra_delay=delay)
    assert rc in (-signal.SIGKILL, 0)
    _assert_consistent(run)
    proc = run_cli("train", "--out", str(run), "--resume", env={"KNEEOA_PROGRESS": "none"})
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp" in p.name]

    a = state_dict_of(full / "checkpoints" / "last.safetensors")
    b = state_dict_of(run / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(bool((a[k] == b[k]).all()) for k in a), "resumed weights differ from the uninterrupted run"
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    loss_full = [json.loads(x)["loss"] for x in (full / "metrics.jsonl").read_text().splitlines()]
    loss_run = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert loss_full == loss_run


def test_scoring_killed_then_resumed_redoes_nothing(tmp_path: Path):
    folder = tmp_path / "cohort"
    volume_folder(folder, 40, shape=(24, 24, 24))
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    full = tmp_path / "full.csv"
    assert run_cli("score", str(folder), "--checkpoint", str(ckpt), "--out", str(full), "--workers", "0").returncode == 0

    out = tmp_path / "killed.csv"
    cmd = kneeoa_cmd("score", str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--workers", "1")
    rc = _kill_when(cmd, lambda: _lines(out) >= 6)
    assert rc == -signal.SIGKILL
    before = read_scores(out)
    assert 5 <= len(before) < 40
    proc = run_cli("score", str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--resume")
    assert proc.returncode == 0, proc.stderr
    after = read_scores(out)
    assert after[: len(before)] == before  # rows already scored were not touched
    assert sorted(r["case_id"] for r in after) == sorted(r["case_id"] for r in read_scores(full))
    assert len({r["case_id"] for r in after}) == len(after)
    reference = {r["case_id"]: r for r in read_scores(full)}
    assert all(abs(float(r["oa_prob"]) - float(reference[r["case_id"]]["oa_prob"])) < 1e-6 for r in after)

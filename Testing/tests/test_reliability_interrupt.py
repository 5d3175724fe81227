"""SIGKILL `kneeoa train` and `kneeoa score` at seeded random moments, three times each; after every kill
every output on disk is complete, and `--resume` finishes with exactly what an uninterrupted run gives.

test_engine_resume.py kills at fixed points (after an epoch line / a few rows); here the moments are
random (seeded) and every file is checked after each kill, saliency maps and the tensor cache included.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import kneeoa_cmd, run_main, state_dict_of, volume_folder
from reliability_helpers import assert_scores_whole, is_temp, tiny_checkpoint

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "KNEEOA_PROGRESS": "json"}
KILLS = 3


def _kill_after_events(cmd: list[str], events: int, delay: float, timeout: float = 120) -> int | None:
    """Run `cmd`, SIGKILL it `delay` s after its `events`-th JSON progress line; exit code (None = killed)."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + timeout
    seen = 0
    try:
        while seen < events and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break  # finished before the chosen moment
            seen += line.startswith("{")
        if proc.poll() is None:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
    finally:
        proc.stdout.close()
        proc.wait(timeout=60)
    return None if proc.returncode == -signal.SIGKILL else proc.returncode


def _assert_run_complete_on_disk(run: Path) -> None:
    """Everything a killed training run left under a real name is whole and loadable."""
    import yaml

    from kneeoa.engine.state import read_trainer_meta
    from kneeoa.models.checkpoint import load_checkpoint

    if not (run / "config.yaml").exists():
        return  # killed before the run folder was set up
    assert isinstance(yaml.safe_load((run / "config.yaml").read_text()), dict)
    last, state = run / "checkpoints" / "last.safetensors", run / "checkpoints" / "trainer_state.safetensors"
    if last.exists():
        _, card = load_checkpoint(last)
        assert read_trainer_meta(state)["epoch"] >= card["training"]["epochs_done"]
    if (run / "metrics.jsonl").exists():
        text = (run / "metrics.jsonl").read_text()
        assert text == "" or text.endswith("\n")
        [json.loads(line) for line in text.splitlines()]
    for entry in (run / "cache").rglob("*.npy") if (run / "cache").is_dir() else []:
        if not is_temp(entry):
            assert np.load(entry, allow_pickle=False).ndim == 4


def test_training_killed_three_times_at_random_then_resumed_equals_one_run(phantom_cohort, tmp_path, monkeypatch):
    args = ["--backbone", "resnet3d", "--variant", "dual", "--epochs", "4", "--input-size", "16", "--width", "4",
            "--batch-size", "2", "--device", "cpu"]
    full = tmp_path / "full"
    assert run_main(monkeypatch, "train", "--data", str(phantom_cohort), "--out", str(full), *args) == 0
    run = tmp_path / "killed"
    rng = random.Random(2024)
    kills = 0
    for attempt in range(KILLS):
        cmd = kneeoa_cmd("train", "--out", str(run), "--resume") if attempt else \
            kneeoa_cmd("train", "--data", str(phantom_cohort), "--out", str(run), *args)
        # the json `start` event comes when the epochs begin; then die somewhere within ~an epoch or two
        rc = _kill_after_events(cmd, events=1 + rng.randint(0, 2), delay=rng.uniform(0.0, 1.5))
        assert rc in (None, 0)
        kills += rc is None
        _assert_run_complete_on_disk(run)
    assert kills >= 2, "the kills should mostly land while the run is working"
    assert run_main(monkeypatch, "train", "--out", str(run), "--resume") == 0
    _assert_run_complete_on_disk(run)
    assert not [p for p in run.rglob("*") if is_temp(p) and p.parent in (run, run / "checkpoints")]
    a = state_dict_of(full / "checkpoints" / "last.safetensors")
    b = state_dict_of(run / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_scoring_killed_three_times_at_random_then_resumed_equals_one_run(tmp_path, monkeypatch):
    from kneeoa.engine.score_io import read_scores

    folder = tmp_path / "cohort"
    volume_folder(folder, 30, shape=(16, 16, 16))
    good = (folder / "knee_0.nii.gz").read_bytes()
    (folder / "knee_7b.nii.gz").write_bytes(good[: len(good) // 2])  # an error row among the rows
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    common = ["--checkpoint", str(ckpt), "--workers", "1", "--device", "cpu"]
    assert run_main(monkeypatch, "score", str(folder), "--out", str(tmp_path / "full.csv"), "--saliency",
                    str(tmp_path / "full_maps"), *common) == 0
    out, maps = tmp_path / "killed.csv", tmp_path / "maps"
    rng = random.Random(7)
    kills = 0
    for attempt in range(KILLS):
        done = len(assert_scores_whole(out, maps))
        cmd = kneeoa_cmd("score", str(folder), "--out", str(out), "--saliency", str(maps), *common,
                         *(["--resume"] if attempt else []))
        rc = _kill_after_events(cmd, events=1 + rng.randint(1, max(1, (31 - done) // 2)),
                                delay=rng.uniform(0.0, 0.05))
        assert rc in (None, 0)
        kills += rc is None
        assert_scores_whole(out, maps)
    assert kills == KILLS
    assert run_main(monkeypatch, "score", str(folder), "--out", str(out), "--saliency", str(maps), *common,
                    "--resume") == 0
    rows = assert_scores_whole(out, maps)

    def comparable(row: dict) -> tuple:
        return tuple(sorted({**row, "saliency_path": Path(row["saliency_path"]).name}.items()))

    reference = read_scores(tmp_path / "full.csv")
    assert {comparable(r) for r in rows} == {comparable(r) for r in reference} and len(rows) == 31
    for name in (Path(r["saliency_path"]).name for r in reference if r["saliency_path"]):
        assert (maps / name).read_bytes() == (tmp_path / "full_maps" / name).read_bytes()



class _Killed(BaseException):
    """Stands in for SIGKILL at one exact instruction (a real signal cannot be aimed that precisely)."""


def test_a_kill_between_trainer_state_and_log_line_loses_no_epoch_line(phantom_cohort, tmp_path, monkeypatch):
    """What the random kills above once hit: epoch 2's state and checkpoint saved, its log line not yet."""
    from kneeoa.engine.rundir import RunDir

    run = tmp_path / "run"
    append = RunDir.append_metrics

    def killed_at_epoch_2(self, row):
        if row["epoch"] == 2:
            raise _Killed
        append(self, row)

    with monkeypatch.context() as patch:
        patch.setattr(RunDir, "append_metrics", killed_at_epoch_2)
        with pytest.raises(_Killed):
            run_main(patch, "train", "--data", str(phantom_cohort), "--out", str(run), "--backbone", "resnet3d",
                     "--variant", "dual", "--epochs", "3", "--input-size", "16", "--width", "4", "--batch-size", "4",
                     "--device", "cpu")
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    # what Slicer's panel reads before it resumes (the resumed run prints only epochs 3..): the state's row counts
    from kneeoa.slicer import training

    assert [r["epoch"] for r in RunDir(run).completed_metrics()] == [1, 2]
    assert training.run_state(run).epochs_done == 2
    monitor = training.TrainingMonitor()
    monitor.load_history(run)
    assert [r["epoch"] for r in monitor.history] == [1, 2]
    with (run / "metrics.jsonl").open("a") as log:  # a line of an epoch the state never reached is not counted
        log.write(json.dumps({"epoch": 3, "loss": 1.0}) + "\n")
    assert [r["epoch"] for r in RunDir(run).completed_metrics()] == [1, 2]
    assert run_main(monkeypatch, "train", "--out", str(run), "--resume") == 0
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]

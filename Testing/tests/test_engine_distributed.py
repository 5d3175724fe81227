"""Several processes through torchrun: DDP on gloo (CPU), DistributedSampler, rank-0 writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import tiny_checkpoint, volume_folder

from kneeoa.engine.score_io import read_scores
from kneeoa.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def _torchrun(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KNEEOA_PROGRESS": "none", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "kneeoa", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_process_gloo_training_writes_one_run(phantom_cohort, tmp_path: Path):
    from kneeoa.data.cohort import load_cohort

    out = tmp_path / "ddp"
    proc = _torchrun("train", "--data", str(phantom_cohort), "--backbone", "resnet3d", "--variant", "dual",
                     "--out", str(out), "--epochs", "1", "--input-size", "24", "--width", "4", "--batch-size", "2",
                     "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    n_train = len(load_cohort(phantom_cohort).split("train"))
    assert len(rows) == 1  # rank 0 alone writes
    assert rows[0]["samples"] == n_train + n_train % 2  # the sampler pads to an even split
    model, card = load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert "test" in card["metrics"] and card["spec"]["variant"] == "dual"
    assert "world size 2" in (out / "train.log").read_text()


def test_torchrun_ranks_split_a_scoring_job(tmp_path: Path):
    folder = tmp_path / "cohort"
    volume_folder(folder, 5)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors")
    proc = _torchrun("score", str(folder), "--checkpoint", str(ckpt), "--out", str(tmp_path / "s.csv"),
                     "--workers", "0", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = [r["case_id"] for r in read_scores(tmp_path / "s.csv")]
    assert sorted(ids) == [f"knee_{k}" for k in range(5)]

"""Long cohorts: scoring memory does not grow with the number of volumes; two processes scoring disjoint
shards into one table and one saliency folder at the same time do not corrupt each other.

The 2,000-volume numbers are benchmarks/bench_memory.py's; this is the same measurement at 300 volumes.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from engine_helpers import kneeoa_cmd, run_main, volume_folder
from reliability_helpers import assert_scores_whole, tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _bench_memory():
    spec = importlib.util.spec_from_file_location("bench_memory", REPO / "benchmarks" / "bench_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_scoring_memory_stays_flat_over_300_volumes(tmp_path):
    bench = _bench_memory()
    bench.make_cohort(tmp_path / "cohort", 300)
    checkpoint = bench.make_checkpoint(tmp_path / "model.safetensors")  # 32^3 input: a kept tensor is 128 KiB
    trace = bench.rss_trace(tmp_path / "cohort", checkpoint, tmp_path / "scores.csv")
    assert [done for done, _ in trace] == list(range(1, 301))
    settled = sorted(rss for done, rss in trace if 40 <= done < 60)[10]  # median once allocators have warmed up
    late = max(rss for done, rss in trace if done > 280)
    # keeping one input tensor per volume would add ~30 MiB here; allocator noise is well under 1 MiB
    assert late - settled < 8 * 1024, f"resident memory grew {(late - settled) / 1024:.1f} MiB over 240 volumes"


def _shard_of(case_id: str, order: list[str]) -> int:
    return order.index(case_id) % 2


@pytest.mark.slow
def test_two_processes_scoring_disjoint_shards_into_one_table_at_once(tmp_path, monkeypatch):
    """Both shards append to one scores.csv and one maps folder; the first to score is paused (SIGSTOP) until
    the other has scored too, so they really do write at the same time."""
    from kneeoa.engine.score import list_cases
    from kneeoa.engine.score_io import read_scores

    folder = tmp_path / "cohort"
    volume_folder(folder, 40, shape=(16, 16, 16))
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors")
    order = [case_id for case_id, _ in list_cases(folder)]
    shared, maps = tmp_path / "out" / "scores.csv", tmp_path / "out" / "maps"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KNEEOA_PROGRESS": "none"}
    procs = [subprocess.Popen(kneeoa_cmd("score", str(folder), "--checkpoint", str(checkpoint), "--out", str(shared),
                                         "--saliency", str(maps), "--shard", f"{i}/2", "--resume", "--workers", "0",
                                         "--device", "cpu"), env=env, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    paused, released = None, False
    deadline = time.monotonic() + 240
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        seen = {_shard_of(r["case_id"], order) for r in read_scores(shared)} if shared.exists() else set()
        if paused is None and not released and len(seen) == 1:
            paused = seen.pop()
            procs[paused].send_signal(signal.SIGSTOP)
        elif paused is not None and (len(seen) == 2 or procs[1 - paused].poll() is not None):
            procs[paused].send_signal(signal.SIGCONT)
            paused, released = None, True
        time.sleep(0.01)
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors

    rows = assert_scores_whole(shared, maps)
    shards = [_shard_of(r["case_id"], order) for r in rows]
    assert sum(a != b for a, b in zip(shards, shards[1:])) >= 2, "the two shards never wrote at the same time"
    assert run_main(monkeypatch, "score", str(folder), "--checkpoint", str(checkpoint), "--out",
                    str(tmp_path / "single.csv"), "--saliency", str(tmp_path / "single_maps"), "--workers", "0",
                    "--device", "cpu") == 0

    def comparable(row: dict) -> tuple:
        return tuple(sorted({**row, "saliency_path": Path(row["saliency_path"]).name}.items()))

    single = read_scores(tmp_path / "single.csv")
    assert sorted(map(comparable, rows)) == sorted(map(comparable, single)) and len(rows) == 40
    assert sorted(p.name for p in maps.iterdir()) == sorted(p.name for p in (tmp_path / "single_maps").iterdir())

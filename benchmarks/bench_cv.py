"""Benchmark cases of issue 16: the cross-validated study.

    python benchmarks/bench_cv.py [--quick]

1. Local executor, `--jobs 2` vs `--jobs 1`, on one tiny CV study (phantom 16+8 knees at 24^3, K=3 x S=2,
   ResNet3D width 4 Single-OA + Dual at 16^3, 1 epoch: 12 runs). The same prepared plan is executed with
   each job count in turns (the runs are deleted in between), best of the repeats, so load from other
   processes hits both alike. Each child gets cores // jobs threads, so --jobs 1 runs on all cores too.
2. Aggregation at paper scale: 9 models x 5 folds x 3 seeds of 481 knees (401 subjects, 80 with two
   knees), B = 10,000: pooling the 135 fold prediction files, the clustered tests per seed and combined,
   the latent PCA of every run, tables and the forest plot. Synthetic predictions and embeddings
   (kneeoa.analysis.synthetic_preds): only the sizes are real.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

SPEEDUP_TARGET = 1.6
AGGREGATE_TARGET_S = 60.0
N_KNEES, N_PAIRS, K, S = 481, 80, 5, 3


def _local_speedup(tmp: Path, quick: bool) -> dict:
    from kneeoa.crossval.study import pending, prepare_cv_study
    from kneeoa.data.phantom import generate_cohort
    from kneeoa.studyexec.local import run_local
    from kneeoa.threads import available_cores

    data = tmp / "cohort"
    generate_cohort(data, 16, 8, shape=(24, 24, 24), seed=3, bilateral=0.5, workers=2)
    seeds = 1 if quick else 2
    overrides = {"epochs": 1, "width": 4, "input_shape": [16, 16, 16], "device": "cpu"}
    study = tmp / "study"
    tasks = prepare_cv_study(data, study, folds=3, seeds=seeds, backbones=("resnet3d",),
                             variants=("single-oa", "dual"), overrides=overrides)
    run_local(study, [0], jobs=1)  # warm: the preprocessing cache and the page cache, out of the timing
    best = {1: float("inf"), 2: float("inf")}
    for _ in range(1 if quick else 2):
        for jobs in (1, 2):
            for sub in ("runs", "predictions", "status", "logs"):
                shutil.rmtree(study / sub, ignore_errors=True)
            t0 = time.perf_counter()
            codes = run_local(study, pending(tasks), jobs=jobs)
            best[jobs] = min(best[jobs], time.perf_counter() - t0)
            if any(codes.values()):
                raise RuntimeError(f"CV benchmark runs failed: {codes}")
    ratio = best[1] / best[2]
    return {"case": f"cv local executor --jobs 2 vs --jobs 1 ({len(tasks)} runs, K=3 x S={seeds})",
            "ours_s": round(best[2], 2), "baseline_s": round(best[1], 2), "ratio": round(ratio, 2),
            "target": f">= {SPEEDUP_TARGET}x", "passed": ratio >= SPEEDUP_TARGET,
            "note": f"{available_cores()} core(s); best of the repeats, job counts in turns"}


def _paper_scale_study(tmp: Path, quick: bool) -> tuple[Path, list]:
    """A finished-looking CV study folder: fold table, plan, per-fold predictions and embeddings."""
    from kneeoa.analysis.synthetic_preds import write_synthetic_predictions
    from kneeoa.contracts.studies import FOLD_COLUMNS
    from kneeoa.crossval.plan import build_tasks
    from kneeoa.data.tables import read_table, write_table

    study = tmp / "paper"
    ids = np.arange(1, N_KNEES + 1)
    subject = np.where(ids <= 2 * N_PAIRS, (ids + 1) // 2, ids - N_PAIRS)  # knees 1-2, 3-4, ... share a subject
    fold = subject % K
    seeds = 1 if quick else S
    tasks = build_tasks(study, ("resnet3d", "m3t", "nnmamba"), ("single-oa", "single-kl", "dual"), K, seeds)
    pooled: dict[int, dict] = {}
    for s in range(seeds):
        folder = tmp / f"synthetic{s}"
        files = write_synthetic_predictions(folder, n_subjects=N_KNEES, seed=s, first_id=1,
                                            backbones=("resnet3d", "m3t", "nnmamba"))
        pooled[s] = {name: read_table(path) for name, path in files.items()}
    write_table(study / "folds.csv", [{"case_id": f"oaizib_{i:03d}", "CMT-ID": int(i), "subject": str(subject[i - 1]),
                                       "KLGrade": 0, "fold": int(fold[i - 1])} for i in ids], FOLD_COLUMNS)
    rng = np.random.default_rng(0)
    for task in tasks:
        rows = pooled[task.seed][(task.backbone, task.variant.replace("-", "_"))]
        mine = [r for r in rows if fold[int(r["CMT_ID"]) - 1] == task.fold]
        pred_dir = Path(task.pred_dir)
        write_table(pred_dir / f"{task.name}_preds.csv", mine, list(rows[0]))
        (pred_dir / f"{task.name}_metrics.csv").write_text("model\n")
        train_kl = np.array([int(r["label_kl"]) for r in rows if fold[int(r["CMT_ID"]) - 1] != task.fold])
        test_kl = np.array([int(r["label_kl"]) for r in mine])
        np.savez(pred_dir / f"{task.name}_embeddings.npz", name=np.array(task.name),
                 train_embedding=(rng.normal(size=(len(train_kl), 64)) + train_kl[:, None]).astype(np.float32),
                 train_kl=train_kl, test_embedding=(rng.normal(size=(len(test_kl), 64)) + test_kl[:, None])
                 .astype(np.float32), test_kl=test_kl)
    return study, tasks


def _aggregation(tmp: Path, quick: bool) -> dict:
    from kneeoa.crossval.aggregate import write_aggregates
    from kneeoa.data.tables import read_table

    study, tasks = _paper_scale_study(tmp, quick)
    resamples = 1_000 if quick else 10_000
    t0 = time.perf_counter()
    _, _, _, stats, _ = write_aggregates(study, tasks, read_table(study / "folds.csv"), resamples)
    seconds = time.perf_counter() - t0
    return {"case": f"cv aggregation: 9 models x {K} folds x {len({t.seed for t in tasks})} seeds, {N_KNEES} knees "
                    f"({N_KNEES - N_PAIRS} subjects), B={resamples}",
            "ours_s": round(seconds, 2), "baseline_s": None, "ratio": None, "target": f"< {AGGREGATE_TARGET_S:.0f} s",
            "passed": seconds < AGGREGATE_TARGET_S,
            "note": f"{len(stats['rows'])} test rows (per seed + combined); pooling, clustered bootstrap, latent PCA "
                    "per run, tables, forest plot"}


def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="kneeoa-bench-cv-") as tmp:
        return [_aggregation(Path(tmp), quick), _local_speedup(Path(tmp), quick)]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)

"""Benchmark case 1 (issue 7): the 18-test statistics protocol, ours (vectorised) vs the reference loop.

    python benchmarks/bench_stats.py [--quick]

Nine synthetic 98-subject prediction files (the paper's test KL counts). The baseline is the
per-resample scikit-learn loop of `baselines/stats_reference.py`; it runs fewer resamples and is
scaled per resample. Both are also run on the same resamples, where every output number must be
identical. Last, the wall time of the `kneeoa stats` command itself at B = 10,000.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

N_SUBJECTS = 98
B_OURS = 10_000
SPEEDUP_TARGET = 100.0
CLI_TARGET_S = 10.0


def _identical(ours: list[dict], theirs: list[dict]) -> tuple[bool, str]:
    from kneeoa.analysis.compare import STATS_COLUMNS

    if len(ours) != len(theirs):
        return False, f"{len(ours)} rows vs {len(theirs)}"
    for a, b in zip(ours, theirs):
        differ = [c for c in STATS_COLUMNS if a[c] != b[c] and not (a[c] != a[c] and b[c] != b[c])]
        if differ:
            return False, f"{a['backbone']} {a['task']} {a['metric']}: {', '.join(differ)} differ"
        gap = np.nanmax(np.abs(a["deltas"] - b["deltas"])) if np.isfinite(a["deltas"]).any() else 0.0
        if not np.array_equal(np.isnan(a["deltas"]), np.isnan(b["deltas"])) or gap > 1e-12:
            return False, f"{a['backbone']} {a['task']} {a['metric']}: resample deltas differ by {gap:.2g}"
    return True, "all 18 rows equal (CI, p, q, tables); resample deltas within 1e-12"


def run(quick: bool = False) -> list[dict]:
    """Rows {case, ours_s, baseline_s, ratio, target, passed, note} for the runner's table."""
    from baselines.stats_reference import run_reference

    from kneeoa.analysis.compare import compare_dual_vs_single
    from kneeoa.analysis.synthetic_preds import write_synthetic_predictions

    b_ours = 2_000 if quick else B_OURS
    b_base = 20 if quick else 100
    rows = []
    with tempfile.TemporaryDirectory(prefix="kneeoa-bench-stats-") as tmp:
        preds = Path(tmp) / "preds"
        write_synthetic_predictions(preds, n_subjects=N_SUBJECTS, seed=0)
        compare_dual_vs_single(preds, n_resamples=10)  # warm imports, out of the timing

        t0 = time.perf_counter()
        compare_dual_vs_single(preds, n_resamples=b_ours)
        ours_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        theirs = run_reference(preds, n_resamples=b_base)
        base_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours_same = compare_dual_vs_single(preds, n_resamples=b_base).rows
        ours_same_s = time.perf_counter() - t0
        same, why = _identical(ours_same, theirs)

        per_ours, per_base = ours_s / b_ours, base_s / b_base
        ratio = per_base / per_ours
        rows.append({"case": "stats: 18 tests, per resample", "ours_s": round(ours_s, 3),
                     "baseline_s": round(per_base * b_ours, 1), "ratio": round(ratio, 1),
                     "target": f">= {SPEEDUP_TARGET:.0f}x per resample, identical numbers",
                     "passed": bool(ratio >= SPEEDUP_TARGET and same),
                     "note": f"ours B={b_ours} measured; baseline measured {base_s:.1f} s at B={b_base}, "
                             f"scaled to B={b_ours}"})
        rows.append({"case": f"stats: same {b_base} resamples, same numbers", "ours_s": round(ours_same_s, 3),
                     "baseline_s": round(base_s, 2), "ratio": round(base_s / ours_same_s, 1),
                     "target": "identical rows", "passed": same, "note": why})

        out = Path(tmp) / "stats.csv"
        cmd = [sys.executable, "-m", "kneeoa", "--progress", "none", "stats", str(preds), "--out", str(out),
               "--resamples", str(B_OURS)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
        ok = proc.returncode == 0 and out.exists()
        rows.append({"case": f"kneeoa stats CLI, 9 x {N_SUBJECTS} subjects, B={B_OURS}", "ours_s": round(cli_s, 2),
                     "baseline_s": round(per_base * B_OURS, 1), "ratio": round(per_base * B_OURS / cli_s, 1),
                     "target": f"< {CLI_TARGET_S:.0f} s", "passed": bool(ok and cli_s < CLI_TARGET_S),
                     "note": "wall time incl. Python start-up and imports; baseline = reference loop scaled"
                             + ("" if ok else f"; FAILED: {proc.stderr.strip()[-300:]}")})
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(quick=args.quick)
    cols = ["case", "ours_s", "baseline_s", "ratio", "target", "passed", "note"]
    for row in result:
        print(" | ".join(str(row[c]) for c in cols))
    raise SystemExit(0 if all(r["passed"] for r in result) else 1)

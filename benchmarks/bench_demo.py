"""Case 6: `kneeoa demo` wall time on this machine (target < 10 min on 2 cores). No baseline: an absolute target."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

TARGET_S = 600.0


def run(quick: bool = False) -> list[dict]:
    if quick:
        return [{"case": "demo wall time", "passed": None, "note": "skipped in --quick (run without it)"}]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "kneeoa", "--progress", "none", "demo", "--out", f"{tmp}/demo"],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    ok = proc.returncode == 0
    return [{"case": "demo wall time", "ours_s": round(wall, 1), "target": f"< {TARGET_S:.0f} s",
             "passed": ok and wall < TARGET_S, "note": "" if ok else proc.stderr[-300:]}]

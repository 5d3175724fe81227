"""Run every benchmark case against its baseline in the same run; print a table and write JSON.

    python benchmarks/run.py [--quick] [--only stats,engine] [--out benchmarks/results.json]

Each case module `benchmarks/bench_<name>.py` exposes `run(quick: bool) -> list[dict]` with rows
{case, ours_s, baseline_s, ratio, target, passed, note}. `ratio` is baseline/ours (higher is better) unless the
row says otherwise in its note; `passed` is None where a case only reports.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ["stats", "datapath", "engine", "saliency", "memory", "mamba", "threads", "demo", "cv",
         "robustness"]  # bench_models.py is a printout of its own


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the reported numbers)")
    parser.add_argument("--only", default="", help="comma-separated case modules, e.g. stats,engine")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    names = [n for n in args.only.split(",") if n] or CASES
    rows, t0 = [], time.perf_counter()
    for name in names:
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"bench_{name}")
            new = module.run(quick=args.quick)
        except Exception as err:  # one broken case must not lose the others' numbers
            traceback.print_exc()
            new = [{"case": name, "passed": False, "note": f"failed: {err}"}]
        for row in new:
            row.setdefault("module", name)
        rows.extend(new)
        print(f"[bench] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    cols = ["case", "ours_s", "baseline_s", "ratio", "target", "passed", "note"]
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))
    result = {"machine": platform.platform(), "python": platform.python_version(), "quick": args.quick,
              "wall_s": round(time.perf_counter() - t0, 1), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out} ({result['wall_s']} s)")
    return 0 if all(r.get("passed") is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

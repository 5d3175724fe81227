"""Model numbers for the README: embedding widths, parameter counts, CPU forward times, nnMamba peak memory.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_models.py [--threads N] [--skip-paper] [--json out.json]

Parameter counts are at the paper's sizes (160x256x256; M3T 128^3) on the meta device. CPU forward time is
one volume (batch 1, eval, no grad) at 64^3, narrow and full width, best of 2 after one warm-up. The
nnMamba peak resident memory at 160x256x256 is measured in a fresh subprocess (resource.getrusage).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

NARROW = {"resnet3d": 16, "resnet3d-monai": 16, "m3t": 16, "nnmamba": 8}


def paper_table() -> list[dict]:
    from kneeoa.models.registry import BACKBONES, ModelSpec, describe

    return [describe(ModelSpec(b, v)) for b in BACKBONES for v in ("single-oa", "single-kl", "dual")]


def forward_seconds(backbone: str, width: int | None, size: int = 64, repeats: int = 2) -> float:
    import torch

    from kneeoa.models.registry import ModelSpec, build_model

    model = build_model(ModelSpec(backbone, "dual", input_shape=(size,) * 3, width=width)).eval()
    x = torch.randn(1, 1, size, size, size)
    best = float("inf")
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t)
    return best


def nnmamba_paper_child() -> None:
    """Runs in the subprocess: one nnMamba Dual forward at 160x256x256, prints JSON with time and peak RSS."""
    import torch

    from kneeoa.models.registry import ModelSpec, build_model

    model = build_model(ModelSpec("nnmamba", "dual")).eval()
    x = torch.randn(1, 1, 160, 256, 256)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    with torch.no_grad():
        out = model(x)
    seconds = time.perf_counter() - t
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_gb": round(peak_kb / 2**20, 3),
                      "rss_before_forward_gb": round(before / 2**20, 3),
                      "finite": bool(torch.isfinite(out.kl_logits).all())}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the 160x256x256 nnMamba memory run")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--child-nnmamba-paper", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_nnmamba_paper:
        nnmamba_paper_child()
        return 0
    results: dict = {"threads": torch.get_num_threads(), "paper": paper_table(), "cpu_forward_64": []}
    print(f"{'backbone':15} {'variant':10} {'input':12} {'width':>5} {'params':>12} {'embedding':>9}")
    for r in results["paper"]:
        shape = "x".join(map(str, r["input_shape"]))
        print(f"{r['backbone']:15} {r['variant']:10} {shape:12} {r['width']:5d} {r['params']:12,d} {r['embedding_dim']:9d}")
    print(f"\nCPU forward, one 64^3 volume, Dual, {torch.get_num_threads()} thread(s):")
    for backbone, narrow in NARROW.items():
        row = {"backbone": backbone, "narrow_width": narrow, "narrow_s": forward_seconds(backbone, narrow),
               "full_s": forward_seconds(backbone, None)}
        results["cpu_forward_64"].append(row)
        print(f"  {backbone:15} width {narrow:3d}: {row['narrow_s']:.3f} s   paper width: {row['full_s']:.3f} s")
    if not args.skip_paper:
        cmd = [sys.executable, __file__, "--child-nnmamba-paper"] + (["--threads", str(args.threads)] if args.threads else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            results["nnmamba_paper"] = {"error": proc.stderr[-2000:]}
        else:
            results["nnmamba_paper"] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"\nnnMamba Dual forward at 160x256x256 on CPU (subprocess): {results['nnmamba_paper']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

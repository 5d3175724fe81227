"""`kneeoa segment` of one 384 x 384 x 160 volume on the CPU: wall time and peak RSS of the child process.

    python benchmarks/bench_segment.py [--segmenter S] [--paper] [--out JSON]

The volume is a 64^3 phantom knee resampled (trilinear) to the OAI-ZIB-CM DESS grid, 384 x 384 x 160 at
0.365 x 0.365 x 0.7 mm. Two segmenters: the bundled demo one (resamples the scan to its 2.19 mm training
spacing, so the network sees ~64 x 64 x 51 voxels), and with --paper an untrained network of the paper preset
(UNet width 32, patch 192 x 192 x 64, at the scan's own 0.365 mm: 36 sliding windows on the full grid),
which is what bounds memory. Peak RSS = resource.getrusage(RUSAGE_CHILDREN).ru_maxrss of the `kneeoa
segment` process (its own memory, torch and MONAI included). Reports only (no baseline to beat; the
target is < 4 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (384, 384, 160)
SPACING = (0.3646, 0.3646, 0.7)


def make_volume(path: Path) -> Path:
    import numpy as np
    from scipy import ndimage

    from kneeoa.data.phantom.case import synthesize_case
    from kneeoa.data.volume import write_nifti

    case = synthesize_case(0, 3, (64, 64, 64))
    image = ndimage.zoom(case.image_ijk.astype(np.float32), [n / s for n, s in zip(SHAPE, case.image_ijk.shape)],
                         order=1)
    return write_nifti(path, image, np.diag([*SPACING, 1.0]))


def paper_segmenter(path: Path) -> Path:
    import torch

    from kneeoa.segmentation.checkpoint import save_segmenter, segmenter_card
    from kneeoa.segmentation.model import build_segmenter
    from kneeoa.segmentation.presets import PRESETS

    torch.manual_seed(0)
    cfg = {**PRESETS["paper"], "preset": "paper"}
    return save_segmenter(path, build_segmenter(cfg["arch"], cfg["width"]), segmenter_card(cfg, "untrained"))


def measure(image: Path, segmenter: Path, out: Path) -> dict:
    """One `kneeoa segment` child: wall seconds and its peak RSS (GB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run([sys.executable, "-m", "kneeoa", "segment", str(image), "--checkpoint", str(segmenter),
                    "--out", str(out), "--device", "cpu", "--overwrite"], check=True, env=env)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over children so far (Linux: KB)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_rss_gb": round(peak_kb / 1024**2, 2),
            "peak_is_this_child": peak_kb > before, "threads": os.environ.get("OMP_NUM_THREADS", "default")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenter", default=str(ROOT / "Resources" / "demo_seg_model.safetensors"))
    parser.add_argument("--paper", action="store_true", help="also the paper preset's network at full resolution")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = make_volume(Path(tmp) / "knee384_0000.nii.gz")
        rows.append({"case": "demo segmenter", **measure(image, Path(args.segmenter), Path(tmp) / "a.nii.gz")})
        if args.paper:  # after the small one: ru_maxrss of children is a running maximum
            seg = paper_segmenter(Path(tmp) / "paper.safetensors")
            rows.append({"case": "paper preset network (untrained)", **measure(image, seg, Path(tmp) / "b.nii.gz")})
    for row in rows:
        print(json.dumps(row))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

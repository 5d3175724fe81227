"""Case 4: the paper's SmoothGrad x input, 8 noisy copies in one batch (ours) vs 8 sequential passes (paper code).

Both use the same noise; the row also checks that they give the same map. Models: the `quick` preset's
dual-head ResNet3D and M3T at 64^3, nnMamba at 32^3 (ResNet3D at 32^3 only with --quick).
`KNEEOA_BENCH_DEVICE=cuda` times on a GPU.

    python benchmarks/run.py --only saliency
"""

from __future__ import annotations

import os

from timing import device_sync, interleaved_best, where

N_SAMPLES = 8
NOISE_STD = 0.05


def _model(backbone: str, shape: tuple[int, int, int], device, preset: str = "quick"):
    import torch

    from kneeoa.config import resolve_config, spec_dict
    from kneeoa.models.registry import ModelSpec, build_model

    torch.manual_seed(0)
    if preset == "paper":  # the paper's widths (registry defaults)
        return build_model(ModelSpec(backbone, "dual", input_shape=shape)).eval().to(device)
    cfg = resolve_config("quick", backbone, "dual", overrides={"input_shape": list(shape)})
    return build_model(spec_dict(cfg)).eval().to(device)


def bench_one(backbone: str, size: int | tuple[int, int, int], device, repeats: int = 2, preset: str = "quick",
              batch_size: int | None = None) -> dict:
    """Time batched vs sequential SmoothGrad for one backbone; compare the two maps."""
    import torch

    from kneeoa.analysis.saliency import smoothgrad_sequential, smoothgrad_x_input
    from kneeoa.models.wrappers import ScalarTarget

    shape = (size,) * 3 if isinstance(size, int) else tuple(size)
    model = _model(backbone, shape, device, preset)
    forward = ScalarTarget(model, "kl")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, 1, *shape), generator=gen).to(device)
    sync = device_sync(device)
    smoothgrad_x_input(forward, x, 0, n_samples=2, noise_std=NOISE_STD)  # warm-up: allocator, kernels

    def ours_fn():
        return smoothgrad_x_input(forward, x, 0, N_SAMPLES, NOISE_STD, batch_size=batch_size, seed=1)

    def base_fn():
        return smoothgrad_sequential(forward, x, 0, N_SAMPLES, NOISE_STD, seed=1)

    (ours_s, ours), (base_s, base) = interleaved_best([ours_fn, base_fn], repeats, sync)
    scale = float(base.abs().max()) or 1.0
    max_rel = float((ours - base).abs().max()) / scale
    # float32 conv backends may choose another algorithm for batch 8 than for batch 1 (~1e-3 of the max
    # here; float64 gives identical maps, see Testing/tests/test_saliency.py), so "same" allows that
    same = max_rel < 1e-2
    dims = "x".join(str(s) for s in shape)
    batches = f"batches of {batch_size}" if batch_size else "one batch"
    return {"case": f"saliency smoothgrad x{N_SAMPLES} {backbone} {dims}", "ours_s": round(ours_s, 3),
            "baseline_s": round(base_s, 3), "ratio": round(base_s / ours_s, 2), "target": "report; same map",
            "passed": same, "note": f"{batches} vs sequential, {preset}-preset dual model ({where(device)}); "
                                    f"max map difference {max_rel:.1e} of max"}


def run_paper(device, scale: int = 1, backbones: tuple[str, ...] = ("resnet3d", "m3t", "nnmamba")) -> list[dict]:
    """Paper-size models and inputs (GPU); batch 8 first, then smaller batches if it does not fit."""
    import torch

    rows = []
    paper_shapes = {"resnet3d": (160, 256, 256), "m3t": (128, 128, 128), "nnmamba": (160, 256, 256)}
    for backbone in backbones:
        shape = paper_shapes[backbone]
        shape = tuple(max(8, s // scale) for s in shape)
        for batch_size in (None, 4, 2):
            try:
                repeats = 1 if backbone == "nnmamba" else 2  # its PyTorch scan is slow at 1.3M tokens
                rows.append(bench_one(backbone, shape, device, repeats, preset="paper", batch_size=batch_size))
                break
            except torch.OutOfMemoryError as err:
                note = f"out of memory with batch {batch_size or N_SAMPLES}: {str(err)[:80]}"
                torch.cuda.empty_cache()
        else:
            rows.append({"case": f"saliency smoothgrad paper {backbone}", "passed": None, "note": note})
        print(rows[-1], flush=True)
    return rows


def run(quick: bool = False) -> list[dict]:
    """Rows {case, ours_s, baseline_s, ratio, target, passed, note}, one per backbone."""
    from kneeoa.engine.devices import resolve_device

    device = resolve_device(os.environ.get("KNEEOA_BENCH_DEVICE", "cpu"), quiet=True)
    if quick:
        return [bench_one("resnet3d", 32, device)]
    # nnMamba's CPU Mamba scan is slow (~2 min for 8 samples at 64^3 on 2 cores): 32^3 keeps `make bench` short
    return [bench_one("resnet3d", 64, device, repeats=3), bench_one("m3t", 64, device, repeats=1),
            bench_one("nnmamba", 32, device, repeats=1)]


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="saliency benchmark on its own (GPU: --device cuda --paper)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper", action="store_true", help="paper-size models and inputs (needs a GPU)")
    parser.add_argument("--scale", type=int, default=1, help="divide the paper sizes (a CPU dry run)")
    parser.add_argument("--backbones", default="resnet3d,m3t,nnmamba", help="for --paper")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    from kneeoa.engine.devices import resolve_device

    dev = resolve_device(args.device, quiet=True)
    result = run_paper(dev, args.scale, tuple(args.backbones.split(","))) if args.paper else [bench_one("resnet3d", 64, dev), bench_one("m3t", 64, dev),
                                                              bench_one("nnmamba", 64, dev)]
    for row in result:
        print(row)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)

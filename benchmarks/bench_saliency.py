"""Case 4: the paper's SmoothGrad x input, 8 noisy copies in one batch (ours) vs 8 sequential passes (paper code).

Both use the same noise; the row also checks that they give the same map. Models: the `quick` preset's
dual-head ResNet3D and M3T at 64^3, nnMamba at 32^3 (ResNet3D at 32^3 only with --quick).
`KNEEOA_BENCH_DEVICE=cuda` times on a GPU.

    python benchmarks/run.py --only saliency
"""

from __future__ import annotations

import os
import time

N_SAMPLES = 8
NOISE_STD = 0.05


def _model(backbone: str, size: int, device):
    import torch

    from kneeoa.config import resolve_config, spec_dict
    from kneeoa.models.registry import build_model

    cfg = resolve_config("quick", backbone, "dual", overrides={"input_shape": [size, size, size]})
    torch.manual_seed(0)
    return build_model(spec_dict(cfg)).eval().to(device)


def _best_of(fn, repeats: int, sync) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_one(backbone: str, size: int, device, repeats: int = 2) -> dict:
    """Time batched vs sequential SmoothGrad for one backbone; compare the two maps."""
    import torch

    from kneeoa.analysis.saliency import smoothgrad_sequential, smoothgrad_x_input
    from kneeoa.models.wrappers import ScalarTarget

    model = _model(backbone, size, device)
    forward = ScalarTarget(model, "kl")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, 1, size, size, size), generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    smoothgrad_x_input(forward, x, 0, n_samples=2, noise_std=NOISE_STD)  # warm-up: allocator, kernels
    ours_s, ours = _best_of(lambda: smoothgrad_x_input(forward, x, 0, N_SAMPLES, NOISE_STD, seed=1), repeats, sync)
    base_s, base = _best_of(lambda: smoothgrad_sequential(forward, x, 0, N_SAMPLES, NOISE_STD, seed=1), repeats, sync)
    scale = float(base.abs().max()) or 1.0
    max_rel = float((ours - base).abs().max()) / scale
    # float32 conv backends may choose another algorithm for batch 8 than for batch 1 (~1e-3 of the max
    # here; float64 gives identical maps, see Testing/tests/test_saliency.py), so "same" allows that
    same = max_rel < 1e-2
    threads = torch.get_num_threads() if device.type == "cpu" else None
    where = f"{device.type}" + (f", {threads} threads" if threads else "")
    return {"case": f"saliency smoothgrad x{N_SAMPLES} {backbone} {size}^3", "ours_s": round(ours_s, 3),
            "baseline_s": round(base_s, 3), "ratio": round(base_s / ours_s, 2), "target": "report; same map",
            "passed": same, "note": f"batched vs sequential, quick-preset dual model ({where}); "
                                    f"max map difference {max_rel:.1e} of max"}


def run(quick: bool = False) -> list[dict]:
    """Rows {case, ours_s, baseline_s, ratio, target, passed, note}, one per backbone."""
    from kneeoa.engine.devices import resolve_device

    device = resolve_device(os.environ.get("KNEEOA_BENCH_DEVICE", "cpu"), quiet=True)
    if quick:
        return [bench_one("resnet3d", 32, device)]
    # nnMamba's CPU Mamba scan is slow (~2 min for 8 samples at 64^3 on 2 cores): 32^3 keeps `make bench` short
    return [bench_one("resnet3d", 64, device), bench_one("m3t", 64, device, repeats=1),
            bench_one("nnmamba", 32, device, repeats=1)]


if __name__ == "__main__":
    for row in run():
        print(row)

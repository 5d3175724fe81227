"""Mamba scan: the blocked scan with its own backward (ours) vs the two-level sqrt(T) loop it replaced (baseline).

Cases: forward+backward of one Mamba layer as nnMamba configures it (d_model 32, d_state 8, d_conv 4,
expand 2) at batch 2 and L = 4096 / 32768 tokens, and one training step (forward, loss, backward, AdamW) of
the `quick`-preset Dual nnMamba (width 8, 32^3, batch 4). Both sides share weights and inputs; each row
also checks that they give the same gradients. `KNEEOA_BENCH_DEVICE=cuda` times on a GPU.

    python benchmarks/run.py --only mamba        # or: python benchmarks/bench_mamba.py [--quick]
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # baselines/ when run on its own
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # kneeoa from a checkout without installing

from timing import device_sync, interleaved_best, where  # noqa: E402 (after the path setup)

LAYER_TARGET = 2.0  # x faster than the baseline
STEP_TARGET = 1.5


def _grad_difference(ours: list, base: list) -> float:
    """Largest absolute gradient difference over all tensors, relative to the largest gradient (some
    gradients are ~0, e.g. conv biases before a BatchNorm, so per-tensor ratios would be noise)."""
    err = max(float((a - b).abs().max()) for a, b in zip(ours, base))
    return err / max(max(float(b.abs().max()) for b in base), 1e-12)


def layer_case(L: int, device, repeats: int = 3, batch: int = 2) -> dict:
    """Forward+backward of one Mamba layer on (batch, L, 32); max gradient difference in the note."""
    import torch
    from baselines.mamba_scan_reference import ReferenceMamba

    from kneeoa.models.mamba import Mamba

    torch.manual_seed(0)
    ours = Mamba(32, d_state=8, d_conv=4, expand=2, backend="torch").to(device)
    base = ReferenceMamba(32, d_state=8, d_conv=4, expand=2, backend="torch").to(device)
    base.load_state_dict(ours.state_dict())
    x = torch.randn(batch, L, 32, device=device)

    def step(m):
        def fn():
            m.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_(True)
            m(xi).pow(2).mean().backward()
            return [xi.grad] + [p.grad for p in m.parameters()]
        return fn

    step(ours)()  # warm-up (allocator, kernels)
    (ours_s, g_ours), (base_s, g_base) = interleaved_best([step(ours), step(base)], repeats, device_sync(device))
    diff = _grad_difference(g_ours, g_base)
    ratio = base_s / ours_s
    return {"case": f"mamba layer fwd+bwd B={batch} L={L} d_model=32", "ours_s": round(ours_s, 4),
            "baseline_s": round(base_s, 4), "ratio": round(ratio, 2), "target": f">= {LAYER_TARGET:g}x, same grads",
            "passed": ratio >= LAYER_TARGET and diff < 1e-4,
            "note": f"blocked scan vs two-level loop ({where(device)}); max grad difference {diff:.1e} of the largest grad"}


def nnmamba_step_case(device, repeats: int = 3) -> dict:
    """One quick-preset Dual nnMamba training step (batch 4, 32^3): ours vs the same model on the old scan."""
    import torch
    from baselines.mamba_scan_reference import ReferenceMamba

    from kneeoa.config import resolve_config, spec_dict
    from kneeoa.models.heads import hierarchical_loss
    from kneeoa.models.registry import build_model

    torch.manual_seed(0)
    cfg = resolve_config("quick", "nnmamba", "dual")
    ours = build_model(spec_dict(cfg)).to(device)
    base = copy.deepcopy(ours)
    layer = base.backbone.mamba_layer_stem
    old = layer.mamba
    ref = ReferenceMamba(old.d_model, d_state=old.d_state, d_conv=old.d_conv, expand=old.expand,
                         chunk_size=old.chunk_size).to(device)
    ref.load_state_dict(old.state_dict())
    layer.mamba = ref
    batch = int(cfg["batch_size"])
    x = torch.randn(batch, 1, *cfg["input_shape"], device=device)
    kl = torch.arange(batch, device=device) % 5

    def step(model):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)

        def fn():
            loss = hierarchical_loss(model(x), kl, None, model.spec.variant)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad.clone() for p in model.parameters()]
            opt.step()
            return grads
        return fn

    ours.train()
    base.train()
    # the gradient check runs without TF32 (CUDA convs default to it; 5e-4 noise on an H100, not the scan)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.manual_seed(1)  # dropout: the first step of each side draws the same mask
        g_ours = step(ours)()
        torch.manual_seed(1)
        g_base = step(base)()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    diff = _grad_difference(g_ours, g_base)
    (ours_s, _), (base_s, _) = interleaved_best([step(ours), step(base)], repeats, device_sync(device))
    ratio = base_s / ours_s
    dims = "x".join(str(s) for s in cfg["input_shape"])
    return {"case": f"nnmamba quick train step B={batch} {dims} width {cfg['width']}", "ours_s": round(ours_s, 4),
            "baseline_s": round(base_s, 4), "ratio": round(ratio, 2), "target": f">= {STEP_TARGET:g}x",
            "passed": ratio >= STEP_TARGET and diff < 1e-4,
            "note": f"Dual, forward+loss+backward+AdamW ({where(device)}); first-step max grad difference "
                    f"{diff:.1e} of the largest grad"}


def paper_step(device, chunk: int | None, bf16: bool = False, baseline: bool = False, steps: int = 2,
               shape: tuple[int, int, int] = (160, 256, 256), width: int | None = None) -> dict:
    """Paper-size Dual nnMamba training step (batch 2, AdamW) with a given Mamba chunk; for the GPU sweep."""
    import torch
    from baselines.mamba_scan_reference import ReferenceMamba

    from kneeoa.models.heads import hierarchical_loss
    from kneeoa.models.registry import ModelSpec, build_model

    torch.manual_seed(0)
    options = {"mamba_chunk": chunk} if chunk else {}
    model = build_model(ModelSpec("nnmamba", "dual", input_shape=shape, width=width, options=options)).to(device)
    if baseline:
        layer = model.backbone.mamba_layer_stem
        old = layer.mamba
        layer.mamba = ReferenceMamba(old.d_model, d_state=old.d_state, d_conv=old.d_conv, expand=old.expand,
                                     chunk_size=chunk).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    x = torch.randn(2, 1, *shape, device=device)
    kl = torch.tensor([1, 3], device=device)
    sync = device_sync(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = hierarchical_loss(model(x), kl, None, "dual")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    row = {"chunk": chunk, "bf16": bf16, "scan": "two-level baseline" if baseline else "blocked",
           "step_s": round((time.perf_counter() - t0) / steps, 4)}
    if device.type == "cuda":
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def paper_sweep(device, tiny: bool = False) -> list[dict]:
    """Chunk sizes x precision for the paper-size training step, plus one baseline step (GPU)."""
    import torch

    shape, width = ((16, 32, 32), 4) if tiny else ((160, 256, 256), None)
    rows = []
    configs = [(c, False, False) for c in (65536, 131072, 262144, 524288, 1310720)]
    configs += [(c, True, False) for c in (131072, 524288)] + [(131072, False, True)]
    for chunk, bf16, baseline in configs:
        try:
            rows.append(paper_step(device, chunk // 1024 if tiny else chunk, bf16, baseline,
                                   steps=1 if tiny or baseline else 2, shape=shape, width=width))
        except torch.OutOfMemoryError as err:
            rows.append({"chunk": chunk, "bf16": bf16, "error": f"out of memory: {str(err)[:120]}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run(quick: bool = False) -> list[dict]:
    """Rows {case, ours_s, baseline_s, ratio, target, passed, note}."""
    from kneeoa.engine.devices import resolve_device

    device = resolve_device(os.environ.get("KNEEOA_BENCH_DEVICE", "cpu"), quiet=True)
    if quick:
        return [layer_case(4096, device, repeats=2), nnmamba_step_case(device, repeats=2)]
    return [layer_case(4096, device), layer_case(32768, device, repeats=2), nnmamba_step_case(device)]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: $KNEEOA_BENCH_DEVICE or cpu)")
    parser.add_argument("--paper", action="store_true", help="also sweep the paper-size training step (GPU)")
    parser.add_argument("--tiny", action="store_true", help="with --paper: tiny sizes (a CPU dry run)")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if args.device:
        os.environ["KNEEOA_BENCH_DEVICE"] = args.device
    rows = run(args.quick)
    for row in rows:
        print(json.dumps(row), flush=True)
    result = {"rows": rows}
    if args.paper:
        from kneeoa.engine.devices import resolve_device

        result["paper_sweep"] = paper_sweep(resolve_device(os.environ.get("KNEEOA_BENCH_DEVICE", "cpu"),
                                                           quiet=True), args.tiny)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))

"""One-shot GPU check for a lent H100 (< 6 min): Mamba parity, training throughput, latency, TFLOP/s.

    python benchmarks/gpu_check.py            # on the GPU machine; JSON to $OUT/gpu_check.json (else ./)
    python benchmarks/gpu_check.py --tiny     # CPU dry run with tiny inputs (checks the script itself)

(a) `mamba_ssm` vs our PyTorch Mamba on the same weights and input (fp32, max abs diff; skipped with the
    reason when mamba_ssm is not importable), plus our scan on CUDA vs on CPU; (a2) one Mamba layer's
    forward+backward at the stem length, our blocked scan vs the old two-level loop (bench_mamba).
    Every model below uses the fastest Mamba path there is: mamba_ssm's kernels when importable, else
    the blocked PyTorch scan with its CUDA chunk default.
(b) paper-size training step (Dual, batch 2, AdamW) per backbone: fp32 vs bf16 autocast, and
    channels_last_3d for ResNet3D -> samples/s and peak memory.
(c) inference latency of Dual ResNet3D at 160x256x256, batch 1, fp32 and bf16 (median after warm-up).
(d) achieved TFLOP/s of the ResNet3D training step (FlopCounterMode) vs the chip's peak.
Each section is independent: a failure is recorded and the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))  # bench_mamba and its baseline

from kneeoa.models.heads import hierarchical_loss  # noqa: E402
from kneeoa.models.mamba import Mamba, mamba_ssm_status  # noqa: E402
from kneeoa.models.registry import ModelSpec, build_model  # noqa: E402

PEAK_TFLOPS = {"bf16": 989.0, "fp32": 67.0, "tf32": 495.0}  # H100 SXM dense; cuDNN convs run fp32 as TF32 by default


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def section(results: dict, name: str, fn, deadline: float) -> None:
    if time.monotonic() > deadline:
        results[name] = {"skipped": "time budget spent"}
        print(f"[{name}] skipped: time budget spent", flush=True)
        return
    t = time.monotonic()
    try:
        results[name] = fn()
    except Exception as err:  # record and go on: one failure must not lose the other sections
        results[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    results[name + "_seconds"] = round(time.monotonic() - t, 1)
    print(f"[{name}] {json.dumps(results[name], default=str)[:1500]}", flush=True)


def start(doc: str, budget: float, argv: list[str] | None) -> tuple[argparse.Namespace, float, torch.device, dict]:
    """The command line, deadline, device and result header every GPU check starts with."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU dry run with tiny inputs")
    parser.add_argument("--budget", type=float, default=budget, help="seconds after which sections are skipped")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.budget
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
                     "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": args.tiny}
    return args, deadline, device, results


def write_results(results: dict, name: str) -> None:
    """The results as JSON under $OUT (what comes back from the device machine), else here."""
    out_dir = Path(os.environ.get("OUT") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {path}")


def mamba_parity(device: torch.device, tiny: bool) -> dict:
    torch.manual_seed(0)
    L = 4096 if tiny else 80 * 128 * 128 // 8  # ~164k tokens: long enough to cross many scan chunks
    ours = Mamba(32, d_state=8, d_conv=4, expand=2)
    x = torch.randn(1, L, 32)
    with torch.no_grad():
        ref_cpu = ours(x)
        out: dict = {"tokens": L}
        ours_dev = Mamba(32, d_state=8, d_conv=4, expand=2, backend="torch").to(device)
        ours_dev.load_state_dict(ours.state_dict())
        y = ours_dev(x.to(device)).cpu()
        out["torch_scan_device_vs_cpu_max_abs"] = float((y - ref_cpu).abs().max())
        ok, reason = mamba_ssm_status()
        out["mamba_ssm"] = reason
        if not ok or device.type != "cuda":
            out["mamba_ssm_vs_cpu_max_abs"] = None
            out["skipped"] = reason if not ok else "no CUDA device"
            return out
        from mamba_ssm import Mamba as MambaSSM

        official = MambaSSM(d_model=32, d_state=8, d_conv=4, expand=2).to(device)
        official.load_state_dict(ours.state_dict(), strict=True)  # one checkpoint loads in both
        y_official = official(x.to(device)).cpu()
        auto = ours.to(device)  # our module on CUDA dispatches to mamba_ssm
        y_auto = auto(x.to(device)).cpu()
        out["mamba_ssm_vs_cpu_max_abs"] = float((y_official - ref_cpu).abs().max())
        out["our_module_on_cuda_uses_mamba_ssm"] = bool(auto.uses_mamba_ssm(x.to(device)))
        out["our_module_cuda_vs_official_max_abs"] = float((y_auto - y_official).abs().max())
        out["pass_1e-3"] = out["mamba_ssm_vs_cpu_max_abs"] < 1e-3
        return out


def mamba_layer_timing(device: torch.device, tiny: bool) -> dict:
    """Forward+backward of one nnMamba-sized Mamba layer on the device: our blocked scan vs the old loop."""
    from bench_mamba import layer_case

    L = 4096 if tiny else 80 * 128 * 128 // 8
    row = layer_case(L, device, repeats=2)
    ok, reason = mamba_ssm_status()
    row["mamba_ssm"] = reason  # with it importable, nnMamba in (b) runs mamba_ssm's kernels instead
    return row


def train_steps(spec: ModelSpec, device: torch.device, bf16: bool, channels_last: bool, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(spec).to(device)
    if channels_last:
        model = model.to_channels_last_3d()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    x = torch.randn(2, 1, *spec.input_shape, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    kl = torch.tensor([1, 3], device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = hierarchical_loss(model(x), kl, None, spec.variant)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up (cuDNN autotune, allocations)
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    sec = (time.perf_counter() - t) / steps
    row = {"step_s": round(sec, 4), "samples_per_s": round(2 / sec, 2)}
    if device.type == "cuda":
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def paper_spec(backbone: str, tiny: bool) -> ModelSpec:
    if tiny:
        return ModelSpec(backbone, "dual", input_shape=(16, 16, 16), width={"m3t": 8}.get(backbone, 4))
    return ModelSpec(backbone, "dual")


def throughput(device: torch.device, tiny: bool) -> dict:
    steps = 1 if tiny else 3
    out = {}
    configs = [("resnet3d", False, False), ("resnet3d", True, False), ("resnet3d", False, True),
               ("resnet3d", True, True), ("m3t", False, False), ("m3t", True, False),
               ("nnmamba", False, False), ("nnmamba", True, False)]
    for backbone, bf16, cl in configs:
        name = f"{backbone} {'bf16' if bf16 else 'fp32'}{' channels_last_3d' if cl else ''}"
        try:
            out[name] = train_steps(paper_spec(backbone, tiny), device, bf16, cl, steps)
        except Exception as err:
            out[name] = {"error": f"{type(err).__name__}: {str(err)[:500]}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"  {name:40} {out[name]}", flush=True)
    return out


def latency(device: torch.device, tiny: bool) -> dict:
    model = build_model(paper_spec("resnet3d", tiny)).to(device).eval()
    x = torch.randn(1, 1, *model.spec.input_shape, device=device)
    out = {}
    for bf16 in (False, True):
        times = []
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for i in range(3 + (2 if tiny else 10)):
                sync(device)
                t = time.perf_counter()
                model(x)
                sync(device)
                if i >= 3:  # first calls are warm-up
                    times.append(time.perf_counter() - t)
        out["bf16" if bf16 else "fp32"] = {"median_ms": round(1000 * statistics.median(times), 2),
                                           "min_ms": round(1000 * min(times), 2)}
    return out


def tflops(device: torch.device, tiny: bool, throughput_result: dict) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    spec = paper_spec("resnet3d", tiny)
    model = build_model(spec).to(device)
    x = torch.randn(2, 1, *spec.input_shape, device=device)
    with FlopCounterMode(display=False) as counter:
        loss = hierarchical_loss(model(x), torch.tensor([1, 3], device=device), None, spec.variant)
        loss.backward()
    flops = counter.get_total_flops()
    out = {"flops_per_train_step": flops, "peak_tflops_h100_sxm": PEAK_TFLOPS,
           "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}}
    for key, label in (("resnet3d fp32", "fp32"), ("resnet3d bf16", "bf16"),
                       ("resnet3d bf16 channels_last_3d", "bf16 channels_last_3d")):
        row = throughput_result.get(key, {})
        if "step_s" in row:
            achieved = flops / row["step_s"] / 1e12
            peak = PEAK_TFLOPS["bf16" if "bf16" in label else "fp32"]
            out[label] = {"achieved_tflops": round(achieved, 4), "fraction_of_peak": round(achieved / peak, 4)}
            if "bf16" not in label:
                out[label]["fraction_of_tf32_peak"] = round(achieved / PEAK_TFLOPS["tf32"], 4)
    return out


def main(argv: list[str] | None = None) -> int:
    args, deadline, device, results = start(__doc__, 330.0, argv)
    results["mamba_ssm"] = mamba_ssm_status()[1]
    print(json.dumps(results), flush=True)
    section(results, "a_mamba_parity", lambda: mamba_parity(device, args.tiny), deadline)
    section(results, "a2_mamba_layer", lambda: mamba_layer_timing(device, args.tiny), deadline)
    section(results, "b_train_throughput", lambda: throughput(device, args.tiny), deadline)
    section(results, "c_inference_latency", lambda: latency(device, args.tiny), deadline)
    section(results, "d_tflops", lambda: tflops(device, args.tiny, results.get("b_train_throughput", {})), deadline)
    print("\nsection                      result")
    for key in ("a_mamba_parity", "a2_mamba_layer", "b_train_throughput", "c_inference_latency", "d_tflops"):
        value = results.get(key, {})
        if isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()) and value:
            for sub, row in value.items():
                print(f"{key:28} {sub:38} {json.dumps(row, default=str)[:160]}")
        else:
            print(f"{key:28} {json.dumps(value, default=str)[:200]}")
    write_results(results, "gpu_check.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GPU check of the scoring data path (issue 20), one short run on a lent GPU; results committed as JSON.

    python benchmarks/datapath_gpu_check.py          # on the GPU machine; JSON to $OUT/datapath_gpu_check.json
    python benchmarks/datapath_gpu_check.py --tiny   # CPU dry run of the same steps (checks the script)

(a) equality on the device: `preprocess_tensor` on CUDA from the stored int16 voxels vs the previous CPU
    path (MONAI, benchmarks/baselines/datapath_reference.py) on a 384x384x160 knee-sized volume; the
    saliency's inverse resample on CUDA vs the previous CPU one. Max abs differences.
(b) paper-size Dual ResNet3D (160x256x256) scoring of 200 synthetic 384x384x160 int16 .nii.gz volumes:
    `score_folder` end-to-end (planned workers, auto batch) vs model-only forward on the same inputs
    already on the GPU; target end-to-end / model-only >= 0.8; volumes/s; the previous loop (CPU MONAI
    preprocessing, batch 1, one fsync per row) on 20 of them for comparison. The volumes are 8 distinct
    files written once (in parallel) and hard-linked to 200 names: what is measured is decoding, not disk.
(c) inference per volume: eager fp32 (TF32 convs), bf16 autocast, bf16 + channels_last_3d,
    torch.compile (default mode) and CUDA graphs (mode reduce-overhead); goal <= 5 ms.
(d) training step (batch 2, AdamW): fp32 with TF32 allowed vs bf16 autocast (+ channels_last_3d,
    + torch.compile); goal bf16 >= 2x TF32.
Each section is independent and time-boxed (`--budget`): a failure is recorded and the rest still runs.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
sys.path.insert(1, str(HERE))

from gpu_check import paper_spec, section, start, sync, train_steps, write_results  # noqa: E402


def _write_one(args: tuple[str, int, tuple]) -> str:
    import gzip

    import nibabel as nib
    import numpy as np
    from bench_datapath import knee_like

    path, seed, shape = args
    img = nib.Nifti1Image(knee_like(shape, seed=seed), np.diag([0.36, 0.36, 0.7, 1.0]))
    Path(path).write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))
    return path


def make_cohort(folder: Path, n: int, distinct: int, shape: tuple) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = [str(folder / f"src_{k}.nii.gz") for k in range(distinct)]
    with ProcessPoolExecutor(max_workers=min(distinct, os.cpu_count() or 1)) as pool:
        list(pool.map(_write_one, [(p, k, shape) for k, p in enumerate(sources)]))
    cohort = folder / "cohort"
    cohort.mkdir()
    files = []
    for k in range(n):
        dst = cohort / f"knee_{k:04d}.nii.gz"
        os.link(sources[k % distinct], dst)
        files.append(dst)
    return files


def equality(device: torch.device, tiny: bool, tmp: Path) -> dict:
    from baselines.datapath_reference import map_back_reference, preprocess_reference, read_reference
    from bench_datapath import knee_like

    from kneeoa.data.resample import map_to_original_grid, preprocess_tensor
    from kneeoa.data.volume import read_volume

    shape = (48, 40, 24) if tiny else (384, 384, 160)
    model_in = (16, 24, 24) if tiny else (160, 256, 256)
    affine = torch.tensor([[0.0, -0.36, 0, 60], [0.36, 0, 0, -40], [0, 0, -0.7, 20], [0, 0, 0, 1]]).numpy()
    import nibabel as nib

    path = tmp / "eq.nii.gz"
    nib.save(nib.Nifti1Image(knee_like(shape), affine), str(path))
    ref = preprocess_reference(*read_reference(path), model_in)
    vol = read_volume(path, stored_dtype=True)
    t0 = time.perf_counter()
    raw = torch.from_numpy(vol.array).to(device)
    ours = preprocess_tensor(raw, vol.affine, model_in)
    sync(device)
    dt = time.perf_counter() - t0
    smap = torch.rand(model_in, generator=torch.Generator().manual_seed(0))
    back_ref = map_back_reference(smap.numpy(), vol.affine, shape)
    back = map_to_original_grid(smap.to(device), vol.affine, shape).cpu().numpy()
    return {"preprocess_max_abs_diff": float((ours.cpu() - ref).abs().max()),
            "inverse_resample_max_abs_diff": float(abs(back - back_ref).max()),
            "device_preprocess_s_incl_copy": round(dt, 4), "stored_dtype": str(vol.array.dtype)}


def scoring(device: torch.device, tiny: bool, tmp: Path) -> dict:
    from baselines.datapath_reference import score_reference

    from kneeoa.data.preprocess import preprocess_volume
    from kneeoa.data.volume import read_volume
    from kneeoa.engine.feed import cores_for_loading
    from kneeoa.engine.inference import load_model
    from kneeoa.engine.score import score_folder
    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import build_model

    n, distinct = (12, 2) if tiny else (200, 8)
    shape = (48, 40, 24) if tiny else (384, 384, 160)
    spec = paper_spec("resnet3d", tiny)
    t0 = time.perf_counter()
    files = make_cohort(tmp / "vols", n, distinct, shape)
    gen_s = time.perf_counter() - t0
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp / "paper_resnet3d.safetensors", build_model(spec).eval())
    folder = files[0].parent
    os.environ["KNEEOA_PROGRESS"] = "none"
    score_folder(folder, ckpt, tmp / "warm.csv", device=str(device.type), overwrite=True)  # warm-up (cuDNN)
    t0 = time.perf_counter()
    result = score_folder(folder, ckpt, tmp / "scores.csv", device=str(device.type), overwrite=True)
    e2e = time.perf_counter() - t0
    t0 = time.perf_counter()
    score_folder(folder, ckpt, tmp / "scores.csv", device=str(device.type), resume=True)
    fixed = time.perf_counter() - t0
    model, _ = load_model(ckpt, device)
    batch = max(1, int(result["batch_size"]))
    x = torch.cat([preprocess_volume(read_volume(files[k % distinct]), spec.input_shape, device=device)[None]
                   for k in range(batch)])
    with torch.no_grad():
        model(x)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(max(1, n // batch)):
            model(x)
        sync(device)
    model_only = (time.perf_counter() - t0) / (max(1, n // batch) * batch)
    steady = max(e2e - fixed, 1e-9) / n
    before_n = min(n, 20)
    t0 = time.perf_counter()
    score_reference(files[:before_n], _ToDevice(model, device), spec.input_shape, tmp / "before.csv")
    before = (time.perf_counter() - t0) / before_n
    return {"volumes": n, "cores": cores_for_loading(), "workers": result["workers"], "batch_size": batch,
            "errors": result["errors"], "end_to_end_s_per_volume": round(steady, 5),
            "model_only_s_per_volume": round(model_only, 5), "ratio": round(model_only / steady, 3),
            "target": ">= 0.8", "passed": model_only / steady >= 0.8 and result["errors"] == 0,
            "volumes_per_s": round(1 / steady, 1), "model_only_volumes_per_s": round(1 / model_only, 1),
            "previous_loop_s_per_volume": round(before, 4), "previous_loop_volumes_per_s": round(1 / before, 1),
            "fixed_s_per_call": round(fixed, 2), "cohort_written_s": round(gen_s, 1)}


class _ToDevice(torch.nn.Module):
    """The previous loop made CPU tensors: move them to the model's device (as its `.to(dev)` did)."""

    def __init__(self, model: torch.nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device = model, device

    def forward(self, x: torch.Tensor):
        return self.model(x.to(self.device))


def inference(device: torch.device, tiny: bool) -> dict:
    from kneeoa.models.registry import build_model

    spec = paper_spec("resnet3d", tiny)
    torch.manual_seed(0)
    model = build_model(spec).to(device).eval()
    x = torch.randn(1, 1, *spec.input_shape, device=device)
    out: dict = {}

    def timed(name: str, fn, inp: torch.Tensor, reps: int = 20) -> None:
        try:
            with torch.no_grad():
                for _ in range(3):  # warm-up / compilation
                    fn(inp)
                sync(device)
                times = []
                for _ in range(2 if tiny else reps):
                    t0 = time.perf_counter()
                    fn(inp)
                    sync(device)
                    times.append(time.perf_counter() - t0)
            out[name] = {"median_ms": round(1000 * statistics.median(times), 2), "min_ms": round(1000 * min(times), 2)}
        except Exception as err:  # compile may be unavailable: record it
            out[name] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
        print(f"  [inference] {name}: {out[name]}", flush=True)

    def bf16(m):
        def run(inp):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return m(inp)
        return run

    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    timed("eager fp32 (tf32)", model, x)
    timed("eager bf16", bf16(model), x)
    cl_model = build_model(spec).to(device).eval().to(memory_format=torch.channels_last_3d)
    cl_model.load_state_dict(model.state_dict())
    timed("eager bf16 channels_last_3d", bf16(cl_model), x.contiguous(memory_format=torch.channels_last_3d))
    if not tiny:
        timed("compile bf16 channels_last_3d", bf16(torch.compile(cl_model)),
              x.contiguous(memory_format=torch.channels_last_3d))
        timed("compile+cudagraphs bf16 channels_last_3d", bf16(torch.compile(cl_model, mode="reduce-overhead")),
              x.contiguous(memory_format=torch.channels_last_3d))
    ok = [v["median_ms"] for v in out.values() if "median_ms" in v]
    out["best_ms"] = min(ok) if ok else None
    out["goal"] = "<= 5 ms per volume"
    out["passed"] = bool(ok) and min(ok) <= 5.0
    return out


def training(device: torch.device, tiny: bool) -> dict:
    spec = paper_spec("resnet3d", tiny)
    steps = 1 if tiny else 5
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    out = {"tf32": train_steps(spec, device, bf16=False, channels_last=False, steps=steps),
           "bf16": train_steps(spec, device, bf16=True, channels_last=False, steps=steps),
           "bf16 channels_last_3d": train_steps(spec, device, bf16=True, channels_last=True, steps=steps)}
    base = out["tf32"]["step_s"]
    best = min(v["step_s"] for v in out.values())
    out["bf16_speedup_vs_tf32"] = round(base / best, 2)
    out["goal"] = ">= 2x"
    out["passed"] = base / best >= 2.0
    return out


def main(argv: list[str] | None = None) -> int:
    args, deadline, device, results = start(__doc__, 420.0, argv)
    from kneeoa.data.decompress import available_backends

    results.update(gzip_backends=available_backends(), cpu_count=os.cpu_count())
    print(json.dumps(results), flush=True)
    with tempfile.TemporaryDirectory(prefix="datapath_gpu_") as tmp_name:
        tmp = Path(tmp_name)
        section(results, "a_equality", lambda: equality(device, args.tiny, tmp), deadline)
        section(results, "b_scoring", lambda: scoring(device, args.tiny, tmp), deadline)
        section(results, "c_inference", lambda: inference(device, args.tiny), deadline)
        section(results, "d_training", lambda: training(device, args.tiny), deadline)
    write_results(results, "datapath_gpu_check.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

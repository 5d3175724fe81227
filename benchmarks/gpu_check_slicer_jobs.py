"""GPU check of the Slicer module's background grading job (< 3 min on one H100).

    python benchmarks/gpu_check_slicer_jobs.py          # on the GPU machine; JSON to $OUT (else ./)
    python benchmarks/gpu_check_slicer_jobs.py --tiny   # CPU dry run with a tiny model

What the KneeOAGrading module does, without Slicer: `kneeoa.slicer.jobs.Job` runs
`python -m kneeoa --progress json grade ...` in a child process; here with device 'auto'.
(a) GPU detection without torch (`deps.nvidia_gpu_present`, `deps.device_note`).
(b) a full grade job (paper-size dual ResNet3D 160x256x256, SmoothGrad 8 samples, cartilage overlap):
    it must land on CUDA; wall time of the whole job (process start, imports, model, saliency) and of
    each stage as the progress lines report them.
(c) Cancel while the saliency runs on the GPU: the whole process tree must be gone and no process of
    it may still hold GPU memory (nvidia-smi compute apps) a few seconds later.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from kneeoa.slicer import deps, jobs  # noqa: E402


def gpu_processes() -> list[int]:
    """PIDs that hold a CUDA context (nvidia-smi), or [] where nvidia-smi is missing."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(line) for line in out.split() if line.strip().isdigit()]


def make_inputs(folder: Path, tiny: bool) -> tuple[Path, Path, Path]:
    """A knee-sized image + OAI-ZIB-CM label map, and a dual ResNet3D checkpoint (paper shape unless tiny)."""
    import numpy as np
    import torch

    from kneeoa.data.volume import write_nifti
    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import ModelSpec, build_model

    shape = (48, 48, 32) if tiny else (384, 384, 160)  # OAI-ZIB-CM: about 384 x 384 x 160, sagittal DESS
    rng = np.random.default_rng(0)
    labels = np.zeros(shape, np.uint8)
    i, j, k = (s // 2 for s in shape)
    labels[i - 10:i + 10, j - 12:j - 4, k - 8:k + 8] = 2
    labels[i - 10:i, j + 4:j + 8, k - 8:k + 8] = 4
    labels[i:i + 10, j + 4:j + 8, k - 8:k + 8] = 5
    image = rng.normal(size=shape).astype(np.float32) + 3 * labels
    affine = np.diag([0.36, 0.36, 0.7, 1.0])
    spec = ModelSpec(backbone="resnet3d", variant="dual", input_shape=(16, 16, 16) if tiny else None,
                     width=4 if tiny else None)
    torch.manual_seed(0)
    ckpt = save_checkpoint(folder / "model.safetensors", build_model(spec), {"training_data": "untrained (GPU check)"})
    return write_nifti(folder / "image.nii.gz", image, affine), write_nifti(folder / "mask.nii.gz", labels, affine,
                                                                              is_label=True), ckpt


def full_job(folder: Path, image: Path, mask: Path, ckpt: Path) -> dict:
    argv = jobs.grade_command(image, ckpt, folder / "result.json", mask=mask, saliency_out=folder / "sal.nii.gz",
                              device="auto", python=sys.executable)
    stages, t0 = [], time.perf_counter()

    def note(event: dict) -> None:
        if event["event"] == "progress":
            stages.append((event.get("stage"), round(time.perf_counter() - t0, 2)))

    job = jobs.Job(argv, env=jobs.job_environment()).start()
    status = job.wait(note, timeout_s=600)
    wall = time.perf_counter() - t0
    result = json.loads((folder / "result.json").read_text()) if status == 0 else {}
    return {"status": status, "error": job.error_message() if status else None, "wall_s": round(wall, 2),
            "stages_at_s": stages, "device": result.get("device"), "kl_probs": result.get("kl_probs"),
            "mass_roi": (result.get("overlap") or {}).get("mass_roi")}


def cancel_during_saliency(folder: Path, image: Path, mask: Path, ckpt: Path) -> dict:
    argv = jobs.grade_command(image, ckpt, folder / "result2.json", mask=mask, saliency_out=folder / "sal2.nii.gz",
                              device="auto", python=sys.executable)
    job = jobs.Job(argv, env=jobs.job_environment()).start()
    t0, seen = time.perf_counter(), None
    while job.running and seen is None and time.perf_counter() - t0 < 300:
        for event in job.poll():
            if event["event"] == "progress" and str(event.get("stage", "")).startswith("saliency"):
                seen = round(time.perf_counter() - t0, 2)
        time.sleep(0.02)
    tree = [job.process.pid, *jobs.descendants(job.process.pid)]
    on_gpu_before = sorted(set(gpu_processes()) & set(tree))
    finished_first = not job.running
    t1 = time.perf_counter()
    job.cancel(grace_s=2.0)
    cancel_s = time.perf_counter() - t1
    time.sleep(3.0)
    return {"saliency_stage_at_s": seen, "finished_before_cancel": finished_first, "tree": tree,
            "tree_on_gpu_before_cancel": on_gpu_before, "cancel_s": round(cancel_s, 2),
            "alive_after": [p for p in tree if jobs._alive(p)],
            "tree_on_gpu_after": sorted(set(gpu_processes()) & set(tree)),
            "result_written": (folder / "result2.json").exists()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU dry run with a tiny model and volume")
    args = parser.parse_args()
    report: dict = {"python": sys.version.split()[0], "gpu_present": deps.nvidia_gpu_present(),
                    "device_note_auto": deps.device_note("auto")}
    try:
        import torch

        report["torch"] = torch.__version__
        report["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as err:  # report and go on: the jobs run in their own processes
        report["torch_error"] = repr(err)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        image, mask, ckpt = make_inputs(folder, args.tiny)
        for name, check in (("full_job", full_job), ("cancel", cancel_during_saliency)):
            try:
                report[name] = check(folder, image, mask, ckpt)
            except Exception as err:
                report[name] = {"error": repr(err)}
            print(name, json.dumps(report[name]), flush=True)
    out = Path(os.environ.get("OUT", ".")) / "slicer_gpu_check.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

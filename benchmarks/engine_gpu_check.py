"""The engine's CUDA paths on a lent GPU (one short run): what CPU CI cannot exercise.

    python benchmarks/engine_gpu_check.py            # on the GPU machine; JSON to $OUT (or ./)
    python benchmarks/engine_gpu_check.py --tiny     # CPU dry run of the same steps

Steps (each in try/except so one failure does not hide the others): a small phantom; `train` with
device auto + bf16 autocast + channels_last_3d + loader workers with pinned memory; fp16 + GradScaler;
M3T and nnMamba with bf16; resume extending a finished run (CUDA RNG state restored); 2 epochs in one run
vs 1 + resume 1 (max weight difference on CUDA, where kernels need not be deterministic); predict with
embeddings; score_folder with workers and saliency; score_volume with a mask; an out-of-memory run that
must end in a JobError naming the remedy.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    os.environ.setdefault("KNEEOA_PROGRESS", "none")
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    from kneeoa.data.cohort import load_cohort
    from kneeoa.data.phantom import generate_cohort
    from kneeoa.engine.predict import predict
    from kneeoa.engine.score import score_folder, score_volume
    from kneeoa.engine.train import train
    from kneeoa.errors import JobError

    tiny = "--tiny" in argv
    report: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    tmp = Path(tempfile.mkdtemp(prefix="engine_gpu_"))
    cohort = tmp / "cohort"
    base = {"input_shape": [24, 24, 24] if tiny else [32, 32, 32], "width": 4 if tiny else 16, "device": "auto"}

    def step(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            report[name] = {"ok": True, **(fn() or {})}
        except Exception as err:  # keep going: the report says what failed
            report[name] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                            "trace": traceback.format_exc()[-1500:]}
        report[name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"[{name}] {json.dumps(report[name])[:400]}", flush=True)

    step("phantom", lambda: {"summary": {k: v for k, v in generate_cohort(
        cohort, 12 if tiny else 24, 6 if tiny else 8, shape=(32, 32, 32), seed=0).items() if k == "kl_counts"}})

    def _train(out: str, backbone: str, variant: str, **over) -> dict:
        result = train(cohort, backbone, variant, tmp / out, overrides={**base, **over})
        log = (tmp / out / "train.log").read_text()
        return {"epochs": [{k: r[k] for k in ("epoch", "loss", "time_s", "loader_wait_s", "compute_s")}
                           for r in result["history"]],
                "test": result["metrics"].get("test"), "log_device": log.split("device ")[1].split(",")[0]}

    step("train_bf16_channels_last_workers", lambda: _train("r1", "resnet3d", "dual", epochs=2, amp="bf16",
                                                            channels_last=True, workers=2))
    step("train_fp16_gradscaler", lambda: _train("r2", "resnet3d", "single-oa", epochs=1, amp="fp16"))
    step("train_m3t_bf16", lambda: _train("r3", "m3t", "dual", epochs=1, amp="bf16", width=8,
                                          input_shape=[24, 24, 24]))
    step("train_nnmamba_bf16", lambda: _train("r4", "nnmamba", "single-kl", epochs=1, amp="bf16", width=8))

    def resume_extend() -> dict:
        result = train(None, None, None, tmp / "r1", resume=True, overrides={"epochs": 3})
        return {"epochs_in_log": [r["epoch"] for r in result["history"]]}

    step("resume_extends_a_finished_run", resume_extend)

    def resume_equivalence() -> dict:
        from safetensors.torch import load_file

        train(cohort, "resnet3d", "dual", tmp / "full", overrides={**base, "epochs": 2})
        train(cohort, "resnet3d", "dual", tmp / "part", overrides={**base, "epochs": 1})
        train(None, None, None, tmp / "part", resume=True, overrides={"epochs": 2})
        a = load_file(str(tmp / "full" / "checkpoints" / "last.safetensors"))
        b = load_file(str(tmp / "part" / "checkpoints" / "last.safetensors"))
        diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
        return {"max_abs_weight_diff": diff, "identical": diff == 0.0}

    step("resume_vs_uninterrupted", resume_equivalence)
    ckpt = tmp / "r1" / "checkpoints" / "last.safetensors"
    step("predict_embeddings", lambda: {"metrics": predict(ckpt, cohort, tmp / "pred", embeddings=True)["metrics"]})

    def score() -> dict:
        result = score_folder(cohort / "imagesTs", ckpt, tmp / "scores.csv", saliency_dir=tmp / "sal", workers=2,
                              batch_size=2)
        return {k: result[k] for k in ("scored", "errors", "skipped")}

    step("score_workers_saliency", score)

    def grade() -> dict:
        case = load_cohort(cohort).split("test")[0]
        result = score_volume(case.image, ckpt, mask_path=case.mask, saliency_path=tmp / "one_sal.nii.gz")
        return {"device": result["device"], "oa_prob": result["oa_prob"], "mass_roi": result["overlap"]["mass_roi"]}

    step("grade_with_mask", grade)

    def oom() -> dict:
        if not torch.cuda.is_available():
            return {"skipped": "no CUDA"}
        try:
            train(cohort, "resnet3d", "dual", tmp / "oom",
                  overrides={"device": "auto", "input_shape": [160, 256, 256], "width": None, "batch_size": 24,
                             "epochs": 1, "evaluate": False})
        except JobError as err:
            return {"job_error": str(err)}
        return {"job_error": None, "note": "batch 24 at paper size fitted"}

    step("out_of_memory_message", oom)
    out = Path(os.environ.get("OUT", ".")) / "engine_gpu_check.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""GPU memory before a paper-size grade: the estimate, the saliency batch fitted to free memory, the CPU offer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kneeoa.engine import memory
from kneeoa.errors import JobError
from kneeoa.slicer import grading, results

PAPER_RESNET = {"spec": {"backbone": "resnet3d", "variant": "dual", "input_shape": [160, 256, 256], "width": None}}


def test_estimate_scales_with_voxels_width_and_batch():
    one = memory.saliency_bytes(PAPER_RESNET, 1)
    assert one / memory.GiB == pytest.approx(160 * 256 * 256 * 172 * 1.25 / 2**30)  # ~2.1 GiB a sample
    assert memory.saliency_bytes(PAPER_RESNET, 8) == pytest.approx(8 * one)
    narrow = {"spec": {**PAPER_RESNET["spec"], "width": 16, "input_shape": [80, 128, 128]}}
    assert memory.saliency_bytes(narrow, 1) == pytest.approx(one / 4 / 8)


def test_the_batch_shrinks_to_what_fits():
    one = memory.saliency_bytes(PAPER_RESNET, 1)
    assert memory.fit_saliency_batch(PAPER_RESNET, 8, 100 * memory.GiB) == 8  # an 80 GB card: all at once
    assert memory.fit_saliency_batch(PAPER_RESNET, 8, 3.5 * one) == 3
    assert memory.fit_saliency_batch(PAPER_RESNET, 8, one) == 1


def test_too_little_memory_is_a_clear_error_the_module_turns_into_a_cpu_offer():
    with pytest.raises(JobError) as err:
        memory.fit_saliency_batch(PAPER_RESNET, 8, 0.5 * memory.GiB, "cuda:0")
    assert "2.1 GiB needed, 0.5 GiB free" in str(err.value) and "'cpu'" in str(err.value)
    assert grading.needs_cpu(err.value) and not grading.needs_cpu("checkpoint not found")
    options = grading.GradingOptions(Path(__file__), device="cuda")
    assert grading.on_cpu(options).device == "cpu" and grading.on_cpu(options).checkpoint == options.checkpoint


def test_on_the_cpu_no_batch_is_imposed():
    import torch

    assert memory.saliency_batch_for(torch.device("cpu"), PAPER_RESNET) is None


def test_the_result_says_which_device_ran(phantom_cohort, tmp_path):
    import torch

    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import ModelSpec, build_model

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.safetensors",
                           build_model(ModelSpec(backbone="resnet3d", input_shape=(16, 16, 16), width=4)), {})
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "kneeoa", "grade", str(phantom_cohort / "imagesTs" /
                                                                        "oaizib_013_0000.nii.gz"),
                           "--checkpoint", str(ckpt), "--saliency-out", str(tmp_path / "s.nii.gz"),
                           "--device", "cpu", "--result-json", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["saliency_batch"] is None
    assert ("Ran on", "cpu") in results.result_rows(result)

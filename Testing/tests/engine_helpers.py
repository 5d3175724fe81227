"""Small builders for the engine tests (not fixtures: plain functions, imported by test_engine_*.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TINY_SHAPE = (24, 24, 24)
# what every engine training test uses on top of the quick preset: one tiny model in seconds
TINY = {"epochs": 1, "input_shape": list(TINY_SHAPE), "width": 4, "batch_size": 4, "device": "cpu"}


def tiny_checkpoint(path: Path, variant: str = "dual", backbone: str = "resnet3d", seed: int = 0) -> Path:
    """An untrained tiny model saved as a real checkpoint (enough to test prediction plumbing)."""
    import torch

    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import ModelSpec, build_model

    torch.manual_seed(seed)
    model = build_model(ModelSpec(backbone, variant, input_shape=TINY_SHAPE, width=4)).eval()
    return save_checkpoint(path, model, {"training_data": "untrained test model"})


def volume_folder(folder: Path, n: int, shape: tuple[int, int, int] = (20, 22, 18), seed: int = 0,
                  prefix: str = "knee") -> list[Path]:
    """`n` small random NIfTI volumes `<prefix>_<k>.nii.gz` with a non-trivial affine."""
    from kneeoa.data.volume import write_nifti

    rng = np.random.default_rng(seed)
    affine = np.diag([0.7, 0.5, 0.6, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 2.5]
    folder.mkdir(parents=True, exist_ok=True)
    return [write_nifti(folder / f"{prefix}_{k}.nii.gz", rng.normal(100, 20, shape).astype(np.float32), affine)
            for k in range(n)]


def kneeoa_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kneeoa", *args]


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m kneeoa ARGS` in a subprocess (single-threaded torch, like CI)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(kneeoa_cmd(*args), capture_output=True, text=True, timeout=timeout, env=full_env)


def state_dict_of(checkpoint: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(checkpoint))


def run_main(monkeypatch, *args: str) -> int:
    """`kneeoa ARGS` in this process (no torch start-up cost); `--progress` cannot leak into other tests."""
    from kneeoa.cli import main

    monkeypatch.setenv("KNEEOA_PROGRESS", os.environ.get("KNEEOA_PROGRESS", "none"))
    return main(list(args))

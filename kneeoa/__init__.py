"""KneeOA: hierarchical supervision (OA + KL grade) for knee osteoarthritis from 3D MRI.

`import kneeoa` needs only the standard library: the public API below is resolved lazily, so
3D Slicer can load the modules (and offer to install torch) before the heavy packages exist.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"; imported on first use
_LAZY = {
    "KneeOAError": "kneeoa.errors:KneeOAError",
    "read_volume": "kneeoa.data.volume:read_volume",
    "write_nifti": "kneeoa.data.volume:write_nifti",
    "load_cohort": "kneeoa.data.cohort:load_cohort",
    "generate_phantom_cohort": "kneeoa.data.phantom:generate_cohort",
    "ModelSpec": "kneeoa.models.registry:ModelSpec",
    "build_model": "kneeoa.models.registry:build_model",
    "save_checkpoint": "kneeoa.models.checkpoint:save_checkpoint",
    "load_checkpoint": "kneeoa.models.checkpoint:load_checkpoint",
    "train": "kneeoa.engine.train:train",
    "predict": "kneeoa.engine.predict:predict",
    "score_folder": "kneeoa.engine.score:score_folder",
    "score_volume": "kneeoa.engine.score:score_volume",
    "train_segmenter": "kneeoa.segmentation.train:train_segmenter",
    "load_segmenter": "kneeoa.segmentation.checkpoint:load_segmenter",
    "segment_volume": "kneeoa.segmentation.infer:segment_volume",
    "segment_file": "kneeoa.segmentation.folder:segment_file",
    "segment_folder": "kneeoa.segmentation.folder:segment_folder",
    "compartment_thickness": "kneeoa.segmentation.thickness:compartment_thickness",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'kneeoa' has no attribute {name!r}")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

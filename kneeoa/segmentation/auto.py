"""A cartilage mask for every case: the reference mask when there is one, else an automatic one.

`MaskSource` is what `grade`, `saliency` and the study use where they need a mask: it loads the
segmenter once, segments a case only when it has no mask, and says where each mask came from
(`MASK_SOURCES`: "reference" or "automatic") so every overlap number can be labelled with its source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.segmentation import MASK_SOURCES
from kneeoa.segmentation.data import read_reference_mask

REFERENCE, AUTOMATIC = MASK_SOURCES


class MaskSource:
    """`mask_for(image, mask_path)` -> (label array or None, 'reference' | 'automatic' | None)."""

    def __init__(self, segmenter: str | Path | None = None, device: Any = "cpu", out_dir: str | Path | None = None):
        self.segmenter = Path(segmenter) if segmenter else None
        self.device = device
        self.out_dir = Path(out_dir) if out_dir else None
        self._model: tuple[Any, dict] | None = None

    def _loaded(self) -> tuple[Any, dict]:
        if self._model is None:
            from kneeoa.segmentation.checkpoint import load_segmenter

            self._model = load_segmenter(self.segmenter, self.device)
        return self._model

    def check(self) -> None:
        """Load the segmenter now, so a bad file fails before any work (CheckpointError)."""
        if self.segmenter is not None:
            self._loaded()

    def mask_for(self, image: Any, mask_path: str | Path | None, case_id: str | None = None,
                 knee_side: str | None = None) -> tuple[np.ndarray | None, str | None]:
        if mask_path is not None:
            return read_reference_mask(mask_path, image), REFERENCE
        if self.segmenter is None:
            return None, None
        from kneeoa.segmentation.infer import segment_volume

        model, card = self._loaded()
        labels = segment_volume(model, card, image, self.device, knee_side=knee_side)
        if self.out_dir is not None and case_id:
            from kneeoa.data.volume import write_nifti

            write_nifti(self.out_dir / f"{case_id}_seg.nii.gz", labels, image.affine, is_label=True)
        return labels, AUTOMATIC

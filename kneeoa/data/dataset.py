"""`CohortDataset`: cohort cases -> preprocessed model-space tensors for a DataLoader (picklable for workers).

Its own module (not `kneeoa.data.preprocess`): it joins preprocessing and the on-disk tensor cache, and the
cache itself preprocesses, so living in either would make the two import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from kneeoa.data.cache import PreprocessCache
from kneeoa.data.case import Case
from kneeoa.data.preprocess import check_input_shape, preprocess_volume
from kneeoa.data.volume import read_volume


class CohortDataset(torch.utils.data.Dataset):
    """Cases -> dicts {image (1,D,H,W) float32, kl, oa (-1 unknown), case_id, index}; picklable for workers.

    With `cache_dir` each preprocessed tensor is stored once on disk (`PreprocessCache`), so no epoch
    after the first decodes a NIfTI again, in any process; `memory=True` also keeps them in RAM.
    """

    def __init__(self, cases: Sequence[Case], input_shape: Sequence[int], cache_dir: str | Path | None = None,
                 memory: bool = True, spacing_mm: Sequence[float] | None = None, reorient: str = "ras"):
        self.cases = list(cases)
        self.reorient = reorient
        self.input_shape = check_input_shape(input_shape)
        self.spacing_mm = None if spacing_mm is None else tuple(float(s) for s in spacing_mm)
        self.cache = None if cache_dir is None else PreprocessCache(cache_dir, self.input_shape, self.spacing_mm,
                                                                    reorient=reorient)
        self.memory = memory
        self._ram: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def load_image(self, index: int) -> torch.Tensor:
        """Preprocessed image of case `index`: RAM, then disk cache, then decode + preprocess."""
        if index in self._ram:
            return self._ram[index]
        path = self.cases[index].image
        if self.cache is not None:
            image = self.cache.load(path)
        else:
            image = preprocess_volume(read_volume(path), self.input_shape, self.spacing_mm, reorient=self.reorient)
        if self.memory:
            self._ram[index] = image
        return image

    def __getitem__(self, index: int) -> dict:
        case = self.cases[index]
        return {
            "image": self.load_image(index),
            "kl": -1 if case.kl is None else int(case.kl),
            "oa": -1 if case.kl is None else int(case.oa),
            "case_id": case.case_id,
            "index": index,
        }

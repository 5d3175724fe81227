"""Baseline for the engine benchmark: the training data path as the paper's scripts run it.

Every epoch, every case: `nibabel.load(...).get_fdata()`, z-score with a std floor of 1e-6, permute
[H,W,D] -> [D,H,W], `F.interpolate(..., mode="trilinear", align_corners=False)` to the input shape —
no cache. The training step itself (model, loss, AdamW) is the same as ours, so the ratio measures the
data path only. Independent of `kneeoa.data` on purpose.
"""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class DecodeEveryEpochDataset(Dataset):
    """(image path, KL) pairs -> {'image' (1,D,H,W), 'kl', 'oa'}, decoded and resized on every access."""

    def __init__(self, items: list[tuple[Path, int]], input_shape: tuple[int, int, int]):
        self.items = list(items)
        self.input_shape = tuple(input_shape)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        path, kl = self.items[index]
        array = np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float32)
        x = torch.from_numpy(array)
        x = (x - x.mean()) / torch.clamp(x.std(unbiased=False), min=1e-6)
        x = x.permute(2, 0, 1)[None, None]  # [H,W,D] -> [1,1,D,H,W]
        x = F.interpolate(x, size=self.input_shape, mode="trilinear", align_corners=False)[0]
        return {"image": x, "kl": int(kl), "oa": int(kl >= 2)}


def train_one_epoch(model: torch.nn.Module, dataset: Dataset, variant: str, batch_size: int = 4, lr: float = 1e-3,
                    seed: int = 0) -> dict:
    """One epoch of the plain training loop over `dataset`; returns {'time_s', 'loader_wait_s', 'compute_s'}.

    The benchmark runs it over `DecodeEveryEpochDataset` (the baseline) and over our cached `CohortDataset`,
    alternating, so both see the same machine load.
    """
    from kneeoa.models.heads import hierarchical_loss

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    wait = compute = 0.0
    t0 = t_prev = time.perf_counter()
    for batch in loader:
        t_got = time.perf_counter()
        wait += t_got - t_prev
        out = model(batch["image"])
        loss = hierarchical_loss(out, batch["kl"], batch["oa"], variant)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss)
        t_prev = time.perf_counter()
        compute += t_prev - t_got
    return {"time_s": time.perf_counter() - t0, "loader_wait_s": wait, "compute_s": compute}

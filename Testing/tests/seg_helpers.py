"""A tiny real segmenter for tests: 2 epochs of a width-4 SegResNet on 16^3 patches of a 24^3 phantom (~5 s)."""

from __future__ import annotations

from pathlib import Path


def train_tiny_segmenter(cohort: Path, out: Path, epochs: int = 2) -> Path:
    from kneeoa.segmentation.train import train_segmenter

    overrides = {"epochs": epochs, "patch": [16, 16, 16], "width": 4, "device": "cpu"}
    return Path(train_segmenter(cohort, out, "quick", overrides)["checkpoint"])

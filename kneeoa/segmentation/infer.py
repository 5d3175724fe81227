"""Inference: MONAI sliding windows with Gaussian blending, then back onto the image's own grid.

Memory stays bounded for large scans: windows run on the model's device, the blended logits are kept on
the CPU, and the probabilities are brought back to the original grid one class at a time before the argmax.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def predict_probabilities(model: Any, x: Any, card: dict, device: Any, sw_batch_size: int = 2,
                          amp: str = "none") -> Any:
    """(1, i, j, k) preprocessed tensor -> (6, i, j, k) softmax probabilities on the CPU."""
    import torch
    from monai.inferers import sliding_window_inference

    from kneeoa.engine.devices import autocast

    with torch.no_grad(), autocast(device, amp):
        logits = sliding_window_inference(
            x[None].to(device), roi_size=tuple(card["patch"]), sw_batch_size=int(sw_batch_size),
            predictor=model, overlap=float(card["sliding_window"]["overlap"]), mode="gaussian",
            sw_device=device, device=torch.device("cpu"))
    return torch.softmax(logits[0].float(), dim=0)


def labels_on_grid(probs: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """Argmax of probabilities resampled to `shape`, one class at a time (peak memory ~2 maps of `shape`)."""
    import torch

    from kneeoa.segmentation.data import resample

    if tuple(probs.shape[1:]) == tuple(shape):
        return probs.argmax(0).to(torch.uint8).numpy()
    best = torch.full(tuple(shape), -1.0)
    label = torch.zeros(tuple(shape), dtype=torch.uint8)
    for c in range(probs.shape[0]):
        p = resample(probs[c:c + 1], shape)[0]
        better = p > best
        best = torch.where(better, p, best)
        label[better] = c
        del p, better
    return label.numpy()


def segment_volume(model: Any, card: dict, volume: Any, device: Any = "cpu", sw_batch_size: int | None = None,
                   amp: str = "none", knee_side: str | None = None) -> np.ndarray:
    """uint8 label map (0-5) of `volume` on its own (i, j, k) grid. With `knee_side` ('left'/'right') the
    medial/lateral tibial plates are assigned by anatomy (`postprocess.plates_by_knee_side`). Windows per
    forward pass: `sw_batch_size`, else 1 on the CPU (least memory; a CPU gains nothing from batching) and the
    card's value on an accelerator."""
    import torch

    from kneeoa.segmentation.data import prepare_image

    device = torch.device(device) if isinstance(device, str) else device
    if sw_batch_size is None:
        sw_batch_size = 1 if device.type == "cpu" else int(card["sliding_window"].get("batch_size", 2))
    x = prepare_image(volume, card["preprocessing"]["spacing_mm"])
    probs = predict_probabilities(model, x, card, device, sw_batch_size, amp)
    del x
    labels = labels_on_grid(probs, volume.shape)
    if knee_side:
        from kneeoa.segmentation.postprocess import plates_by_knee_side

        labels = plates_by_knee_side(labels, volume.affine, knee_side)
    return labels

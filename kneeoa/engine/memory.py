"""GPU memory before a grade: estimate what the saliency map needs, fit its batch to the free memory, or say
to use the CPU, instead of failing with CUDA out-of-memory half-way through (a top complaint about Slicer AI
extensions: SlicerDentalSegmentator#34, SlicerMONAIAuto3DSeg#56).

The figure per input voxel and sample is measured: the fp32 forward + backward peaks of one training step
(batch 2) at the paper's sizes on an H100 (benchmarks/results_gpu_h100.json, `b_train_throughput`), less the
weights + AdamW state, halved. Saliency is a forward + backward with respect to the input in eval mode, so
these are upper-side figures. Widths other than the paper's scale the activations linearly.
"""

from __future__ import annotations

from typing import Any

from kneeoa.errors import NOT_ENOUGH_GPU_MEMORY, JobError

GiB = 2**30
# bytes of activation memory per input voxel and sample: `Backbone.bytes_per_voxel` in the catalog (measured on
# an H100: resnet3d 4.14 GB peak at 160x256x256 batch 2, nnmamba 7.02 GB, m3t 13.85 GB at 128^3)
DEFAULT_BYTES_PER_VOXEL = 3250.0  # a backbone without a measurement: assume the largest measured
SAFETY = 1.25  # allocator fragmentation and cuDNN workspaces
NOT_ENOUGH = NOT_ENOUGH_GPU_MEMORY


def saliency_bytes(card: dict, batch: int) -> float:
    """Estimated peak bytes of a saliency pass over `batch` samples for the model a card describes."""
    from kneeoa.contracts.catalog import BACKBONES

    spec = card.get("spec", card)
    shape = spec.get("input_shape") or BACKBONES[spec["backbone"]].input_shape
    voxels = float(shape[0]) * float(shape[1]) * float(shape[2])
    entry = BACKBONES.get(spec["backbone"])
    per_voxel = (entry.bytes_per_voxel if entry is not None else None) or DEFAULT_BYTES_PER_VOXEL
    width_ratio = (spec.get("width") or entry.width) / entry.width if entry is not None else 1.0
    return SAFETY * voxels * per_voxel * width_ratio * batch


def fit_saliency_batch(card: dict, n_samples: int, free_bytes: float, device: str = "cuda") -> int:
    """The largest saliency batch (<= n_samples) whose estimate fits in `free_bytes`; JobError naming the need
    and the free memory when not even one sample fits."""
    for batch in range(int(n_samples), 0, -1):
        if saliency_bytes(card, batch) <= free_bytes:
            return batch
    need = saliency_bytes(card, 1) / GiB
    raise JobError(f"{NOT_ENOUGH} on {device} for the saliency map: about {need:.1f} GiB needed, "
                   f"{free_bytes / GiB:.1f} GiB free; choose device 'cpu' (slower) or close other GPU programs")


def saliency_batch_for(device: Any, card: dict, n_samples: int = 8) -> int | None:
    """Saliency batch for `device`: fitted to the free CUDA memory, None (all samples at once) elsewhere."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return fit_saliency_batch(card, n_samples, float(free), str(device))

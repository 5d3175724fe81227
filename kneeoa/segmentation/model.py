"""The segmentation networks, all from MONAI, at a chosen base width. Input (B, 1, i, j, k) -> logits (B, 6, ...).

Depth is three downsamplings for every arch (patches must be multiples of 8), so the comparison in the
README compares the block designs, not depth. Instance norm everywhere (batches of 2-4 patches are
too small for batch norm, and group norm would need width >= 8).
"""

from __future__ import annotations

from typing import Any

from kneeoa.contracts.segmentation import SEG_ARCHS
from kneeoa.contracts.vocab import LABELS
from kneeoa.errors import ConfigError

N_CLASSES = len(LABELS)


def build_segmenter(arch: str, width: int) -> Any:
    """A MONAI 3-D segmentation network with `width` channels at full resolution."""
    from monai.networks import nets

    w = int(width)
    if arch == "segresnet":
        return nets.SegResNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, init_filters=w,
                              blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), norm="instance")
    if arch == "dynunet":
        return nets.DynUNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, kernel_size=[3, 3, 3, 3],
                            strides=[1, 2, 2, 2], upsample_kernel_size=[2, 2, 2], filters=[w, 2 * w, 4 * w, 8 * w],
                            norm_name="instance", res_block=True)
    if arch == "unet":
        return nets.UNet(spatial_dims=3, in_channels=1, out_channels=N_CLASSES, channels=(w, 2 * w, 4 * w, 8 * w),
                         strides=(2, 2, 2), num_res_units=2, norm="instance")
    raise ConfigError(f"unknown segmentation network {arch!r} (known: {', '.join(SEG_ARCHS)})")


def n_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())

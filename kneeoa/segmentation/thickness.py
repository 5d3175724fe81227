"""Cartilage thickness per compartment from a label map, in mm on the image's physical spacing (SPEC 9).

Method (the "bone-facing to joint-facing surface" distance): for a plate P (e.g. medial tibial cartilage)
on its bone B (tibia), the bone interface is the set of plate voxels with a face neighbour in B. At each
interface voxel the thickness is the exact Euclidean distance (scipy's distance transform with the voxel
spacing as sampling) to the nearest voxel that is neither plate nor bone, i.e. to the joint-facing
side. For an n-voxel slab this is exactly n voxels, the centre of the first plate voxel to the centre of
the first voxel beyond it. We report the mean and the 5th percentile over the interface; the rim of a plate
(where the joint side is reached sideways) pulls the low percentile down, so read p5 as "thinnest regions
including the rim". Written by hand because no library (MONAI, scikit-image) has a plate-thickness
measure; only the distance transform comes from scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kneeoa.contracts.segmentation import BONE_OF, THICKNESS_PERCENTILE
from kneeoa.contracts.vocab import COMPARTMENTS


def interface_thickness(mask: np.ndarray, plate: int, bone: int, spacing_mm: Sequence[float]) -> np.ndarray:
    """Thickness (mm) at every bone-interface voxel of label `plate`; empty when the plate touches no bone."""
    from scipy import ndimage

    mask = np.asarray(mask)
    plate_m = mask == plate
    if not plate_m.any():
        return np.zeros(0)
    bone_m = mask == bone
    face = ndimage.generate_binary_structure(3, 1)
    interface = plate_m & ndimage.binary_dilation(bone_m, structure=face)
    if not interface.any():
        return np.zeros(0)
    # crop to the plate's bounding box (+2 voxels) so a 384x384x160 map costs a few small EDTs, not one huge
    idx = np.argwhere(plate_m)
    lo = np.maximum(idx.min(0) - 2, 0)
    hi = np.minimum(idx.max(0) + 3, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    inside = plate_m[box] | bone_m[box]
    # outside the box counts as "neither plate nor bone" only where the box was cut by the image border
    dist = ndimage.distance_transform_edt(inside, sampling=[float(s) for s in spacing_mm])
    return dist[interface[box]]


def compartment_thickness(mask: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float]:
    """{'<compartment>_thickness_mean_mm', '<compartment>_thickness_p5_mm'} for femoral, medial and lateral
    tibial cartilage; NaN when a plate is missing or touches no bone."""
    out: dict[str, float] = {}
    for name, labels in COMPARTMENTS.items():
        plate = labels[0]
        values = interface_thickness(mask, plate, BONE_OF[plate], spacing_mm)
        mean = float(values.mean()) if values.size else float("nan")
        low = float(np.percentile(values, THICKNESS_PERCENTILE)) if values.size else float("nan")
        out[f"{name}_thickness_mean_mm"] = mean
        out[f"{name}_thickness_p{THICKNESS_PERCENTILE}_mm"] = low
    return out

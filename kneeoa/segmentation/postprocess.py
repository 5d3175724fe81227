"""Whole-plate consistency for the two tibial cartilage plates (label-map post-processing steps).

`plates_by_knee_side` (when the knee side is known): of the two largest tibial-cartilage plates, the medial
one is the plate nearer the body's midline, i.e. towards the patient's left (-x in RAS) in a right knee and
towards the patient's right (+x) in a left knee; smaller fragments join the plate whose centroid is nearer in
x. This is anatomy plus the image's affine, whatever the network thought. Without a side:

`consistent_tibial_plates`. A network that looks at patches can split one plate between "medial" and "lateral" where the left-right cues
are weak. Each connected tibial-cartilage plate (labels 4 and 5 together, face-connected) therefore takes the
majority label of its voxels; if the two largest plates end up with the same label, the one with the smaller
majority share takes the other label (a knee has one plate of each). Written here because MONAI's
connected-component transforms keep or drop components but do not relabel them by vote.
"""

from __future__ import annotations

import numpy as np

from kneeoa.contracts.segmentation import KNEE_SIDES
from kneeoa.contracts.vocab import LABEL_OF

MEDIAL, LATERAL = LABEL_OF["medial_tibial_cartilage"], LABEL_OF["lateral_tibial_cartilage"]


def consistent_tibial_plates(labels: np.ndarray) -> np.ndarray:
    """A copy of `labels` where every tibial cartilage plate carries one label (see the module doc)."""
    from scipy import ndimage

    plates = (labels == MEDIAL) | (labels == LATERAL)
    components, n = ndimage.label(plates)
    if n == 0:
        return labels
    out = labels.copy()
    ids = np.arange(1, n + 1)
    size = ndimage.sum(plates, components, ids)
    medial_share = ndimage.sum(labels == MEDIAL, components, ids) / np.maximum(size, 1)
    choice = {int(i): (MEDIAL if s >= 0.5 else LATERAL) for i, s in zip(ids, medial_share)}
    if n >= 2:
        a, b = (int(i) for i in ids[np.argsort(size)[::-1][:2]])
        if choice[a] == choice[b]:
            share = {a: medial_share[a - 1], b: medial_share[b - 1]}
            more_medial = a if share[a] >= share[b] else b
            choice[more_medial], choice[a + b - more_medial] = MEDIAL, LATERAL
    for i, value in choice.items():
        out[components == i] = value
    return out



def plates_by_knee_side(labels: np.ndarray, affine: np.ndarray, side: str) -> np.ndarray:
    """Medial/lateral tibial cartilage from the plates' positions and the knee side (see the module doc).
    Falls back to `consistent_tibial_plates` when there are fewer than two plates."""
    from scipy import ndimage

    if side not in KNEE_SIDES:
        raise ValueError(f"knee side must be one of {KNEE_SIDES}, got {side!r}")
    plates = (labels == MEDIAL) | (labels == LATERAL)
    components, n = ndimage.label(plates)
    if n < 2:
        return consistent_tibial_plates(labels)
    ids = np.arange(1, n + 1)
    size = ndimage.sum(plates, components, ids)
    centroids = np.asarray(ndimage.center_of_mass(plates, components, ids))  # (n, 3) voxel ijk
    ras_x = (np.c_[centroids, np.ones(n)] @ np.asarray(affine, dtype=float).T)[:, 0]
    a, b = (int(i) - 1 for i in ids[np.argsort(size)[::-1][:2]])
    # right knee: medial towards the patient's left = smaller RAS x; left knee: the opposite
    medial_first = (ras_x[a] < ras_x[b]) == (side == "right")
    medial, lateral = (a, b) if medial_first else (b, a)
    out = labels.copy()
    for k in range(n):
        nearer_medial = abs(ras_x[k] - ras_x[medial]) <= abs(ras_x[k] - ras_x[lateral])
        out[components == k + 1] = MEDIAL if nearer_medial else LATERAL
    return out

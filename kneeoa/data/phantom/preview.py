"""`preview.png`: sagittal slices of a few cases per true KL grade, with the mask labels outlined.

Each case shows two sagittal slices read back from the written files: the mid-sagittal one (through the
intercondylar notch, between the two tibial cartilage plates) and the one through the medial
compartment, where most OA findings are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kneeoa.data.phantom.severity import CaseLabels
from kneeoa.hierarchy import N_KL

LABEL_COLOURS = {1: "#e6194b", 2: "#ffe119", 3: "#42d4f4", 4: "#3cb44b", 5: "#f032e6"}


def _slices(image: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(mid-sagittal, medial-compartment) i indices from the tibial cartilage plates."""
    n = image.shape[0]
    centres = {}
    for code in (4, 5):
        idx = np.nonzero(mask == code)[0]
        centres[code] = float(idx.mean()) if idx.size else n / 2.0
    mid = int(round((centres[4] + centres[5]) / 2.0))
    return min(max(mid, 0), n - 1), int(round(centres[4]))


def _tile(image: np.ndarray, mask: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Sagittal slice i as (rows = superior at top, columns = posterior -> anterior), image windowed to [0, 1]."""
    lo, hi = np.percentile(image, [1.0, 99.5])
    tile = np.clip((image[i] - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return tile.T[::-1], mask[i].T[::-1]


def save_preview(out_dir: str | Path, labels: list[CaseLabels], n_train: int, per_grade: int = 3) -> Path:
    """Draw the montage from the cohort files; rows = true KL 0..4, columns = cases x (mid, medial).

    All tiles go into one array drawn once, with one contour per label: fast even for many tiles.
    """
    from kneeoa.data.phantom.layout import case_id, case_paths
    from kneeoa.data.volume import read_volume
    from kneeoa.plotting import pyplot
    from kneeoa.utils.atomic import atomic_path

    plt = pyplot()

    out_dir = Path(out_dir)
    tiles: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, str]] = {}
    for grade in range(N_KL):
        for c, lab in enumerate([lab for lab in labels if lab.true_kl == grade][:per_grade]):
            split = "train" if lab.case_number <= n_train else "test"
            image_path, mask_path = case_paths(out_dir, split, lab.case_number)
            image = read_volume(image_path).array
            mask = read_volume(mask_path, is_label=True).array
            kl = "-" if lab.recorded_kl is None else lab.recorded_kl
            for s, (i, what) in enumerate(zip(_slices(image, mask), ("mid", "medial"))):
                tiles[(grade, 2 * c + s)] = (*_tile(image, mask, i),
                                             f"{case_id(lab.case_number)[-3:]} {what} g={lab.severity:.1f} rec={kl}")
    h, w = next(iter(tiles.values()))[0].shape
    gap, cols = 2, 2 * per_grade
    canvas = np.full((N_KL * (h + gap), cols * (w + gap)), 0.15)
    labelled = np.zeros(canvas.shape, dtype=np.uint8)
    for (r, c), (tile, mask_tile, _) in tiles.items():
        canvas[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
        labelled[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = mask_tile
    fig = plt.figure(figsize=(1.9 * cols, 2.0 * N_KL + 0.4))
    ax = fig.add_axes((0.04, 0.0, 0.96, 0.95))
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    for code, colour in LABEL_COLOURS.items():
        if (labelled == code).any():
            ax.contour((labelled == code).astype(float), levels=[0.5], colors=[colour], linewidths=0.5)
    for (r, c), (_, _, title) in tiles.items():
        ax.text(c * (w + gap) + 1, r * (h + gap) + 1, title, color="w", fontsize=5, va="top")
    for grade in range(N_KL):
        ax.text(-2, grade * (h + gap) + h / 2, f"true KL {grade}", rotation=90, ha="right", va="center", fontsize=8)
    ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
    ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
    ax.axis("off")
    fig.suptitle("KneeOA phantom: sagittal slices (mid = notch, medial = medial compartment; anterior right); "
                 "outlines 1 femur, 2 fem. cart., 3 tibia, 4 med./5 lat. tib. cart.", fontsize=7)
    path = out_dir / "preview.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path

"""One phantom knee: labels (severity, grades, subject data) plus image and mask on the requested grid."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kneeoa.data.phantom.anatomy import sample_pose, sample_shape, tissue_fractions
from kneeoa.data.phantom.findings import Findings, findings_for
from kneeoa.data.phantom.imaging import label_map, render_image
from kneeoa.data.phantom.sdf import Grid
from kneeoa.data.phantom.severity import CaseLabels, case_labels, case_rng, true_kl_of

# Field of view like OAI DESS (140 mm): voxel spacing = 140 mm / grid size along each axis.
FOV_MM = 140.0


@dataclass(frozen=True)
class PhantomCase:
    """A synthesized knee: image and mask in NIfTI (i, j, k) order with their ijk->RAS affine."""

    labels: CaseLabels
    findings: Findings
    image_ijk: np.ndarray  # float32, integer-valued signal
    mask_ijk: np.ndarray  # uint8, 0..5
    affine: np.ndarray


def grid_for(shape_dhw: tuple[int, int, int], fov_mm: float = FOV_MM) -> Grid:
    """Grid of a model-space shape (D, H, W): NIfTI array (i, j, k) = (H, W, D), diagonal RAS affine."""
    d, h, w = (int(n) for n in shape_dhw)
    shape_ijk = (h, w, d)
    return Grid(shape_ijk, tuple(fov_mm / n for n in shape_ijk))


def synthesize_case(seed: int, case_number: int, shape_dhw: tuple[int, int, int],
                    severity: float | None = None, partner: int | None = None) -> PhantomCase:
    """Build case `case_number` of cohort `seed`; a pure function of its arguments (byte-reproducible).

    `severity` overrides the latent severity (same subject, anatomy and pose): a what-if for one knee.
    `partner` makes it the other knee of case `partner`'s subject (see `severity.case_labels`).
    """
    labels = case_labels(seed, case_number, partner)
    if severity is not None:
        labels = replace(labels, severity=float(severity), true_kl=true_kl_of(float(severity)))
    anatomy_rng = case_rng(seed, case_number, 1)
    findings = findings_for(labels.severity, case_rng(seed, case_number, 2))
    shape = sample_shape(anatomy_rng, labels.gender)
    pose = sample_pose(anatomy_rng, labels.knee_side, labels.gender)
    grid = grid_for(shape_dhw)
    fractions, fields = tissue_fractions(grid, shape, findings, pose)
    image = render_image(grid, fractions, fields, findings, case_rng(seed, case_number, 3))
    return PhantomCase(labels, findings, image, label_map(fractions), grid.affine)

"""Signed-distance building blocks on voxel grids (mm; negative inside), all vectorised numpy float32.

Shapes are evaluated in a local frame: `Frame` maps world (RAS mm) points to local coordinates, and a
`Grid` evaluates those coordinates for every voxel centre with three broadcast adds (no per-voxel loop).
Distances are the usual cheap bounds (Quilez-style), exact enough near surfaces, which is all that
partial-volume occupancy needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32


@dataclass(frozen=True)
class Grid:
    """Voxel centres of an (i, j, k) grid with a diagonal RAS affine centred on the origin."""

    shape_ijk: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """ijk -> RAS: diagonal spacing, field of view centred on (0, 0, 0)."""
        aff = np.diag([*self.spacing_mm, 1.0])
        aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(self.shape_ijk, self.spacing_mm)]
        return aff

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinate of voxel centres along i (R), j (A), k (S)."""
        origin = self.affine[:3, 3]
        return tuple((origin[a] + np.arange(n) * self.spacing_mm[a]).astype(np.float64)
                     for a, n in enumerate(self.shape_ijk))

    @property
    def voxel_mm(self) -> float:
        """Representative voxel edge (geometric mean) used as the partial-volume width."""
        return float(np.prod(self.spacing_mm) ** (1.0 / 3.0))


@dataclass(frozen=True)
class Frame:
    """Affine map world -> local: local = matrix @ world + offset."""

    matrix: np.ndarray
    offset: np.ndarray

    @staticmethod
    def identity() -> Frame:
        return Frame(np.eye(3), np.zeros(3))

    def then(self, matrix: np.ndarray, offset: np.ndarray) -> Frame:
        """The frame local' = matrix @ local + offset."""
        return Frame(matrix @ self.matrix, matrix @ self.offset + offset)

    def coords(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local (X, Y, Z) of every voxel centre, each an (i, j, k) float32 array."""
        x, y, z = grid.axes()
        out = []
        for row, off in zip(self.matrix, self.offset):
            part = (row[0] * x + off)[:, None, None] + (row[1] * y)[None, :, None]
            out.append((part + (row[2] * z)[None, None, :]).astype(F32))
        return tuple(out)


def rotation(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx (degrees, about the frame's own axes)."""
    a, b, c = np.deg2rad([rx_deg, ry_deg, rz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid(p: tuple, center: tuple, radii: tuple) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid."""
    qs = [(pi - ci) / ri for pi, ci, ri in zip(p, center, radii)]
    k0 = np.sqrt(sum(q * q for q in qs))
    k1 = np.sqrt(sum((q / ri) ** 2 for q, ri in zip(qs, radii)))
    return (k0 * (k0 - 1.0) / np.maximum(k1, F32(1e-6))).astype(F32, copy=False)


def ellipse_xy(x: np.ndarray, y: np.ndarray, center: tuple, radii: tuple) -> np.ndarray:
    """Approximate signed distance to an infinite elliptic cylinder along Z."""
    qx, qy = (x - center[0]) / radii[0], (y - center[1]) / radii[1]
    k0 = np.sqrt(qx * qx + qy * qy)
    k1 = np.sqrt((qx / radii[0]) ** 2 + (qy / radii[1]) ** 2)
    return (k0 * (k0 - 1.0) / np.maximum(k1, F32(1e-6))).astype(F32, copy=False)


def segment_yz(y: np.ndarray, z: np.ndarray, a: tuple, b: tuple) -> np.ndarray:
    """Distance to the segment a-b in the (Y, Z) plane (an infinite slab of it along X)."""
    ay, az = a
    dy, dz = b[0] - ay, b[1] - az
    t = np.clip(((y - ay) * dy + (z - az) * dz) / (dy * dy + dz * dz), 0.0, 1.0)
    return np.sqrt((y - ay - t * dy) ** 2 + (z - az - t * dz) ** 2).astype(F32, copy=False)


def segment(p: tuple, a: tuple, b: tuple) -> np.ndarray:
    """Distance to the 3D segment a-b (subtract a radius for a capsule)."""
    d = [bi - ai for ai, bi in zip(a, b)]
    rel = [pi - ai for pi, ai in zip(p, a)]
    t = np.clip(sum(r * di for r, di in zip(rel, d)) / sum(di * di for di in d), 0.0, 1.0)
    return np.sqrt(sum((r - t * di) ** 2 for r, di in zip(rel, d))).astype(F32, copy=False)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union (polynomial smooth minimum) with blend width k mm."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * (k * 0.25)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth intersection."""
    return -smin(-a, -b, k)


def ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Linear step from 0 (x <= -width/2) to 1 (x >= width/2): a cheap soft indicator."""
    return np.clip(0.5 + x / width, 0.0, 1.0)


def occupancy(distance: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Partial-volume fraction of a voxel inside the surface: linear in the signed distance over one voxel."""
    return np.clip(0.5 - distance / voxel_mm, 0.0, 1.0)

"""Geometry of the phantom knee: healthy shape, pose (nuisance) and partial-volume tissue fractions.

Knee frame (mm before scaling): X points medial, Y anterior, Z superior; the lateral tibial plateau top is
Z = 0, so the joint line sits just above it. The femur lives in its own frame, placed so that each condyle
rests on the cartilage (and fluid film) of its compartment: thinner medial cartilage therefore tilts the
femur into varus and narrows the medial joint space, as in a real knee. The whole knee is then scaled,
rotated a little, shifted and, for a right knee, mirrored so medial is towards the patient's left (-x RAS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kneeoa.data.phantom import sdf
from kneeoa.data.phantom.findings import Findings
from kneeoa.data.phantom.sdf import Frame, Grid, ellipse_xy, ellipsoid, ramp, rotation, smax, smin

# Tissues in priority order: a voxel's volume goes to the first tissue that claims it.
TISSUES = ("femur", "tibia", "patella", "femoral_cartilage", "medial_tibial_cartilage",
           "lateral_tibial_cartilage", "patellar_cartilage", "meniscus", "tendon", "fat_pad", "fluid",
           "muscle", "subcutaneous_fat")
# the OAI-ZIB-CM mask label of each labelled tissue: kneeoa.contracts.vocab.LABEL_OF (the rest is background 0)
_FAR = np.float32(50.0)


@dataclass(frozen=True)
class KneeShape:
    """Healthy anatomy of one subject, in knee-frame mm."""

    cx_med: float  # medial condyle / compartment centre, X
    cx_lat: float  # lateral one, as a positive distance
    condyle_med: tuple[float, float, float]  # ellipsoid radii (ML, AP, SI)
    condyle_lat: tuple[float, float, float]
    condyle_y: float
    femur_shaft_r: float
    plateau: tuple[float, float]  # tibial plateau half-widths (ML, AP)
    plateau_y: float
    tibia_head_h: float
    tibia_shaft_r: float
    cartilage_femoral: float  # healthy thickness, mm (stylised thick enough for coarse grids)
    cartilage_medial: float
    cartilage_lateral: float
    fluid_gap: float
    limb: tuple[float, float]
    flexion_deg: float


@dataclass(frozen=True)
class Pose:
    """Nuisance placement of the knee in the scanner."""

    side: str  # "right" | "left"
    scale: float
    aspect: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    shift_mm: tuple[float, float, float]


def sample_shape(rng: np.random.Generator, gender: int) -> KneeShape:
    """A healthy knee with subject-to-subject variation of a few percent per dimension."""
    def v(x: float, sd: float = 0.05) -> float:
        return float(x * rng.normal(1.0, sd))

    return KneeShape(
        cx_med=v(21.0, 0.04), cx_lat=v(20.0, 0.04),
        condyle_med=(v(15.0), v(25.0), v(21.0)), condyle_lat=(v(14.0), v(23.5), v(20.0)),
        condyle_y=v(-6.0, 0.1), femur_shaft_r=v(13.5), plateau=(v(38.0, 0.04), v(26.0, 0.04)),
        plateau_y=v(-4.0, 0.1), tibia_head_h=v(22.0), tibia_shaft_r=v(16.5),
        cartilage_femoral=v(3.0, 0.1), cartilage_medial=v(3.2, 0.1), cartilage_lateral=v(3.6, 0.1),
        fluid_gap=float(rng.uniform(0.4, 0.9)), limb=(v(54.0 if gender == 1 else 50.0, 0.06), v(58.0, 0.06)),
        flexion_deg=float(rng.uniform(0.0, 10.0)),
    )


def sample_pose(rng: np.random.Generator, side: str, gender: int) -> Pose:
    """Size (men ~8 % larger), a few degrees of rotation and a few mm of shift."""
    base = 1.04 if gender == 1 else 0.96
    return Pose(side=side, scale=float(base * rng.normal(1.0, 0.05)),
                aspect=tuple(float(a) for a in rng.normal(1.0, 0.025, 3)),
                rotation_deg=tuple(float(a) for a in rng.normal(0.0, [3.0, 3.0, 4.0])),
                shift_mm=tuple(float(a) for a in rng.normal(0.0, [4.0, 4.0, 5.0])))


def knee_frame(pose: Pose) -> Frame:
    """World (RAS mm) -> knee frame: undo shift, rotation and scale; X medial (mirrored for a right knee)."""
    mirror = np.diag([-1.0 if pose.side == "right" else 1.0, 1.0, 1.0])
    inv_scale = np.diag(1.0 / (pose.scale * np.asarray(pose.aspect)))
    matrix = mirror @ inv_scale @ rotation(*pose.rotation_deg).T
    return Frame(matrix, -matrix @ np.asarray(pose.shift_mm))


@dataclass(frozen=True)
class Joint:
    """Derived joint geometry: compartment heights after thinning and the femur's placement."""

    top_med: float  # medial plateau top Z (depressed in severe OA)
    cart_med: float  # tibial cartilage thickness at compartment centre
    cart_lat: float
    fem_med: float  # femoral cartilage thickness factor per compartment
    fem_lat: float
    contact_med: float  # Z of the medial condyle's lowest bone point
    contact_lat: float


def joint_geometry(shape: KneeShape, findings: Findings) -> Joint:
    """Where each condyle rests: plateau + tibial cartilage + fluid film + femoral cartilage."""
    fem_med = 1.0 - 0.85 * (1.0 - findings.cartilage_medial)
    fem_lat = 1.0 - 0.85 * (1.0 - findings.cartilage_lateral)
    cart_med = shape.cartilage_medial * findings.cartilage_medial
    cart_lat = shape.cartilage_lateral * findings.cartilage_lateral
    top_med = -findings.plateau_depression_mm
    gap_med = shape.fluid_gap * min(1.0, findings.cartilage_medial)
    contact_med = top_med + cart_med + shape.cartilage_femoral * fem_med + gap_med
    contact_lat = cart_lat + shape.cartilage_femoral * fem_lat + shape.fluid_gap
    return Joint(top_med, cart_med, cart_lat, fem_med, fem_lat, contact_med, contact_lat)


def femur_frame(knee: Frame, shape: KneeShape, joint: Joint) -> Frame:
    """Knee -> femur frame (condyle bottoms at Z=0): varus tilt from unequal contact heights, then flexion."""
    span = shape.cx_med + shape.cx_lat
    slope = (joint.contact_med - joint.contact_lat) / span
    origin = np.array([0.0, 0.0, joint.contact_lat + slope * shape.cx_lat])
    tilt = rotation(0.0, -np.rad2deg(np.arctan(slope)), 0.0)  # femur -> knee
    frame = knee.then(tilt.T, -tilt.T @ origin)
    centre = np.array([0.0, shape.condyle_y, shape.condyle_med[2]])
    flex = rotation(-shape.flexion_deg, 0.0, 0.0)
    return frame.then(flex.T, centre - flex.T @ centre)


def _osteophyte(p: tuple, site: tuple[str, str, str], size: float, jitter: tuple[float, float],
                shape: KneeShape, joint: Joint) -> np.ndarray:
    """SDF of one spur at its margin site (femur sites in the femur frame, tibia sites in the knee frame)."""
    bone, comp, where = site
    sign = 1.0 if comp == "medial" else -1.0
    if bone == "tibia":
        a, b = shape.plateau
        top = joint.top_med if comp == "medial" else 0.0
        cx = shape.cx_med if comp == "medial" else -shape.cx_lat
        # lipping: grows out of the plateau rim, outwards and a little upwards
        if where == "rim":
            c = (sign * (a + 0.1 * size), shape.plateau_y + jitter[0] * b, top - 0.3 * size)
            r = (0.9 * size, 1.6 * size, 0.7 * size)
        else:
            dy = -1.0 if where == "posterior" else 1.0
            x = cx + jitter[0] * 10.0
            edge = b * np.sqrt(max(1.0 - (x / a) ** 2, 0.0))  # plateau AP half-extent at this X
            c = (x, shape.plateau_y + dy * (edge + 0.1 * size), top - 0.3 * size)
            r = (1.6 * size, 0.9 * size, 0.7 * size)
        return ellipsoid(p, c, r)
    rad = shape.condyle_med if comp == "medial" else shape.condyle_lat
    cx = shape.cx_med if comp == "medial" else -shape.cx_lat
    if where == "rim":
        h = 0.45 + jitter[1]  # height on the condyle (fraction of its SI radius), where its ML extent is:
        half = rad[0] * np.sqrt(1.0 - (1.0 - h) ** 2) * np.sqrt(max(1.0 - jitter[0] ** 2, 0.0))
        c = (cx + sign * (half + 0.05 * size), shape.condyle_y + jitter[0] * rad[1], rad[2] * h)
        r = (0.8 * size, 1.5 * size, 1.1 * size)
    elif where == "posterior":
        c = (cx + jitter[0] * rad[0], shape.condyle_y - rad[1] * 0.93 - 0.05 * size, rad[2] * (0.95 + jitter[1]))
        r = (1.4 * size, 0.8 * size, 1.2 * size)
    else:
        c = (cx + sign * 4.0, shape.condyle_y + rad[1] * 0.95 + 0.05 * size, rad[2] * (1.0 + jitter[1]))
        r = (1.3 * size, 0.8 * size, 1.1 * size)
    return ellipsoid(p, c, r)


def tissue_fractions(grid: Grid, shape: KneeShape, findings: Findings, pose: Pose
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Partial-volume fraction of every tissue per voxel, plus the fields the intensity model needs."""
    joint = joint_geometry(shape, findings)
    kf = knee_frame(pose)
    ff = femur_frame(kf, shape, joint)
    K = kf.coords(grid)
    F = ff.coords(grid)
    X, Y, Z = K
    Xf, Yf, Zf = F
    mm = pose.scale  # local units -> world mm for occupancy widths
    cy, rm, rl = shape.condyle_y, shape.condyle_med, shape.condyle_lat

    # femur (femur frame)
    flat = findings.flattening_mm
    d_cm = ellipsoid(F, (shape.cx_med, cy, rm[2] - flat), rm)
    if flat > 0:
        d_cm = smax(d_cm, -Zf, 1.5)
    d_fem = smin(d_cm, ellipsoid(F, (-shape.cx_lat, cy, rl[2]), rl), 3.0)
    d_fem = smin(d_fem, ellipsoid(F, (0.0, cy + 8.0, rm[2] + 14.0), (shape.cx_med + rm[0] - 3.0, 24.0, 20.0)), 6.0)
    shaft = np.maximum(ellipse_xy(Xf, Yf, (0.0, cy + 6.0), (shape.femur_shaft_r, shape.femur_shaft_r * 1.05)),
                       (rm[2] + 12.0) - Zf)
    d_fem = smin(d_fem, shaft, 14.0)
    # tibia (knee frame)
    a, b = shape.plateau
    ty = shape.plateau_y
    top = joint.top_med * ramp(X - 4.0, 8.0)  # medial plateau depression
    h = shape.tibia_head_h
    taper = 1.0 - 0.45 * ramp(-Z - 1.6 * h, 1.4 * h)  # the plateau narrows into the metaphysis
    d_tib = smax(ellipse_xy(X / taper, Y / taper, (0.0, ty), (a, b)) * taper, Z - top, 3.0)
    d_tib = smax(d_tib, -(Z + 2.6 * h), 3.0)
    tshaft = np.maximum(ellipse_xy(X, Y, (-2.0, ty - 2.0), (shape.tibia_shaft_r, shape.tibia_shaft_r * 0.9)),
                        Z + 10.0)
    d_tib = smin(d_tib, tshaft, 16.0)
    d_tib = smin(d_tib, ellipsoid(K, (0.0, ty + 1.0, 0.0), (5.0, 10.0, 5.5)), 2.0)  # intercondylar eminence
    for spur in findings.osteophytes:
        site = (spur.bone, spur.compartment, spur.where)
        if spur.bone == "tibia":
            d_tib = smin(d_tib, _osteophyte(K, site, spur.size_mm, spur.jitter, shape, joint), 2.5)
        else:
            d_fem = smin(d_fem, _osteophyte(F, site, spur.size_mm, spur.jitter, shape, joint), 2.5)

    # femoral cartilage: inferior/posterior condyles (not the notch) + trochlea
    lower = ramp(5.0 + 0.9 * np.maximum(cy - Yf, 0.0) - Zf, 4.0) * ramp(np.abs(Xf) - 8.0, 3.0)
    comp = joint.fem_lat + (joint.fem_med - joint.fem_lat) * ramp(Xf, 8.0)
    troch = ramp(Yf - (cy + 14.0), 4.0) * ramp((rm[2] + 24.0) - Zf, 4.0)
    d_fc = d_fem - shape.cartilage_femoral * np.maximum(lower * comp, troch)

    # tibial cartilage and menisci per compartment
    d_tc, d_men = {}, None
    for name, cx, thick, ztop in (("medial", shape.cx_med, joint.cart_med, joint.top_med),
                                  ("lateral", -shape.cx_lat, joint.cart_lat, 0.0)):
        q2 = ((X - cx) / 13.0) ** 2 + ((Y - (ty - 1.0)) / 19.0) ** 2
        t = thick * np.sqrt(np.clip(1.0 - q2 * q2, 0.0, 1.0))
        d = np.maximum(Z - (ztop + t), (ztop - 12.0) - Z)  # deep floor: partial volume needs the full slab
        d_tc[name] = np.where(q2 < 1.0, d, _FAR)
        qm = np.sqrt(((X - cx) / 16.5) ** 2 + ((Y - (ty - 1.0)) / 23.0) ** 2)
        h = 6.5 * ramp(qm - 0.8, 0.2)
        dm = np.maximum(np.maximum(Z - (ztop + h), (ztop - 3.0) - Z), (qm - 1.0) * 16.5)
        d_men = dm if d_men is None else np.minimum(d_men, dm)

    # patella + its cartilage, tendons, fat pad, fluid, soft tissue
    py, pz = cy + 47.5, rm[2] + 16.0
    d_pat = ellipsoid(F, (0.0, py, pz), (21.0, 9.0, 18.0))
    d_pc = d_pat - 3.0 * ramp((py - 3.0) - Yf, 4.0)
    d_tendon = np.maximum(sdf.segment_yz(Y, Z, (py + 2.0 + 0.0, pz - 16.0), (ty + b - 4.0, -32.0)) - 2.5,
                          np.abs(X) - 11.0)
    d_tendon = np.minimum(d_tendon, np.maximum(sdf.segment_yz(Yf, Zf, (py - 2.0, pz + 16.0), (py - 6.0, 90.0)) - 3.0,
                                               np.abs(Xf) - 16.0))
    # cruciate ligaments: dark bands in the intercondylar notch (what a mid-sagittal slice shows)
    d_tendon = np.minimum(d_tendon, sdf.segment(K, (0.0, ty + 9.0, 0.5), (-7.0, cy - 10.0, 18.0)) - 3.5)
    d_tendon = np.minimum(d_tendon, sdf.segment(K, (1.0, ty - 20.0, -4.0), (7.0, cy + 10.0, 16.0)) - 4.0)
    d_pad = ellipsoid(K, (0.0, ty + b - 6.0, 3.0), (22.0, 9.0, 11.0))
    eff = findings.effusion
    d_fluid = ellipsoid(K, (0.0, ty, 3.5), (40.0, 27.0, 1.5 + 1.5 * eff))
    d_fluid = np.minimum(d_fluid, ellipsoid(F, (0.0, cy + 36.0, rm[2] + 30.0), (24.0, 2.0 + 2.0 * eff, 17.0)))
    d_limb = ellipse_xy(X, Y, (0.0, -2.0), shape.limb)
    sdfs = {"femur": d_fem, "tibia": d_tib, "patella": d_pat, "femoral_cartilage": d_fc,
            "medial_tibial_cartilage": d_tc["medial"], "lateral_tibial_cartilage": d_tc["lateral"],
            "patellar_cartilage": d_pc, "meniscus": d_men, "tendon": d_tendon, "fluid": d_fluid,
            "fat_pad": d_pad, "muscle": d_limb + 5.0, "subcutaneous_fat": d_limb}
    fractions, union, prev = {}, None, 0.0
    for name in TISSUES:
        union = sdfs[name] if union is None else np.minimum(union, sdfs[name])
        occ = sdf.occupancy(union * mm, grid.voxel_mm)
        fractions[name] = occ - prev
        prev = occ
    fields = {"d_femur": d_fem * mm, "d_tibia": d_tib * mm, "d_patella": d_pat * mm, "X": X, "Z": Z, "Zf": Zf,
              "contact_med": np.float32(joint.contact_med)}
    return fractions, fields

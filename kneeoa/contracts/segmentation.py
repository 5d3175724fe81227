"""Names of the segmentation feature (SPEC 9), defined once: networks, segment display, terminology, columns.

Standard library only: the Slicer module reads the colours and terminology before torch is installed.
Label values and names come from `vocab.LABELS`; this module only adds what a display or a table needs.
"""

from __future__ import annotations

from kneeoa.contracts.vocab import COMPARTMENTS, LABELS

# --- networks (all from MONAI; `kneeoa.segmentation.model` builds them) ---------------------------------
SEG_ARCHS = ("segresnet", "dynunet", "unet")
SEG_CARD_KIND = "segmenter"  # card["kind"] of a segmentation checkpoint (grading cards have no "kind")
FOREGROUND_LABELS = tuple(v for v in LABELS if v != 0)  # the five segments
BONE_OF = {2: 1, 4: 3, 5: 3}  # cartilage label -> the bone it sits on (thickness is measured from that interface)

# --- display: segment name and colour (RGB 0-1) of each label; bones pale, cartilage plates told apart -----
SEGMENT_COLORS = {1: (0.90, 0.85, 0.70), 2: (0.20, 0.60, 1.00), 3: (0.85, 0.80, 0.65), 4: (0.10, 0.85, 0.45),
                  5: (1.00, 0.55, 0.10)}
# 'Femoral cartilage': the names we give segments and look for when a user's segmentation is exported
SEGMENT_TITLES = {value: LABELS[value].replace("_", " ").capitalize() for value in SEGMENT_COLORS}

# --- standard terminology (DICOM / SNOMED-CT "SCT" codes) ---------------------------------------------------
# Codes are given only where we could check them against published SNOMED-CT value sets: the two bones.
# Cartilage has no single SNOMED body-structure code we could verify per plate, so those segments carry the
# category "Anatomical structure" and the anatomic region "Knee joint" with our own type text (no code).
SCT = "SCT"
CATEGORY_ANATOMY = (SCT, "123037004", "Anatomical Structure")
REGION_KNEE = (SCT, "49076000", "Knee joint")
SEGMENT_TYPES = {
    1: (SCT, "71341001", "Bone structure of femur"),
    2: ("", "", "Femoral cartilage"),
    3: (SCT, "12611008", "Bone structure of tibia"),
    4: ("", "", "Medial tibial cartilage"),
    5: ("", "", "Lateral tibial cartilage"),
}


def _code(triple: tuple[str, str, str]) -> str:
    return "^".join(triple)


def terminology_entry(label: int) -> str:
    """Slicer's segment tag 'TerminologyEntry' for one label (context~category~type~modifier~region...)."""
    empty = "^^"
    region = REGION_KNEE if SEGMENT_TYPES[label][1] == "" else ("", "", "")
    return "~".join(["Segmentation category and type - 3D Slicer General Anatomy list", _code(CATEGORY_ANATOMY),
                     _code(SEGMENT_TYPES[label]), empty, "Anatomic codes - DICOM master list",
                     _code(region) if region[2] else empty, empty])


# --- where an overlap's mask came from ------------------------------------------------------------------
MASK_SOURCES = ("reference", "automatic")  # a given mask / one `kneeoa segment` produced
MASK_SOURCE_COLUMN = "mask_source"

# --- thickness columns (mm), beside the predictions ---------------------------------------------------
THICKNESS_PERCENTILE = 5  # the "low percentile" reported with the mean (SPEC 9)


def thickness_columns() -> list[str]:
    """['femoral_thickness_mean_mm', 'femoral_thickness_p5_mm', ...] in compartment order."""
    return [f"{name}_thickness_{stat}_mm" for name in COMPARTMENTS for stat in ("mean", f"p{THICKNESS_PERCENTILE}")]


# --- tables -----------------------------------------------------------------------------------------
KNEE_SIDES = ("left", "right")  # as in OAI-ZIB-CM's kneeSideInfo.csv
SEGMENT_COLUMNS = ["case_id", "path", "status", "error", "seg_path", "knee_side", "seconds", *thickness_columns()]
SEG_METRIC_COLUMNS = ["case_id", "label", "label_name", "dice", "hd95_mm", "reference_voxels", "predicted_voxels"]

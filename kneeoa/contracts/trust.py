"""Names of the trust layer (calibration, conformal sets, out-of-distribution): torch-free, standard library only.

Every column, key and method name that the trust code writes is defined here once; the engine, the
commands, the Slicer glue and the report import them from this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from kneeoa.errors import ConfigError
from kneeoa.hierarchy import KL_GRADES  # standard library at import

# --- conformal methods -------------------------------------------------------------------------------------
# "ordinal": sets are ranges of grades grown from the argmax, adding the more likely neighbour first
# (ordinal APS, Lu, Angelopoulos & Pomerantz 2022), with the last grade's share of the score randomised
# (reproducibly, per knee) so coverage is 1 - alpha rather than above it; "ordinal-conservative": the same
# ranges without the randomisation (never smaller, over-cover when probabilities are flat); "lac": every
# grade with 1 - p <= q; "aps": grades in decreasing probability until the mass reaches q (Romano et al.
# 2020). LAC/APS sets need not be ranges.
CONFORMAL_METHODS = ("ordinal", "ordinal-conservative", "lac", "aps")
ORDINAL_METHODS = ("ordinal", "ordinal-conservative")  # sets that are ranges of grades
DEFAULT_METHOD = "ordinal"
DEFAULT_ALPHA = 0.1  # 90 % sets
DEFAULT_OOD_ALPHA = 0.05  # flag when the conformal p-value is <= 0.05: about 1 in 20 normal knees flagged

# --- prediction fields (grade JSON keys and score-table columns) ------------------------------------------
KL_PROB_CAL_COLUMNS = tuple(f"kl_prob_cal_{g}" for g in KL_GRADES)
OA_PROB_CAL = "oa_prob_cal"
PRED_KL_CAL = "pred_kl_cal"
KL_SET = "kl_set"  # "2-3" (ordinal) or "1,3" (LAC/APS); empty when the model has no KL head
KL_SET_LOW = "kl_set_low"
KL_SET_HIGH = "kl_set_high"
KL_SET_SIZE = "kl_set_size"
KL_SET_GRADES = "kl_set_grades"  # grade JSON only: the list of grades in the set
KL_SET_LABEL = "kl_set_label"  # grade JSON only: "KL 2-3 at 90 %"
OA_SET = "oa_set"  # "no OA", "OA" or "no OA,OA"
SET_LEVEL = "set_level"  # 1 - alpha, e.g. 0.9
SET_METHOD = "set_method"
OOD_SCORE = "ood_score"  # Mahalanobis distance of the embedding to the training knees
OOD_IMAGE_SCORE = "ood_image_score"  # Mahalanobis distance of the image statistics (histogram, noise) to training
OOD_P = "ood_p"  # conformal p-value against held-out knees, both detectors (Bonferroni): small = unusual
OOD_FLAG = "ood_flag"  # 1 when ood_p <= the OOD alpha or an acquisition check failed
ENVELOPE_WARNINGS = "envelope_warnings"  # plain-words findings of the acquisition check, "; "-separated
TRUST_COLUMNS = (*KL_PROB_CAL_COLUMNS, OA_PROB_CAL, PRED_KL_CAL, KL_SET, KL_SET_LOW, KL_SET_HIGH, KL_SET_SIZE,
                 OA_SET, SET_LEVEL, SET_METHOD, OOD_SCORE, OOD_IMAGE_SCORE, OOD_P, OOD_FLAG, ENVELOPE_WARNINGS)
TRUST_KEY = "trust"  # the key of the trust block in the grade JSON and in the model card

# --- checkpoint storage ------------------------------------------------------------------------------------
# The trust statistics are tensors in the checkpoint's safetensors file next to the weights, under this
# prefix; model loading skips them. The card's "trust" block says what they were fitted on.
TENSOR_PREFIX = "trust."
T_TEMPERATURE = "trust.temperature"  # (2,) float64: T for the KL head, T for the OA head (1.0 = none)
T_CAL_KL_PROBS = "trust.conformal.kl_probs"  # (n, 5) raw KL probabilities of the conformal calibration knees
T_CAL_OA_PROB = "trust.conformal.oa_prob"  # (n,) raw P(OA) of the same knees
T_CAL_KL = "trust.conformal.kl"  # (n,) their recorded KL grades (int64)
T_OOD_MEAN = "trust.ood.mean"  # (E,) mean training embedding
T_OOD_PRECISION = "trust.ood.precision"  # (E, E) Ledoit-Wolf precision matrix
T_OOD_HELDOUT = "trust.ood.heldout"  # (m,) distances of held-out in-distribution knees (p-value reference)
T_IMG_MEAN = "trust.image.mean"  # the same three for the image-statistics detector
T_IMG_PRECISION = "trust.image.precision"
T_IMG_HELDOUT = "trust.image.heldout"
OA_SET_NAMES = ("no OA", "OA")


def set_text(low: int, high: int) -> str:
    """'2-3' for a range of grades, '2' for one grade."""
    return str(low) if low == high else f"{low}-{high}"


def set_label(grades: list[int] | tuple[int, ...], level: float, contiguous: bool = True) -> str:
    """The set as a person reads it: 'KL 2-3 at 90 %' (a range) or 'KL 1, 3 at 90 %'."""
    pct = f"{100 * level:.0f} %"
    if not grades:
        return f"no KL grade at {pct}"
    grades = sorted(int(g) for g in grades)
    if contiguous and grades == list(range(grades[0], grades[-1] + 1)):
        return f"KL {set_text(grades[0], grades[-1])} at {pct}"
    return f"KL {', '.join(map(str, grades))} at {pct}"


def trust_file_name(model: str) -> str:
    """'resnet3d_dual' -> 'resnet3d_dual_trust.csv': `kneeoa predict`'s trust columns, beside the published
    predictions file, which keeps the paper's format unchanged."""
    return f"{model}_trust.csv"


TRUST_FILE_COLUMNS = ["CMT_ID", "label_kl", *TRUST_COLUMNS]


@dataclass(frozen=True)
class TrustOptions:
    """How sets and flags are made at prediction time (any alpha: the checkpoint keeps its calibration knees)."""

    alpha: float = DEFAULT_ALPHA
    method: str = DEFAULT_METHOD
    class_conditional: bool = False
    ood_alpha: float = DEFAULT_OOD_ALPHA

    def __post_init__(self) -> None:
        for name in ("alpha", "ood_alpha"):
            value = getattr(self, name)
            if not 0.0 < float(value) < 1.0:
                raise ConfigError(f"{name} must be between 0 and 1 (exclusive), got {value}")
        if self.method not in CONFORMAL_METHODS:
            raise ConfigError(f"unknown set method {self.method!r}; choose one of {', '.join(CONFORMAL_METHODS)}")

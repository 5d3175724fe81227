"""The label hierarchy: KL grade 0..4 (fine, noisy) and OA = KL >= 2 (coarse)."""

from __future__ import annotations

from typing import Any

KL_GRADES = (0, 1, 2, 3, 4)
N_KL = len(KL_GRADES)
OA_THRESHOLD = 2  # OA iff KL >= 2 (the paper's binary_threshold)
OA_DECISION = 0.5  # OA predicted iff P(OA) >= 0.5


def oa_from_kl(kl: Any) -> Any:
    """OA label(s) from KL grade(s): 1 iff KL >= 2. Works on ints, numpy arrays and torch tensors."""
    if isinstance(kl, int):
        return int(kl >= OA_THRESHOLD)
    return (kl >= OA_THRESHOLD) * 1


def oa_prob_from_kl_probs(kl_probs: Any) -> Any:
    """P(OA) implied by a 5-class KL distribution (last axis): p[2] + p[3] + p[4]."""
    return kl_probs[..., OA_THRESHOLD:].sum(-1)


def consistent_kl(kl_probs: Any, oa_prob: Any) -> Any:
    """Hierarchy-consistent KL prediction: the most likely grade on the side of the OA decision.

    If the OA head says OA (p >= 0.5) the grade is argmax over KL 2..4, else argmax over KL 0..1, so the
    reported grade never contradicts the reported OA status.
    """
    import numpy as np

    p = np.asarray(kl_probs, dtype=float)
    is_oa = np.asarray(oa_prob, dtype=float) >= OA_DECISION
    low = p[..., :OA_THRESHOLD].argmax(-1)
    high = p[..., OA_THRESHOLD:].argmax(-1) + OA_THRESHOLD
    return np.where(is_oa, high, low)


def validate_kl(value: Any) -> int | None:
    """A KL grade as int 0..4, None when missing (blank/NaN); ValueError when not a grade."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "" or value.lower() in {"nan", "na", "n/a", "none"}:
            return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"KL grade {value!r} is not a number") from None
    if f != f:  # NaN
        return None
    if f != int(f) or int(f) not in KL_GRADES:
        raise ValueError(f"KL grade {value!r} is not one of 0..4")
    return int(f)

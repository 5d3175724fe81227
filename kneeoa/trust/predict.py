"""Apply a checkpoint's trust statistics to model outputs: calibrated probabilities, sets, OOD score and flag.

One TrustPredictor per (checkpoint, alpha, method) is built once: the set thresholds come from the stored
calibration knees, so any alpha works without refitting. Used by `grade`, `score`, the Python API and the
Slicer grading module; the field names are kneeoa.contracts.trust's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts import trust as names
from kneeoa.hierarchy import OA_THRESHOLD
from kneeoa.trust.calibration import calibrated
from kneeoa.trust.conformal import fit_sets, two_class
from kneeoa.trust.ood import combined_score, conformal_p_value
from kneeoa.trust.store import TrustStats


class TrustPredictor:
    def __init__(self, stats: TrustStats, alpha: float = names.DEFAULT_ALPHA, method: str = names.DEFAULT_METHOD,
                 class_conditional: bool = False, ood_alpha: float = names.DEFAULT_OOD_ALPHA):
        self.stats, self.alpha, self.method, self.ood_alpha = stats, float(alpha), method, float(ood_alpha)
        y = np.asarray(stats.cal_kl, dtype=np.int64)
        # the calibration knees go through the same calibration as a graded knee (`calibrated`)
        cal_kl, cal_oa = calibrated(stats.cal_kl_probs, stats.cal_oa_prob, stats.temperatures, stats.has_oa_head)
        self.kl_sets = None if cal_kl is None else fit_sets(cal_kl, y, alpha, method, class_conditional)
        oa_y = np.where(y >= 0, (y >= OA_THRESHOLD).astype(np.int64), -1)
        self.oa_sets = fit_sets(two_class(cal_oa), oa_y, alpha, "lac", class_conditional)

    def inspect(self, array: np.ndarray, affine: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(plain-words envelope findings, image features) of one volume, before the network runs."""
        from kneeoa.trust.envelope import check_envelope, volume_facts

        stats, features = volume_facts(array, affine)
        return check_envelope(stats, self.stats.envelope), features

    def __call__(self, kl_probs: np.ndarray | None, oa_prob: np.ndarray, embedding: np.ndarray | None,
                 envelope_warnings: list[list[str]] | None = None,
                 image_features: np.ndarray | None = None) -> list[dict[str, Any]]:
        """One dict of trust fields per knee (arrays in batch order); without image features the OOD p-value
        is the embedding detector's alone."""
        oa_prob = np.atleast_1d(np.asarray(oa_prob, dtype=np.float64))
        n = len(oa_prob)
        kl_cal, oa_cal = calibrated(None if kl_probs is None else np.atleast_2d(kl_probs), oa_prob,
                                    self.stats.temperatures, self.stats.has_oa_head)
        kl_member = self.kl_sets.sets(kl_cal) if (self.kl_sets is not None and kl_cal is not None) else None
        oa_member = self.oa_sets.sets(two_class(oa_cal))
        ood = self.stats.ood
        dist = ood.distance(embedding) if (ood is not None and embedding is not None) else None
        p_val = ood.p_value(dist) if dist is not None else None
        img = self.stats.image_ood
        img_dist = img.distance(image_features) if (img is not None and image_features is not None) else None
        if img_dist is not None and dist is not None and len(img.heldout) == len(ood.heldout):
            # either detector may fire: one conformal p-value of the combined score, reference knee by knee
            dims = [len(ood.mean), len(img.mean)]
            ref = combined_score([ood.heldout, img.heldout], dims)
            p_val = conformal_p_value(combined_score([dist, img_dist], dims), ref)
        warn = envelope_warnings or [[] for _ in range(n)]
        rows = []
        for i in range(n):
            row: dict[str, Any] = {names.OA_PROB_CAL: float(oa_cal[i]), names.SET_LEVEL: 1.0 - self.alpha,
                                   names.SET_METHOD: self.method,
                                   names.OA_SET: ",".join(names.OA_SET_NAMES[k] for k in np.flatnonzero(oa_member[i]))}
            if kl_member is not None:
                grades = [int(g) for g in np.flatnonzero(kl_member[i])]
                row.update({c: float(v) for c, v in zip(names.KL_PROB_CAL_COLUMNS, kl_cal[i])})
                row[names.PRED_KL_CAL] = int(kl_cal[i].argmax())
                contiguous = grades == list(range(grades[0], grades[-1] + 1))
                row[names.KL_SET] = names.set_text(grades[0], grades[-1]) if contiguous else ",".join(map(str, grades))
                row[names.KL_SET_LOW], row[names.KL_SET_HIGH] = grades[0], grades[-1]
                row[names.KL_SET_SIZE] = len(grades)
                row[names.KL_SET_GRADES] = grades
                row[names.KL_SET_LABEL] = names.set_label(grades, 1.0 - self.alpha)
            flagged = bool(warn[i])
            if dist is not None:
                row[names.OOD_SCORE] = float(dist[i])
            if img_dist is not None:
                row[names.OOD_IMAGE_SCORE] = float(img_dist[i])
            if p_val is not None:
                row[names.OOD_P] = float(p_val[i])
                flagged = flagged or bool(p_val[i] <= self.ood_alpha)
            row[names.OOD_FLAG] = int(flagged)
            row[names.ENVELOPE_WARNINGS] = "; ".join(warn[i])
            rows.append(row)
        return rows


def load_trust_predictor(checkpoint: str | Path, card: dict,
                         options: names.TrustOptions | None = None) -> TrustPredictor | None:
    """The checkpoint's TrustPredictor, None when the checkpoint was never calibrated."""
    from kneeoa.trust.store import read_trust

    stats = read_trust(checkpoint, card)
    if stats is None:
        return None
    o = options or names.TrustOptions()
    return TrustPredictor(stats, o.alpha, o.method, o.class_conditional, o.ood_alpha)


def table_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The trust fields that are table columns (the grade JSON also has the list and the label)."""
    return {k: v for k, v in row.items() if k in names.TRUST_COLUMNS}

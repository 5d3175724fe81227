"""Synthetic per-subject prediction CSVs in the `kneeoa predict` format, for tests, benchmarks and docs.

Nine files `<backbone>_<variant>_preds.csv` for one shared set of subjects and labels; each model gets
its own skill, so the Dual-vs-Single deltas are non-trivial. Not a model of anything: only the file
format and the label structure (KL 0..4, OA = KL >= 2) are real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kneeoa.contracts.catalog import paper_backbones, spellings
from kneeoa.contracts.prediction import Prediction
from kneeoa.contracts.schemas import pred_columns, preds_file_name
from kneeoa.contracts.vocab import VARIANT_TAGS, model_name, variant_from_tag
from kneeoa.data.tables import write_table
from kneeoa.hierarchy import N_KL, OA_THRESHOLD

PAPER_TEST_KL_COUNTS = (21, 12, 22, 28, 15)  # the 98 graded OAI-ZIB-CM test knees


def kl_labels(n_subjects: int) -> np.ndarray:
    """KL grades for n subjects in the paper's test proportions, sorted by grade (like the CMT-ID order)."""
    share = np.asarray(PAPER_TEST_KL_COUNTS, dtype=float) / sum(PAPER_TEST_KL_COUNTS)
    counts = np.floor(share * n_subjects).astype(int)
    for k in np.argsort(-(share * n_subjects - counts))[: n_subjects - counts.sum()]:
        counts[k] += 1
    return np.repeat(np.arange(N_KL), counts)


def write_synthetic_predictions(out_dir: str | Path, n_subjects: int = 98, seed: int = 0,
                                backbones: tuple[str, ...] | None = None,
                                first_id: int = 405) -> dict[tuple[str, str], Path]:
    """Write the prediction CSVs of every backbone x variant; returns {(backbone, variant): path}.

    Default backbones: the paper's three under the names of its files ('mamba' for nnMamba)."""
    if backbones is None:
        backbones = tuple(spellings(name)[0] for name in paper_backbones())
    rng = np.random.default_rng(seed)
    kl = kl_labels(n_subjects)
    oa = (kl >= OA_THRESHOLD).astype(int)
    ids = np.arange(first_id, first_id + n_subjects)
    written: dict[tuple[str, str], Path] = {}
    for backbone in backbones:
        for variant in VARIANT_TAGS:
            skill = rng.uniform(0.4, 1.6)
            kl_probs = _kl_probs(kl, skill, rng)
            oa_from_kl = kl_probs[:, OA_THRESHOLD:].sum(axis=1)
            if variant == "single_kl":
                prob_oa = oa_from_kl
            else:  # an OA head of its own: noisy logit around the truth
                prob_oa = 1.0 / (1.0 + np.exp(-(skill * 2.5 * (2 * oa - 1) + rng.normal(0, 2.0, n_subjects))))
            path = Path(out_dir) / preds_file_name(model_name(backbone, variant_from_tag(variant)))
            rows = []
            for i in range(n_subjects):
                kl_head = {} if variant == "single_oa" else {
                    "kl_probs": tuple(float(p) for p in kl_probs[i]), "pred_kl": int(kl_probs[i].argmax()),
                    "oa_prob_from_kl": float(oa_from_kl[i])}
                prediction = Prediction(oa_prob=float(prob_oa[i]), pred_oa=int(prob_oa[i] >= 0.5), **kl_head)
                rows.append({"CMT_ID": int(ids[i]), "label_kl": int(kl[i]), "label_oa": int(oa[i]),
                             **prediction.to_pred_row()})
            # the shared table writer: atomic, and quoted like every CSV we write (OWASP; numbers stay as they are)
            write_table(path, rows, pred_columns(variant, img_path=False))
            written[(backbone, variant)] = path
    return written


def _kl_probs(kl: np.ndarray, skill: float, rng: np.random.Generator) -> np.ndarray:
    # ordinal logits peaked at the true grade, blurred by noise: a noisy but better-than-chance grader
    grades = np.arange(N_KL)
    logits = -skill * (grades[None, :] - kl[:, None]) ** 2 / 2.0 + rng.normal(0, 1.0, (len(kl), N_KL))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


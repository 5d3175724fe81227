"""Fit a model's trust statistics on labelled knees it did not train on (used by `train` and `calibrate`).

The calibration knees are split in two halves, subject-grouped and KL-stratified: one fits the
temperatures, the other gives the conformal scores and the OOD p-value reference, so the set guarantee is
not weakened by reusing the knees that chose T. The Mahalanobis fit uses the training knees when given
(`train`), else the temperature half (`calibrate` without training data).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.case_ids import subject_of  # the one subject rule (also the CV folds')
from kneeoa.contracts.vocab import has_oa_head
from kneeoa.errors import InputError
from kneeoa.trust.calibration import fit_temperatures
from kneeoa.trust.envelope import fit_envelope, volume_facts
from kneeoa.trust.ood import fit_ood
from kneeoa.trust.store import TrustStats

MIN_SPLIT = 8  # fewer calibration knees: both halves are all of them (the card says so)


def grouped_holdout(cases: list, fraction: float, seed: int = 0) -> tuple[list, list]:
    """(kept, held out): about `fraction` of the knees, whole subjects, stratified by KL (scikit-learn)."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0.0 < fraction < 1.0:
        raise InputError(f"the calibration fraction must be between 0 and 1, got {fraction}")
    n_splits = max(2, int(round(1.0 / fraction)))
    if len(cases) < 2 * n_splits:
        raise InputError(f"too few graded cases ({len(cases)}) to hold out a fraction {fraction}")
    y = np.array([c.kl for c in cases])
    groups = [subject_of(c) for c in cases]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a grade rarer than n_splits: stratified as far as possible
        keep_idx, held_idx = next(splitter.split(np.zeros(len(cases)), y, groups))
    return [cases[i] for i in keep_idx], [cases[i] for i in held_idx]


def read_facts(cases: list) -> tuple[list[dict], np.ndarray]:
    """Acquisition stats and image features of cases (reads each image once)."""
    from kneeoa.data.volume import read_volume

    stats, feats = [], []
    for case in cases:
        vol = read_volume(case.image)
        st, feat = volume_facts(vol.array, vol.affine)
        stats.append(st)
        feats.append(feat)
    return stats, np.array(feats)


def fit_trust(model: Any, card: dict, cal_cases: list, input_shape: tuple[int, int, int], device: Any,
              fit_cases: list | None = None, calibrated_on: str = "", seed: int = 0, batch_size: int = 2,
              workers: int = 0, cache_dir: str | Path | None = None) -> TrustStats:
    """TrustStats from calibration knees (+ the training knees for the OOD fit and the envelope)."""
    from kneeoa.engine.inference import predict_cases

    graded = [c for c in cal_cases if c.kl is not None]
    if len(graded) < 4:
        raise InputError(f"calibration needs at least 4 graded knees, got {len(graded)}")
    if len(graded) >= MIN_SPLIT:
        temp_cases, conf_cases = grouped_holdout(graded, 0.5, seed)
    else:
        temp_cases = conf_cases = graded

    def run(cases: list) -> dict:
        return predict_cases(model, cases, input_shape, device, batch_size, workers, cache_dir)

    oa_head = has_oa_head((card.get("spec") or {}).get("variant"))
    t_res, c_res = run(temp_cases), run(conf_cases)
    temps = fit_temperatures(t_res["kl_probs"], t_res["oa_prob"], t_res["kl"], oa_head)
    fit_res = run(fit_cases) if fit_cases else t_res
    # with training knees to fit on, every calibration knee is held out from the fit: all are the reference
    ref_cases = [*temp_cases, *conf_cases] if fit_cases else conf_cases  # the order of ref_emb: knee by knee
    ref_emb = np.concatenate([t_res["embedding"], c_res["embedding"]]) if fit_cases else c_res["embedding"]
    ood = fit_ood(fit_res["embedding"], ref_emb)
    fit_stats, fit_feats = read_facts(fit_cases or temp_cases)
    _, ref_feats = read_facts(ref_cases)
    image_ood = fit_ood(fit_feats, ref_feats)
    envelope = fit_envelope(fit_stats)
    info = {"calibrated_on": calibrated_on, "n_temperature": len(temp_cases),
            "halves": "subject-grouped, KL-stratified" if len(graded) >= MIN_SPLIT else "same knees (too few)",
            "ood": {"n_fit": len(fit_cases) if fit_cases else len(temp_cases),
                    "fit_on": "training knees" if fit_cases else "calibration knees (temperature half)",
                    "reference": f"{len(ref_cases)} held-out calibration knees",
                    "detectors": "embedding and image-statistics Mahalanobis; p-value of max(d / sqrt(dim))"}}
    return TrustStats(temperatures=temps, has_oa_head=oa_head, cal_kl_probs=c_res["kl_probs"],
                      cal_oa_prob=c_res["oa_prob"], cal_kl=c_res["kl"], ood=ood, image_ood=image_ood,
                      envelope=envelope, info=info)

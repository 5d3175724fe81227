"""Evaluation of a checkpoint on a labelled split: the published per-subject CSV, a metrics CSV, embeddings.

Files in OUT (name = `<backbone>_<variant>` with underscores, e.g. `resnet3d_single_kl`), as in the paper's
`results/` folder:
    <name>_preds.csv       CMT_ID,img_path,label_kl,pred_kl,label_oa,prob_oa,pred_oa,prob_oa_from_kl,prob_kl_0..4
                           (Single-OA: CMT_ID,img_path,label_kl,label_oa,prob_oa,pred_oa)
    <name>_metrics.csv     one row: oa_auc, oa_acc, oa_f1 (+ kl_acc, kl_macro_f1, kl_macro_auc, kl_qwk, kl_bal_acc)
    <name>_trust.csv       calibrated checkpoints only: CMT_ID, label_kl + kneeoa.contracts.trust.TRUST_COLUMNS
    <name>_embeddings.npz  with embeddings=True: train_/test_ embedding, kl, case_id (+ true_severity), name
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.schemas import pred_columns, preds_file_name
from kneeoa.contracts.trust import TRUST_FILE_COLUMNS, TrustOptions, trust_file_name
from kneeoa.contracts.vocab import model_name
from kneeoa.errors import InputError
from kneeoa.utils.outputs import check_outputs


def predict(checkpoint: str | Path, data: str | Path, out_dir: str | Path, split: str = "test",
            embeddings: bool = False, labels: str | Path | None = None, device: str = "auto", batch_size: int = 2,
            workers: int = 0, cache_dir: str | Path | None = None, overwrite: bool = False,
            trust: TrustOptions | None = None) -> dict:
    """Predict the graded cases of `split`; returns {'predictions', 'metrics_csv', 'metrics', 'embeddings'}."""
    from kneeoa.data.cohort import load_cohort
    from kneeoa.data.tables import write_table
    from kneeoa.engine.devices import resolve_device
    from kneeoa.engine.inference import evaluation_metrics, input_shape_of, load_model, predict_cases

    out_dir = Path(out_dir)
    dev = resolve_device(device)
    model, card = load_model(checkpoint, dev)
    name = model_name(card["spec"]["backbone"], card["spec"]["variant"])
    variant = card["spec"]["variant"]
    from kneeoa.trust.predict import load_trust_predictor

    trusted = load_trust_predictor(checkpoint, card, trust)
    paths = {"predictions": out_dir / preds_file_name(name), "metrics_csv": out_dir / f"{name}_metrics.csv",
             "embeddings": out_dir / f"{name}_embeddings.npz" if embeddings else None,
             "trust": out_dir / trust_file_name(name) if trusted is not None else None}
    check_outputs(paths.values(), [checkpoint, labels], overwrite)
    cohort = load_cohort(data, labels=labels)
    cases = cohort.split(split)
    if not cases:
        raise InputError(f"no graded cases in split {split!r}", data)
    from kneeoa.utils import locks

    # one writer per model's prediction files: two predicts into one folder would mix their tables (taken
    # after the inputs are checked, so a bad table creates no output folder)
    with locks.exclusive(locks.lock_path_for(paths["predictions"]), paths["predictions"], "the predictions"):
        check_outputs(paths.values(), [checkpoint, labels], overwrite)  # again: another run may have written
        shape = input_shape_of(model, card)
        # the trust facts (acquisition check, image features) come from the feed's one read of each image,
        # as in `score` (TrustPredictor.inspect runs in the loader on the decoded volume)
        inspect = trusted.inspect if trusted is not None else None
        result, excluded = drop_nonfinite(predict_cases(model, cases, shape, dev, batch_size, workers, cache_dir,
                                                        inspect=inspect))
        rows = _pred_rows(cases, result)
        write_table(paths["predictions"], rows, pred_columns(variant))
        if trusted is not None:  # beside the published file, which keeps the paper's columns
            warned, feats = _trust_facts(trusted, cases, result)
            extra = trusted(result["kl_probs"], result["oa_prob"], result["embedding"], warned, feats)
            write_table(paths["trust"], [{"CMT_ID": r["CMT_ID"], "label_kl": r["label_kl"], **t}
                                         for r, t in zip(rows, extra)], TRUST_FILE_COLUMNS)
        metrics = evaluation_metrics(result)
        if excluded:
            metrics["n_excluded_nonfinite"] = len(excluded)
        write_table(paths["metrics_csv"], [{"model": name, "split": split, **metrics}],
                    ["model", "split", *metrics.keys()])
        if embeddings:
            train_cases = cohort.split("train") if split != "train" else cases
            train_result, _ = drop_nonfinite(predict_cases(model, train_cases, shape, dev, batch_size, workers, cache_dir))
            write_embeddings(paths["embeddings"], name, {"train": (train_cases, train_result), split: (cases, result)})
        return {**{k: v for k, v in paths.items()}, "metrics": metrics, "n": len(cases)}


def _trust_facts(trusted: Any, cases: list, result: dict[str, Any]) -> tuple[list[list[str]], np.ndarray]:
    """(envelope warnings, image features) per predicted knee, in result order: from the feed's read
    ('inspected'), or, on the cached path (`cache_dir`: preprocessed tensors from CohortDataset, the raw
    images never decoded), by reading each image once here (`read_facts`)."""
    if result.get("inspected") is not None:
        return [w for w, _f in result["inspected"]], np.array([f for _w, f in result["inspected"]])
    from kneeoa.trust.envelope import check_envelope
    from kneeoa.trust.fit import read_facts

    by_id = {c.case_id: c for c in cases}
    stats, feats = read_facts([by_id[i] for i in result["case_id"]])
    return [check_envelope(st, trusted.stats.envelope) for st in stats], feats


def drop_nonfinite(result: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Remove the cases whose model output is NaN/Inf (they have no grade), warning with their ids.

    They are left out of the predictions, the metrics (which then say `n_excluded_nonfinite`) and the
    embeddings: a NaN probability must never count as KL 0.
    """
    import warnings

    from kneeoa.engine.inference import NONFINITE_OUTPUT, finite_rows

    if result.get("oa_prob") is None or not len(result["case_id"]):
        return result, []
    keep = finite_rows(result)
    if keep.all():
        return result, []
    excluded = [cid for cid, ok in zip(result["case_id"], keep) if not ok]
    warnings.warn(f"{len(excluded)} case(s) left out of the predictions and metrics: {NONFINITE_OUTPUT} "
                  f"({', '.join(excluded[:5])}{' ...' if len(excluded) > 5 else ''})", stacklevel=2)
    kept = {k: (v[keep] if isinstance(v, np.ndarray) else v) for k, v in result.items()}
    for key in ("case_id", "inspected"):  # lists, one entry per case
        if result.get(key) is not None:
            kept[key] = [value for value, ok in zip(result[key], keep) if ok]
    return kept, excluded


def _cmt_id(case: Any) -> Any:
    return case.cmt_id if getattr(case, "cmt_id", None) is not None else case.case_id


def _pred_rows(cases: list, result: dict) -> list[dict]:
    from kneeoa.engine.inference import predictions
    from kneeoa.hierarchy import oa_from_kl

    by_id = {c.case_id: c for c in cases}
    rows = []
    for i, (case_id, prediction) in enumerate(zip(result["case_id"], predictions(result))):
        case = by_id[case_id]
        kl = int(result["kl"][i])
        row = {"CMT_ID": _cmt_id(case), "img_path": str(case.image), "label_kl": kl if kl >= 0 else "",
               "label_oa": int(oa_from_kl(kl)) if kl >= 0 else "", **prediction.to_pred_row()}
        rows.append(row)
    return rows


def _true_severity(cases: list) -> np.ndarray | None:
    values = []
    for case in cases:
        raw = (case.extra or {}).get("TrueSeverity")
        try:
            values.append(float(raw))
        except (TypeError, ValueError):
            values.append(np.nan)
    array = np.asarray(values, dtype=np.float64)
    return None if np.isnan(array).all() else array


def write_embeddings(path: Path, name: str, parts: dict[str, tuple[list, dict]]) -> Path:
    """The latent-analysis contract: <split>_embedding, _kl, _case_id (+ _true_severity), and `name`."""
    from kneeoa.utils.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {"name": np.array(name)}
    for split, (cases, result) in parts.items():
        by_id = {c.case_id: c for c in cases}
        ordered = [by_id[i] for i in result["case_id"]]
        arrays[f"{split}_embedding"] = result["embedding"].astype(np.float32)
        arrays[f"{split}_kl"] = result["kl"].astype(np.int64)
        # a fixed-width unicode array, so np.load works without allow_pickle
        arrays[f"{split}_case_id"] = np.array(result["case_id"], dtype=str)
        severity = _true_severity(ordered)
        if severity is not None:
            arrays[f"{split}_true_severity"] = severity
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path

"""Latent geometry (SPEC section 5): a train-fitted PCA of the embeddings and how PC1 orders severity.

Input: the engine's `<name>_embeddings.npz` (`train_embedding` (N,E), `train_kl`, `train_case_id`,
`test_embedding`, `test_kl`, `test_case_id`, optional `*_true_severity`, string `name` such as
`resnet3d_dual`). StandardScaler + PCA(2, random_state=0) are fitted on train only and test is
transformed, as the paper does. PC1's sign is arbitrary: we orient it so that it rises with KL on
the *training* labels (no test information), which leaves every |rho| unchanged and makes the
figures and the centroid order comparable across models.
"""

from __future__ import annotations

import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.vocab import VARIANT_TAGS
from kneeoa.errors import InputError
from kneeoa.hierarchy import N_KL, OA_THRESHOLD

SUMMARY_COLUMNS = ["name", "backbone", "variant", "n_train", "n_test", "dim", "evr_pc1", "evr_pc2",
                   "rho_pc1_kl", "abs_rho_pc1_kl", "abs_rho_pc1_oa", "probe_auroc_test", "probe_auroc_train",
                   "centroid_order", "centroid_monotone", "centroids_pc1", "abs_rho_pc1_true_severity"]
POINT_COLUMNS = ["name", "split", "case_id", "kl", "pc1", "pc2"]
_NAME_RE = re.compile(rf"^(?P<backbone>.+)_(?P<variant>{'|'.join(VARIANT_TAGS)})$")


@dataclass
class Embeddings:
    """One model's embeddings; kl = -1 where unknown, true_severity NaN where absent."""

    name: str
    train: np.ndarray
    train_kl: np.ndarray
    train_case_id: np.ndarray
    test: np.ndarray
    test_kl: np.ndarray
    test_case_id: np.ndarray
    train_true_severity: np.ndarray | None = None
    test_true_severity: np.ndarray | None = None


def read_embeddings(path: str | Path) -> Embeddings:
    """Load an embeddings npz (no pickle) and check its arrays agree in length."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated npz is a broken zip
        raise InputError(f"cannot read embeddings npz: {err}", path) from None
    required = ["train_embedding", "train_kl", "test_embedding", "test_kl"]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise InputError(f"missing array(s) {', '.join(missing)}", path)
    name = str(arrays["name"]) if "name" in arrays else re.sub(r"_embeddings$", "", path.stem)
    parts: dict[str, Any] = {"name": name}
    for split in ("train", "test"):
        emb = np.asarray(arrays[f"{split}_embedding"], dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise InputError(f"{split}_embedding must be a non-empty (N, E) array, got {emb.shape}", path)
        if not np.isfinite(emb).all():
            raise InputError(f"{split}_embedding holds NaN or infinite values", path)
        n = emb.shape[0]
        kl = np.asarray(arrays[f"{split}_kl"]).reshape(-1)
        ids = arrays.get(f"{split}_case_id", np.array([str(i) for i in range(n)]))
        severity = arrays.get(f"{split}_true_severity")
        for label, arr in (("kl", kl), ("case_id", ids), ("true_severity", severity)):
            if arr is not None and len(arr) != n:
                raise InputError(f"{split}_{label} has {len(arr)} entries but {split}_embedding has {n} rows", path)
        parts.update({split: emb, f"{split}_kl": kl.astype(np.int64), f"{split}_case_id": np.asarray(ids, dtype=str),
                      f"{split}_true_severity": None if severity is None else np.asarray(severity, dtype=np.float64)})
    if parts["train"].shape[1] != parts["test"].shape[1]:
        raise InputError(f"train and test embeddings differ in width ({parts['train'].shape[1]} vs "
                         f"{parts['test'].shape[1]})", path)
    return Embeddings(**parts)


def split_name(name: str) -> tuple[str, str]:
    """'resnet3d_dual' -> ('resnet3d', 'dual'); names without a known variant keep it empty."""
    match = _NAME_RE.match(name)
    return (match["backbone"], match["variant"]) if match else (name, "")


def analyse_embeddings(emb: Embeddings) -> dict[str, Any]:
    """Train-fitted PCA and the severity-axis numbers; returns the summary row plus PC coordinates."""
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(emb.train)
    n_comp = min(2, emb.train.shape[0], emb.train.shape[1])
    pca = PCA(n_components=n_comp, random_state=0).fit(scaler.transform(emb.train))
    train_pc = _two_columns(pca.transform(scaler.transform(emb.train)))
    test_pc = _two_columns(pca.transform(scaler.transform(emb.test)))
    graded_tr, graded_te = emb.train_kl >= 0, emb.test_kl >= 0
    if _spearman(spearmanr, train_pc[graded_tr, 0], emb.train_kl[graded_tr]) < 0:
        train_pc[:, 0], test_pc[:, 0] = -train_pc[:, 0], -test_pc[:, 0]
    kl_te = emb.test_kl[graded_te]
    pc1_te = test_pc[graded_te, 0]
    rho_kl = _spearman(spearmanr, pc1_te, kl_te)
    rho_oa = _spearman(spearmanr, pc1_te, (kl_te >= OA_THRESHOLD).astype(int))
    probe_test, probe_train = _oa_probe(LogisticRegression, train_pc[graded_tr, 0], emb.train_kl[graded_tr],
                                        pc1_te, kl_te)
    centroids = [float(pc1_te[kl_te == g].mean()) if np.any(kl_te == g) else np.nan for g in range(N_KL)]
    present = [g for g in range(N_KL) if np.isfinite(centroids[g])]
    steps = np.diff([centroids[g] for g in present])
    monotone = bool(len(present) > 1 and (np.all(steps > 0) or np.all(steps < 0)))
    severity_rho = np.nan
    if emb.test_true_severity is not None:
        ok = np.isfinite(emb.test_true_severity)
        severity_rho = abs(_spearman(spearmanr, test_pc[ok, 0], emb.test_true_severity[ok]))
    evr = list(pca.explained_variance_ratio_) + [np.nan] * (2 - n_comp)
    backbone, variant = split_name(emb.name)
    row = {
        "name": emb.name, "backbone": backbone, "variant": variant, "n_train": int(emb.train.shape[0]),
        "n_test": int(emb.test.shape[0]), "dim": int(emb.train.shape[1]), "evr_pc1": float(evr[0]),
        "evr_pc2": float(evr[1]), "rho_pc1_kl": rho_kl, "abs_rho_pc1_kl": abs(rho_kl), "abs_rho_pc1_oa": abs(rho_oa),
        "probe_auroc_test": probe_test, "probe_auroc_train": probe_train,
        # KL grades in the order of their mean PC1 (PC1 oriented to rise with KL on train)
        "centroid_order": "<".join(str(g) for g in sorted(present, key=lambda g: centroids[g])),
        "centroid_monotone": monotone,
        "centroids_pc1": ";".join("" if not np.isfinite(c) else f"{c:.4f}" for c in centroids),
        "abs_rho_pc1_true_severity": float(severity_rho),
    }
    return {"row": row, "train_pc": train_pc, "test_pc": test_pc}


def analyse_files(paths: list[str | Path]) -> list[dict[str, Any]]:
    """`analyse_embeddings` per npz (folders are searched for `*_embeddings.npz`), with the data for figures."""
    results = []
    for path in expand_inputs(paths):
        emb = read_embeddings(path)
        out = analyse_embeddings(emb)
        backbone, variant = out["row"]["backbone"], out["row"]["variant"]
        results.append({**out, "embeddings": emb, "path": path, "backbone": backbone, "variant": variant,
                        "test_kl": emb.test_kl, "abs_rho_pc1_kl": out["row"]["abs_rho_pc1_kl"]})
    return results


def point_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-case PC coordinates (train and test) for tables and the Slicer cohort plot."""
    rows = []
    for res in results:
        emb: Embeddings = res["embeddings"]
        for split, pcs, kls, ids in (("train", res["train_pc"], emb.train_kl, emb.train_case_id),
                                     ("test", res["test_pc"], emb.test_kl, emb.test_case_id)):
            for pc, kl, case_id in zip(pcs, kls, ids):
                rows.append({"name": emb.name, "split": split, "case_id": str(case_id),
                             "kl": int(kl) if kl >= 0 else "", "pc1": float(pc[0]), "pc2": float(pc[1])})
    return rows


def write_latent_outputs(results: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """latent_summary.csv (a row per model), latent_points.csv (PC1/PC2 per case) and pca_grid.png."""
    from kneeoa.analysis.plots import pca_grid, save_figure
    from kneeoa.data.tables import write_table

    out_dir = Path(out_dir)
    from kneeoa.utils import locks

    paths = {"summary": out_dir / "latent_summary.csv", "points": out_dir / "latent_points.csv",
             "figure": out_dir / "pca_grid.png"}
    # one writer per folder: two runs would leave the summary of one beside the points of the other
    with locks.exclusive(locks.lock_path_for(paths["summary"]), out_dir, "the latent outputs"):
        write_table(paths["summary"], [r["row"] for r in results], SUMMARY_COLUMNS)
        write_table(paths["points"], point_rows(results), POINT_COLUMNS)
        save_figure(pca_grid(results), paths["figure"])
    return paths


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders contribute their `*_embeddings.npz` (sorted)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(path.glob("*_embeddings.npz")) or sorted(path.glob("**/*_embeddings.npz"))
            if not files:
                raise InputError("no *_embeddings.npz in this folder", path)
            found.extend(files)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError("no such embeddings file or folder", path)
    return found


def _two_columns(pcs: np.ndarray) -> np.ndarray:
    out = np.zeros((pcs.shape[0], 2))
    out[:, : pcs.shape[1]] = pcs
    return out


def _spearman(spearmanr, a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")  # undefined for a constant input
    return float(spearmanr(a, b).correlation)


def _oa_probe(logistic, pc1_train, kl_train, pc1_test, kl_test) -> tuple[float, float]:
    """A 1-D logistic OA probe fitted on train PC1: (test AUROC, train AUROC); NaN when undefined."""
    from kneeoa.analysis.trapezoid_auc import auc_trapezoid

    oa_train, oa_test = (kl_train >= OA_THRESHOLD).astype(int), (kl_test >= OA_THRESHOLD).astype(int)
    if len(np.unique(oa_train)) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = logistic(max_iter=2000).fit(pc1_train.reshape(-1, 1), oa_train)
    test_auc = auc_trapezoid(oa_test, probe.predict_proba(pc1_test.reshape(-1, 1))[:, 1]) if len(pc1_test) else np.nan
    train_auc = auc_trapezoid(oa_train, probe.predict_proba(pc1_train.reshape(-1, 1))[:, 1])
    return float(test_auc), float(train_auc)

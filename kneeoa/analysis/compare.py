"""Dual vs Single: the 18-test protocol over the nine per-subject prediction CSVs (SPEC section 4).

Files are `<backbone>_<variant>_preds.csv` (variant single_oa | single_kl | dual) with columns
`CMT_ID, label_kl, pred_kl, label_oa, prob_oa, pred_oa, prob_oa_from_kl, prob_kl_0..4` (KL columns
absent for single_oa). Tests run in the published order - backbone (ResNet3D, M3T, nnMamba), then OA
(AUC, Acc, F1; Dual vs Single-OA), then KL (M-AUC, Acc, M-F1; Dual vs Single-KL) - all drawing from
one `default_rng(seed)`. A test whose files are missing is skipped, but its draws are still taken
from the generator, so every row that is run equals the full protocol's row.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.analysis.resampling import metric_value
from kneeoa.analysis.stats import benjamini_hochberg, mcnemar, paired_bootstrap
from kneeoa.contracts.catalog import paper_backbones, spellings
from kneeoa.contracts.schemas import ID_COLUMNS, STATS_COLUMNS
from kneeoa.contracts.schemas import PRED_KL_PROB_COLUMNS as KL_PROB_COLUMNS
from kneeoa.contracts.vocab import VARIANT_TAGS
from kneeoa.errors import InputError
from kneeoa.progress import Progress
from kneeoa.utils.cells import number

# SPEC order; the paper's files call nnMamba "mamba", our engine may write "nnmamba"
CANONICAL_BACKBONES = tuple(spellings(name) for name in paper_backbones())
FDR_LEVEL = 0.05
_FILE_RE = re.compile(rf"^(?P<backbone>.+)_(?P<variant>{'|'.join(VARIANT_TAGS)})_preds\.csv$")


@dataclass(frozen=True)
class ProtocolTest:
    task: str  # "OA" | "KL"
    metric: str  # name in the table: AUC, Acc, F1, M-AUC, M-F1
    single: str  # the single-head variant compared with dual
    kind: str  # metric kernel in kneeoa.analysis.resampling
    label: str  # label column
    score: tuple[str, ...]  # score column(s): probabilities for AUCs, predictions otherwise


PROTOCOL = (
    ProtocolTest("OA", "AUC", "single_oa", "auc", "label_oa", ("prob_oa",)),
    ProtocolTest("OA", "Acc", "single_oa", "acc", "label_oa", ("pred_oa",)),
    ProtocolTest("OA", "F1", "single_oa", "f1", "label_oa", ("pred_oa",)),
    ProtocolTest("KL", "M-AUC", "single_kl", "macro_auc", "label_kl", KL_PROB_COLUMNS),
    ProtocolTest("KL", "Acc", "single_kl", "acc", "label_kl", ("pred_kl",)),
    ProtocolTest("KL", "M-F1", "single_kl", "macro_f1", "label_kl", ("pred_kl",)),
)


@dataclass
class Predictions:
    """One prediction CSV, rows sorted by subject id; numeric columns as float arrays."""

    path: Path
    ids: list[str]
    columns: dict[str, np.ndarray]

    def get(self, names: tuple[str, ...] | str) -> np.ndarray:
        names = (names,) if isinstance(names, str) else names
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)}", self.path)
        arrays = [self.columns[n] for n in names]
        bad = [n for n, a in zip(names, arrays) if np.isnan(a).any()]
        if bad:
            raise InputError(f"blank or non-numeric values in column(s) {', '.join(bad)}", self.path)
        return arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=1)


@dataclass
class StatsResult:
    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)  # human-readable "backbone task: reason"
    files: dict[tuple[str, str], Path] = field(default_factory=dict)


def find_prediction_files(preds_dir: str | Path) -> dict[tuple[str, str], Path]:
    """{(backbone, variant): path} for every `<backbone>_<variant>_preds.csv` in the folder."""
    folder = Path(preds_dir)
    if not folder.is_dir():
        raise InputError("not a folder of prediction CSVs", folder)
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.glob("*_preds.csv")):
        match = _FILE_RE.match(path.name)
        if match:
            found[(match["backbone"], match["variant"])] = path
    if not found:
        raise InputError("no <backbone>_<variant>_preds.csv files (variant single_oa, single_kl or dual)", folder)
    for names in CANONICAL_BACKBONES:
        present = sorted({b for b, _ in found if b in names})
        if len(present) > 1:
            raise InputError(f"both {' and '.join(present)} prediction files: keep one name for nnMamba", folder)
    return found


def subject_order(subject_id: object) -> tuple:
    """Sort key of a prediction file's subject id: numerically, as the reference sorts CMT_ID; non-numeric ids
    after them in text order (also the CV study's pooled files)."""
    text = str(subject_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def read_predictions(path: str | Path) -> Predictions:
    """Read one prediction CSV (sorted by CMT_ID / case_id); non-numeric cells become NaN."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read prediction CSV: {err}", path) from None
    id_col = next((c for c in ID_COLUMNS if c in header), None)
    if id_col is None:
        raise InputError(f"no subject id column ({' or '.join(ID_COLUMNS)})", path)
    ids = [str(r[id_col]).strip() for r in records]
    if not ids:
        raise InputError("no rows", path)
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise InputError(f"subject id(s) listed twice: {', '.join(duplicated[:5])}", path)
    order = sorted(range(len(ids)), key=lambda i: subject_order(ids[i]))
    columns = {c: np.array([number(records[i].get(c)) for i in order]) for c in header if c != id_col}
    return Predictions(path, [ids[i] for i in order], columns)


def compare_dual_vs_single(preds_dir: str | Path, n_resamples: int = 10_000, seed: int = 42,
                           chunk_size: int = 2_000) -> StatsResult:
    """Run the Dual-vs-Single protocol on a folder of prediction CSVs; rows carry BH q-values over the family."""
    files = find_prediction_files(preds_dir)
    tables = {key: read_predictions(path) for key, path in files.items()}
    n = _check_pairing(tables)
    slots = _backbone_slots({b for b, _ in files})
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    with Progress("stats", total=len(slots) * len(PROTOCOL), unit="test") as progress:
        for slot_name, backbone in slots:
            for task in ("OA", "KL"):
                tests = [t for t in PROTOCOL if t.task == task]
                needed = ("dual", tests[0].single)
                missing = [v for v in needed if (backbone, v) not in tables]
                if missing:
                    skipped.append(f"{slot_name} {task}: no {' or '.join(missing)} predictions")
                    for _ in tests:  # keep later rows identical to the full protocol's
                        _burn(rng, n, n_resamples, chunk_size)
                        progress.update(1)
                    continue
                dual, single = tables[(backbone, "dual")], tables[(backbone, tests[0].single)]
                for test in tests:
                    rows.append(_run_test(test, backbone, dual, single, n, n_resamples, rng, chunk_size))
                    progress.update(1, test=f"{backbone} {task} {test.metric}")
    add_q_values(rows)
    return StatsResult(rows, skipped, files)


def add_q_values(rows: list[dict[str, Any]]) -> None:
    """Benjamini-Hochberg q over the family `rows` (their `p_value`s) and the FDR_LEVEL verdict, in place
    (also the CV study's per-seed and combined families)."""
    q = benjamini_hochberg([r["p_value"] for r in rows])
    for row, q_value in zip(rows, q):
        row["q_value_BH"] = float(np.round(q_value, 6))
        row["sig_fdr_0.05"] = bool(row["q_value_BH"] < FDR_LEVEL)


def write_stats_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """The stats table with exactly STATS_COLUMNS (.csv or .xlsx), atomically; NaN is written blank as pandas does."""
    from kneeoa.data.tables import write_table

    return write_table(path, rows, STATS_COLUMNS)


def _run_test(test: ProtocolTest, backbone: str, dual: Predictions, single: Predictions, n: int,
              n_resamples: int, rng: np.random.Generator, chunk_size: int) -> dict[str, Any]:
    y = dual.get(test.label).astype(int)
    score_dual, score_single = dual.get(test.score), single.get(test.score)
    if test.kind != "auc" and test.kind != "macro_auc":
        score_dual, score_single = score_dual.astype(int), score_single.astype(int)
    v_dual, v_single = metric_value(test.kind, y, score_dual), metric_value(test.kind, y, score_single)
    boot = paired_bootstrap(y, score_dual, score_single, test.kind, n_resamples=n_resamples, rng=rng,
                            chunk_size=chunk_size)
    p_value, test_name, table = boot.p_value, "paired_bootstrap", ""
    if test.task == "OA" and test.metric == "Acc":
        result = mcnemar(score_dual == y, score_single == y)
        p_value, test_name, table = result.p_value, f"mcnemar_{result.test}", json.dumps(result.table)
    return {
        "backbone": backbone, "task": test.task, "metric": test.metric,
        "single": _round(v_single), "dual": _round(v_dual), "delta": _round(v_dual - v_single),
        "ci_lo": _round(boot.ci_lo), "ci_hi": _round(boot.ci_hi), "p_value": float(p_value),
        "test": test_name, "mcnemar_table": table, "n_subjects": n,
        # not CSV columns: the bootstrap distribution for figures and checks
        "deltas": boot.deltas, "n_valid_resamples": boot.n_valid,
    }


def _check_pairing(tables: dict[tuple[str, str], Predictions]) -> int:
    """Every file lists the same subjects with the same labels; returns the number of subjects."""
    first_key = sorted(tables)[0]
    first = tables[first_key]
    for table in tables.values():
        if table.ids != first.ids:
            only_here = sorted(set(table.ids) - set(first.ids))[:5]
            only_there = sorted(set(first.ids) - set(table.ids))[:5]
            raise InputError(f"subjects do not pair up with {first.path.name}: only here {only_here}, "
                             f"only there {only_there}", table.path)
    for label in ("label_oa", "label_kl"):
        with_label = [t for t in tables.values() if label in t.columns]
        for table in with_label[1:]:
            a, b = with_label[0].columns[label], table.columns[label]
            differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
            if differ.any():
                bad = [table.ids[i] for i in np.flatnonzero(differ)[:5]]
                raise InputError(f"{label} differs from {with_label[0].path.name} for subject(s) {bad}", table.path)
    return len(first.ids)


def _backbone_slots(present: set[str]) -> list[tuple[str, str | None]]:
    """(name, backbone or None if absent): the three paper backbones in SPEC order, then any other by name."""
    slots: list[tuple[str, str | None]] = []
    for names in CANONICAL_BACKBONES:
        found = next((b for b in names if b in present), None)
        slots.append((found or "/".join(names), found))
    known = {b for names in CANONICAL_BACKBONES for b in names}
    return slots + [(b, b) for b in sorted(present - known)]


def _burn(rng: np.random.Generator, n: int, n_resamples: int, chunk_size: int) -> None:
    for start in range(0, n_resamples, chunk_size):
        rng.integers(0, n, size=(min(chunk_size, n_resamples - start), n))


def _round(value: float) -> float:
    return round(float(value), 6)

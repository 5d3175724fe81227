"""Saliency for many cases: one NIfTI map per case (atomic) and a cartilage-overlap table with a mean row.

Used by `kneeoa saliency` and the study. A case that fails (unreadable image, mask on another grid)
is recorded and the job goes on; maps already written stay.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.case_ids import saliency_map_name
from kneeoa.contracts.vocab import CARTILAGE_LABELS, MASK_LABELS
from kneeoa.errors import ConfigError, KneeOAError

OVERLAP_CSV = "saliency_overlap.csv"


@dataclass(frozen=True)
class SaliencyCase:
    """One image to explain, with its optional cartilage mask and KL grade."""

    case_id: str
    image: Path
    mask: Path | None = None
    kl: int | None = None


def parse_labels(text: str | Any) -> tuple[int, ...]:
    """'2,4,5' -> (2, 4, 5); raises ConfigError on anything else."""
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    try:
        labels = tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ConfigError(f"--labels must be comma-separated integers, got {text!r}") from None
    if not labels or any(v <= 0 for v in labels):
        raise ConfigError(f"--labels needs positive mask labels, got {text!r}")
    return labels


def run_saliency_cases(model: Any, cases: list[SaliencyCase], out_dir: str | Path, method: str = "smoothgrad",
                       target: str | int = "auto", labels: tuple[int, ...] = CARTILAGE_LABELS,
                       input_shape: tuple[int, int, int] | None = None, n_samples: int = 8,
                       noise_std: float = 0.05, batch_size: int | None = None,
                       ks: tuple[float, ...] | None = None, segmenter: str | Path | None = None,
                       overwrite: bool = False) -> dict[str, Any]:
    """Write `<case_id>_saliency.nii.gz` per case and, if any case has a mask, the overlap CSV.

    `target='both'` (Dual models, as the paper's export script) writes `<case_id>_saliency_kl.nii.gz` and
    `<case_id>_saliency_oa.nii.gz` and one overlap row per map; `maps` is then keyed `<case_id>_kl` / `_oa`.
    `ks`: the top-k fractions of the overlap table (default 1 %, 5 %, 10 %). `segmenter`: cases without a mask
    are segmented (the label map is written as `<case_id>_seg.nii.gz`); every overlap row says its mask_source.
    Returns {"maps": {case_id: path}, "overlap_csv": path | None, "rows": [...], "failures": {case_id: message}}.
    """
    from kneeoa.analysis.overlap import DEFAULT_KS
    from kneeoa.analysis.saliency import check_options
    from kneeoa.contracts.vocab import SALIENCY_BOTH

    both = target == SALIENCY_BOTH
    check_options(method, "kl" if both else target, n_samples, noise_std, batch_size)
    if both and getattr(getattr(model, "spec", None), "variant", None) != "dual":
        raise ConfigError("target 'both' needs a Dual model (a KL and an OA head)")
    targets = ("kl", "oa") if both else (target,)
    check_saliency_outputs(out_dir, cases, overwrite, both)
    with folder_lock(out_dir):  # two jobs saving maps into one folder would mix their maps and overlap rows
        check_saliency_outputs(out_dir, cases, overwrite, both)  # again: another job may have written meanwhile
        return _run_cases(model, cases, Path(out_dir), method, targets, labels, input_shape, n_samples, noise_std,
                          batch_size, tuple(ks or DEFAULT_KS), segmenter, both)


def folder_lock(out_dir: str | Path, shard: tuple[int, int] | None = None) -> AbstractContextManager[Path]:
    """The writer lock of a saliency folder (`kneeoa saliency`, `score --saliency`; shards of one score run
    share the folder, each case's map is written by one shard): `.saliency_overlap.csv.lock` inside it."""
    from kneeoa.utils import locks

    return locks.sharded(out_dir, shard, "the saliency folder", named_after=Path(out_dir) / OVERLAP_CSV)


def _run_cases(model: Any, cases: list[SaliencyCase], out_dir: Path, method: str, targets: tuple,
               labels: tuple[int, ...], input_shape: tuple[int, int, int] | None, n_samples: int, noise_std: float,
               batch_size: int | None, ks: tuple[float, ...], segmenter: str | Path | None,
               both: bool) -> dict[str, Any]:
    from kneeoa.analysis.saliency import explain
    from kneeoa.data.volume import read_volume, write_nifti
    from kneeoa.progress import Progress

    out_dir.mkdir(parents=True, exist_ok=True)
    maps: dict[str, Path] = {}
    rows: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    from kneeoa.contracts.segmentation import MASK_SOURCE_COLUMN
    from kneeoa.segmentation.auto import MaskSource

    masks = MaskSource(segmenter, getattr(next(model.parameters(), None), "device", "cpu"), out_dir)
    masks.check()
    with Progress("saliency", total=len(cases), unit="case") as progress:
        for case in cases:
            try:
                image = read_volume(case.image)
                mask, source = masks.mask_for(image, case.mask, case.case_id)
                metrics: dict[str, Any] = {}
                for one in targets:
                    result = explain(model, image, method, one, input_shape, n_samples, noise_std, batch_size)
                    key = f"{case.case_id}_{result.head}" if both else case.case_id
                    path = write_nifti(out_dir / saliency_map_name(case.case_id, result.head if both else None),
                                       result.volume.array, result.volume.affine)
                    maps[key] = Path(path)
                    if mask is not None:
                        row = overlap_row(case, result.volume.array, mask, labels, f"{result.head}:{result.index}", ks)
                        row[MASK_SOURCE_COLUMN] = source
                        rows.append(row)
                        metrics = {k: v for k, v in row.items() if k.startswith("mass")}
                progress.update(1, case=case.case_id, **metrics)
            except KneeOAError as err:
                failures[case.case_id] = str(err)
                progress.log(f"saliency: {case.case_id} failed: {err}")
                progress.update(1, case=case.case_id, failed=True)
    overlap_csv = write_overlap_table(out_dir / OVERLAP_CSV, rows) if rows else None
    return {"maps": maps, "overlap_csv": overlap_csv, "rows": rows, "failures": failures}


def check_saliency_outputs(out_dir: str | Path, cases: list[SaliencyCase], overwrite: bool, both: bool = False) -> None:
    """The maps and overlap table of a run: never an input, existing ones only with `overwrite`."""
    from kneeoa.utils.outputs import check_outputs

    folder = Path(out_dir)
    heads = ("kl", "oa") if both else (None,)
    outputs = [folder / saliency_map_name(c.case_id, h) for c in cases for h in heads] + [folder / OVERLAP_CSV]
    check_outputs(outputs, [p for c in cases for p in (c.image, c.mask)], overwrite)


def parse_topk(text: str | Any) -> tuple[float, ...]:
    """'1,5,10' (percent of all voxels) -> (0.01, 0.05, 0.1); ConfigError on anything else."""
    try:
        values = tuple(float(p) for p in str(text).replace(" ", "").split(",") if p)
    except ValueError:
        raise ConfigError(f"--topk must be comma-separated percentages, got {text!r}") from None
    if not values or any(not 0 < v <= 100 for v in values):
        raise ConfigError(f"--topk percentages must be in (0, 100], got {text!r}")
    return tuple(v / 100.0 for v in values)


def overlap_row(case: SaliencyCase, saliency_ijk: np.ndarray, mask_ijk: np.ndarray, labels: tuple[int, ...],
                target: str, ks: tuple[float, ...] | None = None) -> dict[str, Any]:
    """One CSV row: case, KL, explained logit and the flattened `saliency_overlap` metrics."""
    from kneeoa.analysis.overlap import DEFAULT_KS, saliency_overlap

    metrics = saliency_overlap(saliency_ijk, mask_ijk, labels=labels, ks=tuple(ks or DEFAULT_KS),
                               source=case.mask if case.mask is not None else case.case_id)
    row: dict[str, Any] = {"case_id": case.case_id, "kl": "" if case.kl is None else int(case.kl), "target": target}
    row.update(_flatten(metrics))
    return row


def append_overlap(out_dir: Path, case_id: str, saliency_ijk: np.ndarray, mask_ijk: np.ndarray,
                   mask_source: str) -> Path:
    """Append one case's overlap row (default labels and top-k) to OUT/saliency_overlap.csv, creating it with
    its header first; for jobs that go case by case (`score --saliency --segmenter`). Returns the table."""
    from kneeoa.contracts.segmentation import MASK_SOURCE_COLUMN
    from kneeoa.utils.atomic import append_line, create_once

    row = overlap_row(SaliencyCase(case_id, Path(case_id)), saliency_ijk, mask_ijk, CARTILAGE_LABELS, "auto")
    row[MASK_SOURCE_COLUMN] = mask_source

    def line(values: list) -> str:
        from kneeoa.utils.cells import csv_line, quote_formula

        return csv_line([quote_formula(v) for v in values])  # a case id is never a live formula (OWASP)

    path = Path(out_dir) / OVERLAP_CSV
    create_once(path, line(list(row)))  # the header once, atomically: shards appending to one folder never race
    append_line(path, line([row[k] for k in row]))
    return path


def write_overlap_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows plus a `mean` row (NaN-aware mean of each numeric column) as CSV, atomically."""
    from kneeoa.data.tables import write_table

    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    from kneeoa.contracts.segmentation import MASK_SOURCE_COLUMN

    mean: dict[str, Any] = {"case_id": "mean", "kl": "", "target": "", MASK_SOURCE_COLUMN: ""}
    for col in columns:
        if col in mean:
            continue
        values = [row.get(col) for row in rows]
        numbers = [float(v) for v in values if _is_number(v) and not math.isnan(float(v))]
        mean[col] = float(np.mean(numbers)) if numbers else float("nan")
    write_table(path, [*rows, mean], columns)
    return path


def _read_mask(path: Path, image: Any) -> np.ndarray:
    from kneeoa.data.volume import check_labels, check_same_grid, read_volume

    mask = read_volume(path, is_label=True)
    check_same_grid(image, mask)  # overlap voxel by voxel only makes sense on the image's own grid
    check_labels(mask, MASK_LABELS)  # another labelling scheme would silently give meaningless compartments
    return np.asarray(mask.array)


def _flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}_"))
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            flat[name] = value.item()
        else:
            flat[name] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)

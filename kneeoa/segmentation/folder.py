"""`segment_file` and `segment_folder`: label maps on each image's own grid, with thickness beside them.

Folder mode works like `kneeoa score`: one complete CSV row per case appended as soon as it is done
(OUT/segmentations.csv, columns `SEGMENT_COLUMNS`), unreadable volumes become error rows and the job goes
on, `resume` skips cases already done, `shard=(i, n)` segments every n-th case. Label maps are written
atomically as OUT/<case_id>.nii.gz (nnU-Net's label naming, so `evaluate-seg` pairs them with labelsTs/).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kneeoa.contracts.case_ids import case_id_from_name  # `oaizib_001_0000.nii.gz` -> `oaizib_001`
from kneeoa.contracts.segmentation import SEGMENT_COLUMNS
from kneeoa.errors import ConfigError, InputError, KneeOAError
from kneeoa.utils.cells import csv_line, quote_formula

TABLE_NAME = "segmentations.csv"


def format_row(row: dict) -> str:
    values = []
    for col in SEGMENT_COLUMNS:
        value = row.get(col)
        if value is None:
            values.append("")
        elif isinstance(value, float):
            values.append("" if value != value else f"{value:.6g}")  # NaN (no plate) -> empty cell
        else:
            values.append(quote_formula(" ".join(str(value).split())))  # never a live formula (OWASP)
    return csv_line(values)


def read_segment_table(path: str | Path) -> list[dict]:
    """Complete rows of a segmentations table (a line cut by a hard kill is skipped): the scores table's reader."""
    from kneeoa.engine.score_io import read_table

    return read_table(path, SEGMENT_COLUMNS, "segmentations")


def segment_one(model: Any, card: dict, image_path: str | Path, out_path: str | Path, device: Any,
                stage: Any = None, knee_side: str | None = None) -> dict:
    """Segment one image into `out_path`; returns the table row (thickness from the automatic mask).
    `stage(name)` is told each step ('read', 'segment', 'write', 'thickness') as it finishes."""
    from kneeoa.data.volume import read_volume, write_nifti
    from kneeoa.segmentation.infer import segment_volume
    from kneeoa.segmentation.thickness import compartment_thickness

    note = stage or (lambda name: None)
    t0 = time.perf_counter()
    volume = read_volume(image_path)
    note("read")
    labels = segment_volume(model, card, volume, device, knee_side=knee_side)
    note("segment")
    write_nifti(out_path, labels, volume.affine, is_label=True)
    note("write")
    thickness = compartment_thickness(labels, volume.spacing_mm)
    note("thickness")
    return {"case_id": case_id_from_name(image_path), "path": str(image_path), "status": "ok", "error": "",
            "seg_path": str(out_path), "knee_side": knee_side or "", "seconds": round(time.perf_counter() - t0, 3), **thickness}


SINGLE_STAGES = ("read", "segment", "write", "thickness")


def segment_file(image: str | Path, checkpoint: str | Path, out: str | Path, device: str = "auto",
                 overwrite: bool = False, result_json: str | Path | None = None, knee_side: str | None = None) -> dict:
    """Segment one image file (or DICOM series folder) into the label map `out` (.nii.gz); with `result_json`
    the row (thickness, time, the segmenter's card) is also written there as JSON (what Slicer reads)."""
    from kneeoa.engine.devices import resolve_device
    from kneeoa.progress import Progress
    from kneeoa.segmentation.checkpoint import load_segmenter
    from kneeoa.utils.atomic import atomic_write_text
    from kneeoa.utils.outputs import check_outputs

    out = Path(out)
    if not str(out).endswith((".nii.gz", ".nii")):
        raise ConfigError("the label map must be a .nii.gz (or .nii) file", out)
    check_outputs([out], [image], overwrite, what="the label map")
    dev = resolve_device(device)
    model, card = load_segmenter(checkpoint, dev)
    with Progress("segment", total=len(SINGLE_STAGES), unit="step") as bar:
        row = segment_one(model, card, image, out, dev, stage=lambda name: bar.update(1, stage=name),
                          knee_side=knee_side)
    if result_json is not None:
        from kneeoa.utils import strict_json

        atomic_write_text(result_json, strict_json.dumps({**row, "card": card}, indent=1) + "\n")
    return row


def segment_folder(folder: str | Path, checkpoint: str | Path, out_dir: str | Path, resume: bool = False,
                   overwrite: bool = False, shard: str | tuple[int, int] | None = None,
                   device: str = "auto", knee_sides: dict[str, str] | None = None) -> dict:
    """Segment every volume of `folder` into `out_dir`; returns {'table', 'segmented', 'errors', 'skipped', 'total'}.

    Knee sides (for the medial/lateral plates) come from `knee_sides` (case id -> side), else from the
    cohort's own table (OAI-ZIB-CM kneeSideInfo.csv); a case without one keeps the network's labels."""
    from kneeoa.engine.devices import resolve_device
    from kneeoa.engine.score import list_cases, parse_shard
    from kneeoa.progress import Progress
    from kneeoa.segmentation.checkpoint import load_segmenter
    from kneeoa.utils.atomic import append_line, atomic_write_text

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    out_dir = Path(out_dir)
    # one id per knee whatever the image naming: nnU-Net's `<id>_0000` images give `<id>`
    items = [(case_id_from_name(cid), path) for cid, path in list_cases(folder)]
    sides = dict(knee_sides) if knee_sides is not None else cohort_knee_sides(folder)
    inputs = {Path(p).resolve() for _, p in items}
    if out_dir.resolve() in {p.parent for p in inputs}:
        raise ConfigError("the output folder is an input folder; choose another --out", out_dir)
    table = out_dir / TABLE_NAME
    if table.exists() and not (resume or overwrite):
        raise ConfigError("already holds segmentations; pass --resume to continue or --overwrite to replace",
                          out_dir)
    shard_ = parse_shard(shard)
    dev = resolve_device(device)
    model, card = load_segmenter(checkpoint, dev)  # a bad checkpoint fails before any output is touched
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite or not table.exists():
        atomic_write_text(table, csv_line(SEGMENT_COLUMNS))
    done = {r["case_id"] for r in read_segment_table(table) if r["status"] == "ok"} if resume else set()
    mine = items if shard_ is None else [it for k, it in enumerate(items) if k % shard_[1] == shard_[0]]
    todo = [it for it in mine if it[0] not in done]
    counts = {"segmented": 0, "errors": 0}
    with Progress("segment", total=len(todo), unit="volume") as bar:
        for case_id, path in todo:
            try:
                row = segment_one(model, card, path, out_dir / f"{case_id}.nii.gz", dev,
                                  knee_side=sides.get(case_id))
                row["case_id"] = case_id
            except KneeOAError as err:
                row = {"case_id": case_id, "path": path, "status": "error", "error": str(err)}
            except Exception as err:  # a batch job records any per-case failure and goes on
                row = {"case_id": case_id, "path": path, "status": "error", "error": f"{type(err).__name__}: {err}"}
            append_line(table, format_row(row))
            counts["errors" if row["status"] == "error" else "segmented"] += 1
            bar.update(1, status=row["status"])
    return {"table": table, **counts, "skipped": len(mine) - len(todo), "total": len(items), "shard": shard_}


def cohort_knee_sides(folder: str | Path) -> dict[str, str]:
    """case id -> 'left'/'right' from the cohort's knee-side table (empty when it has none)."""
    from kneeoa.data.cohort import load_cohort

    return {c.case_id: c.extra["knee_side"] for c in load_cohort(folder).cases if c.extra.get("knee_side")}


def evaluate_folder(pred_dir: str | Path, reference: str | Path) -> tuple[list[dict], dict]:
    """Dice/HD95 of every label map in `pred_dir` that has a reference mask in `reference` (paired by case id).

    `reference` is a folder of masks (e.g. labelsTs/) or a cohort root (its cases' masks are used)."""
    from kneeoa.data.volume import check_same_grid, read_volume, volume_suffix
    from kneeoa.segmentation.metrics import label_metrics, summarize

    preds = {case_id_from_name(p): p for p in sorted(Path(pred_dir).iterdir()) if volume_suffix(p)}
    refs = _reference_masks(Path(reference))
    pairs = sorted(set(preds) & set(refs))
    if not pairs:
        raise InputError(f"no label map has a reference mask in {reference} (paired by case id)", pred_dir)
    rows = []
    for cid in pairs:
        pred = read_volume(preds[cid], is_label=True, allow_constant=True)
        ref = read_volume(refs[cid], is_label=True, allow_constant=True)
        check_same_grid(ref, pred)
        rows += [{"case_id": cid, **r} for r in label_metrics(pred.array, ref.array, ref.spacing_mm)]
    return rows, summarize(rows)


def _reference_masks(reference: Path) -> dict[str, Path]:
    from kneeoa.data.volume import volume_suffix

    if not reference.is_dir():
        raise InputError("reference masks: not a folder", reference)
    files = {case_id_from_name(p): p for p in sorted(reference.iterdir()) if p.is_file() and volume_suffix(p)}
    if files:
        return files
    from kneeoa.data.cohort import load_cohort

    return {c.case_id: c.mask for c in load_cohort(reference).cases if c.mask is not None}

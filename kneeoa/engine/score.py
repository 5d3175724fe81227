"""Batch scoring of an unlabelled cohort folder, and grading of one volume (what the Slicer module runs).

`score_folder` streams the folder through the shared feed (`kneeoa.engine.feed`: loader workers decode
while the device computes; on CUDA the z-score and resize run on the GPU), appends one complete CSV row
per volume as soon as it is scored (fsync'd in groups), records unreadable volumes as error rows and goes
on; memory stays flat however long the cohort. `resume=True` skips case ids already in the
table; `shard=(i, n)` (or torchrun's RANK/WORLD_SIZE) scores every n-th case; `kneeoa merge` joins shards.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from kneeoa.contracts.case_ids import saliency_map_name
from kneeoa.contracts.schemas import SCORE_ERROR, SCORE_OK
from kneeoa.contracts.trust import TrustOptions
from kneeoa.engine.score_io import ensure_header, format_row, natural_key, read_scores
from kneeoa.errors import ConfigError, InputError, KneeOAError
from kneeoa.utils.outputs import check_outputs


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """'i/n' or (i, n) -> (i, n) with 0 <= i < n; None when not sharding."""
    if shard is None or shard == "":
        return None
    if isinstance(shard, str):
        try:
            i, n = (int(v) for v in shard.split("/"))
        except ValueError:
            raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    else:
        i, n = (int(v) for v in shard)
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {i}/{n}: need 0 <= i < n")
    return i, n


def list_cases(folder: str | Path) -> list[tuple[str, str]]:
    """Every volume of a cohort folder as (case_id, path), in natural case-id order (all splits, graded or not)."""
    return _cohort_cases(folder)[1]


def _cohort_cases(folder: str | Path) -> tuple[Any, list[tuple[str, str]]]:
    """(the cohort, `list_cases`): the folder read once for the case list and the reference masks."""
    from kneeoa.data.cohort import load_cohort

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder", folder)
    cohort = load_cohort(folder)
    items = sorted(((c.case_id, str(c.image)) for c in cohort.cases), key=lambda item: natural_key(item[0]))
    if not items:
        raise InputError("no volumes found (.nii, .nii.gz, .nrrd, .mha, .mhd or DICOM series folders)", folder)
    return cohort, items


def _cohort_tables(folder: Path) -> set[Path]:
    """The tables `load_cohort` reads in `folder` (labels, subject and knee-side tables): inputs as well."""
    from kneeoa.data.oaizib import FOLDERS, KNEE_SIDE_FILE

    names = ["labels.csv", "labels.xlsx", KNEE_SIDE_FILE,
             *(f"{stem}{suffix}" for *_, stem in FOLDERS.values() for suffix in (".xlsx", ".csv"))]
    return {(folder / name).resolve() for name in names if (folder / name).is_file()}


def _saliency_lock(saliency_dir: Path | None, shard: tuple[int, int] | None) -> contextlib.AbstractContextManager:
    if saliency_dir is None:
        return contextlib.nullcontext()
    from kneeoa.analysis.saliency_job import folder_lock

    return folder_lock(saliency_dir, shard)


def _check_outputs(out_csv: Path, saliency_dir: Path | None, items: list[tuple[str, str]],
                   folder: Path | None = None) -> None:
    """Outputs never overwrite inputs (`check_outputs`; an existing table is the resume rule's business)."""
    if out_csv.suffix.lower() != ".csv":
        raise ConfigError("the scores table must be a .csv file", out_csv)
    inputs = [p for _, p in items] + sorted(_cohort_tables(Path(folder)) if folder is not None else [])
    check_outputs([out_csv], inputs, overwrite=True, what="the scores table")
    if saliency_dir is not None:
        check_outputs([saliency_path_for(saliency_dir, cid) for cid, _ in items], inputs, overwrite=True,
                      what="a saliency output (choose another --saliency folder)")


def saliency_path_for(saliency_dir: Path, case_id: str) -> Path:
    return Path(saliency_dir) / saliency_map_name(case_id)


def score_folder(folder: str | Path, checkpoint: str | Path, out_csv: str | Path,
                 saliency_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
                 shard: str | tuple[int, int] | None = None, workers: int | None = None,
                 batch_size: int | None = None,
                 device: str = "auto", saliency_method: str = "smoothgrad", target: str = "auto",
                 trust: TrustOptions | None = None, segmenter: str | Path | None = None) -> dict:
    """Score every volume of `folder` into `out_csv`; returns {'out_csv', 'scored', 'errors', 'skipped', 'total',
    'shard', 'workers', 'batch_size'}.

    Under torchrun every rank scores its share (on its own GPU) into the same table. `workers` None plans
    them from the cores and the first volume's decode and model times (`feed.plan_workers`; -1 = one
    decode thread); `batch_size` None fills half the free GPU memory (1 on the CPU). With `saliency_dir` and
    `segmenter`, cases without a mask are segmented (`<case_id>_seg.nii.gz`) and every map's cartilage overlap
    is appended to `saliency_dir/saliency_overlap.csv` with its mask_source.
    """
    from kneeoa.engine import distributed

    out_csv = Path(out_csv)
    saliency_dir = Path(saliency_dir) if saliency_dir is not None else None
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    if workers is not None and int(workers) < -1:
        raise ConfigError(f"--workers must be >= -1 (-1: one decode thread), got {workers}")
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    shard_ = parse_shard(shard)
    cohort, items = _cohort_cases(folder)
    _check_outputs(out_csv, saliency_dir, items, Path(folder))
    exists = out_csv.exists()
    if exists and not (resume or overwrite):
        raise ConfigError("scores table exists; pass --resume to continue it or --overwrite to replace it", out_csv)
    info, dev = distributed.setup(device)
    try:
        if shard_ is None and info.enabled:
            shard_ = (info.rank, info.world_size)
        from kneeoa.engine.inference import load_model
        from kneeoa.trust.predict import load_trust_predictor

        model_card = load_model(checkpoint, dev)  # a bad checkpoint fails before any output is touched
        trusted = load_trust_predictor(checkpoint, model_card[1], trust)
        from kneeoa.utils import locks

        # one writer per table (or shard of it), and per saliency folder (shards may share one folder)
        with locks.sharded(out_csv, shard_, "the scores table"), _saliency_lock(saliency_dir, shard_):
            # looked at again under the lock: another run may have created the table since
            exists = out_csv.exists()
            if exists and not (resume or overwrite):
                raise ConfigError("scores table exists; pass --resume to continue it or --overwrite to replace it",
                                  out_csv)
            distributed.barrier(info)  # every rank has looked at the table before rank 0 changes it
            if info.is_main:
                if exists and overwrite:
                    out_csv.unlink()
                elif exists:
                    _drop_partial_tail(out_csv)
                ensure_header(out_csv)
            distributed.barrier(info)
            done = {row["case_id"] for row in read_scores(out_csv)} if resume else set()
            mine = items if shard_ is None else [it for k, it in enumerate(items) if k % shard_[1] == shard_[0]]
            todo = [item for item in mine if item[0] not in done]
            masks = _mask_source(cohort, segmenter, dev, saliency_dir)
            counts = _score_items(todo, model_card, out_csv, saliency_dir, workers, batch_size, dev,
                                  saliency_method, target, trusted, masks)
            distributed.barrier(info)
    finally:
        distributed.cleanup(info)
    return {"out_csv": out_csv, **counts, "skipped": len(mine) - len(todo), "total": len(items), "shard": shard_}


def _score_items(todo: list[tuple[str, str]], model_card: tuple[Any, dict], out_csv: Path, saliency_dir: Path | None,
                 workers: int | None, batch_size: int | None, dev: Any, saliency_method: str, target: str,
                 trusted: Any = None, masks: Any = None) -> dict:
    """The scoring loop: the feed decodes ahead, the model predicts, one appended row per case."""
    from kneeoa.engine import feed
    from kneeoa.engine.devices import oom_guard
    from kneeoa.engine.inference import batch_outputs, input_shape_of, reorient_of
    from kneeoa.engine.score_io import RowWriter
    from kneeoa.progress import Progress

    model, card = model_card
    spec = feed.InputSpec(input_shape_of(model, card), reorient_of(model), feed.model_dtype(model))
    if saliency_dir is not None:
        saliency_dir.mkdir(parents=True, exist_ok=True)
    check = trusted.inspect if trusted is not None else None  # -> item["envelope"] = (warnings, image features)
    counts = {"scored": 0, "errors": 0}
    if not todo:
        return {**counts, "workers": 0 if workers is None else int(workers), "batch_size": batch_size or 1}

    def score_batch(batch: list[dict]) -> None:
        good, x = feed.stack_inputs(batch, spec, dev)
        results: dict[str, dict] = {}
        if good:
            with oom_guard(dev, "scoring", len(good)):
                looked = [item["envelope"] or ([], None) for item in good]
                results = _predict_rows(model, x, [item["key"] for item in good], trusted,
                                        [w for w, _ in looked], [f for _, f in looked])
        for item in batch:
            row = {"case_id": item["key"], "path": item["path"]}
            if item["error"]:
                row.update(status=SCORE_ERROR, error=item["error"])
            else:
                row.update(status=SCORE_OK, error="")
                row.update(results[item["key"]])
                if saliency_dir is not None and row["status"] == SCORE_OK:
                    _add_saliency(row, model, spec.shape, saliency_dir, saliency_method, target, masks)
            rows.write(format_row(row))
            counts["errors" if row["status"] == SCORE_ERROR else "scored"] += 1
            bar.update(1, status=row["status"])

    with RowWriter(out_csv) as rows, Progress("score", total=len(todo), unit="volume") as bar:
        rest = todo
        if workers is None or batch_size is None:
            # the first volume, scored here, measures what the plan needs: its decode and one model step
            first = feed.VolumeFeed(todo[:1], spec, feed.preprocess_on_device(dev), check)[0]
            score_batch([first])
            rest = todo[1:]
            step_s, per_volume = feed.measure_step(lambda x: batch_outputs(model, x), first, spec, dev)
            if workers is None:
                workers = feed.plan_workers(dev, first["decode_s"], step_s)
            if batch_size is None:
                batch_size = feed.auto_batch_size(dev, per_volume)
        for batch in feed.iterate_batches(rest, spec, dev, int(workers), int(batch_size), check):
            score_batch(batch)
    return {**counts, "workers": int(workers), "batch_size": int(batch_size)}


def _drop_partial_tail(path: Path) -> None:
    """A hard kill during a write may leave a line without its newline: cut it so no row is glued to it."""
    from kneeoa.utils.atomic import atomic_write_bytes

    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])


def _predict_rows(model: Any, x: Any, case_ids: list[str], trusted: Any = None,
                  envelope: list[list[str]] | None = None, features: list | None = None) -> dict[str, dict]:
    import numpy as np

    from kneeoa.engine.inference import NONFINITE_OUTPUT, batch_outputs, finite_rows, predictions
    from kneeoa.trust.predict import table_fields

    out = batch_outputs(model, x)
    finite = finite_rows(out)
    feats = np.array(features) if trusted is not None and features and features[0] is not None else None
    extra = [table_fields(r) for r in trusted(out["kl_probs"], out["oa_prob"], out["embedding"], envelope, feats)] \
        if trusted is not None else [{} for _ in case_ids]
    rows = {}
    for case_id, ok, prediction, more in zip(case_ids, finite, predictions(out), extra):
        rows[case_id] = {**prediction.to_score_row(), **more} if ok else {"status": SCORE_ERROR,
                                                                         "error": NONFINITE_OUTPUT}
    return rows


def _mask_source(cohort: Any, segmenter: str | Path | None, dev: Any, saliency_dir: Path | None) -> Any:
    """(MaskSource, case id -> reference mask) for `--segmenter` with `--saliency`, else None."""
    if segmenter is None or saliency_dir is None:
        return None
    from kneeoa.segmentation.auto import MaskSource

    source = MaskSource(segmenter, dev, saliency_dir)
    source.check()  # a bad segmenter fails before any case is scored
    return source, {c.case_id: c.mask for c in cohort.cases if c.mask is not None}


def _add_saliency(row: dict, model: Any, shape: tuple, saliency_dir: Path, method: str, target: str,
                  masks: Any = None) -> None:
    from kneeoa.analysis.saliency import compute_saliency
    from kneeoa.data.volume import read_volume, write_nifti

    path = saliency_path_for(saliency_dir, row["case_id"])
    try:
        volume = read_volume(row["path"])
        saliency = compute_saliency(model, volume, method=method, target=target, input_shape=shape)
        write_nifti(path, saliency.array, saliency.affine)
        row["saliency_path"] = str(path)
        if masks is not None:
            from kneeoa.analysis.saliency_job import append_overlap

            source, mask_of = masks
            mask, where = source.mask_for(volume, mask_of.get(row["case_id"]), row["case_id"])
            append_overlap(saliency_dir, row["case_id"], saliency.array, mask, where)
    except KneeOAError as err:
        row.update(status=SCORE_ERROR, error=f"saliency: {err}")
    except Exception as err:  # the prediction stands; the row says what failed
        row.update(status=SCORE_ERROR, error=f"saliency: {type(err).__name__}: {err}")


def score_volume(image_path: str | Path, checkpoint: str | Path, mask_path: str | Path | None = None,
                 saliency_path: str | Path | None = None, saliency_method: str = "smoothgrad",
                 target: str = "auto", device: str = "auto", overwrite: bool = False) -> dict:
    """Grade one volume: probabilities, decisions, optional saliency file and cartilage overlap, model card."""
    from kneeoa.engine.grade import grade_volume

    return grade_volume(image_path, checkpoint, mask_path, saliency_path, saliency_method, target, device,
                        overwrite=overwrite)

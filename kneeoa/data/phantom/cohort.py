"""`generate_cohort`: write a phantom cohort in exactly the OAI-ZIB-CM layout, in parallel, reproducibly.

    OUT_DIR/imagesTr/oaizib_001_0000.nii.gz   labelsTr/oaizib_001.nii.gz     (cases 1..n_train)
    OUT_DIR/imagesTs/oaizib_NNN_0000.nii.gz   labelsTs/oaizib_NNN.nii.gz     (n_train+1..n_train+n_test)
    OUT_DIR/subInfo_train.xlsx  subInfo_test.xlsx  kneeSideInfo.csv  [preview.png]

Every case is a pure function of (seed, case number, shape), so the files are byte-identical for the
same arguments whatever the worker count, and a case keeps its content when the cohort grows.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from kneeoa.contracts.case_ids import case_id_from_name
from kneeoa.data.phantom.case import grid_for, synthesize_case
from kneeoa.data.phantom.layout import SPLIT_DIRS, case_id, case_paths  # noqa: F401  (the layout API)
from kneeoa.data.phantom.severity import READER_FLIP_PROB, CaseLabels, bilateral_partner, cohens_kappa
from kneeoa.errors import ConfigError, JobError
from kneeoa.hierarchy import N_KL
from kneeoa.progress import Progress

TABLE_COLUMNS = ["SubjectID", "CMT-ID", "Path", "MRBarCode", "KneeSide", "KLGrade", "Gender", "Age", "BMI",
                 "TrueSeverity", "TrueKL"]


def _write_case(job: tuple) -> tuple[CaseLabels, dict[int, int]]:
    """Worker: synthesize one case and write its image and mask; returns its labels and voxel counts."""
    from kneeoa.data.volume import write_nifti

    out_dir, split, seed, number, shape_dhw, partner = job
    case = synthesize_case(seed, number, shape_dhw, partner=partner)
    image_path, mask_path = case_paths(Path(out_dir), split, number)
    write_nifti(image_path, case.image_ijk, case.affine)
    write_nifti(mask_path, case.mask_ijk, case.affine, is_label=True)
    counts = np.bincount(case.mask_ijk.ravel(), minlength=6)
    return case.labels, {int(k): int(v) for k, v in enumerate(counts)}


def _check_args(out_dir: Path, n_train: int, n_test: int, shape: tuple[int, ...], workers: int | None) -> None:
    if n_train < 0 or n_test < 0 or n_train + n_test < 1:
        raise ConfigError(f"need at least one case (got --train {n_train} --test {n_test})")
    if len(shape) != 3 or any(int(n) < 8 or int(n) > 512 for n in shape):
        raise ConfigError(f"shape must be three sizes D H W between 8 and 512, got {tuple(shape)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("output path exists and is not a folder", out_dir)
    # Never delete anything: a folder holding other cases (maybe real data) is refused instead.
    wanted = {case_id(n) for n in range(1, n_train + n_test + 1)}
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        for f in sorted((out_dir / folder).glob("*.nii*")) if (out_dir / folder).is_dir() else []:
            if case_id_from_name(f.name) not in wanted:
                raise ConfigError(f"already holds {folder}/{f.name}, which is not part of this cohort; "
                                  "use an empty or new folder", out_dir)


def _jobs(out_dir: Path, n_train: int, n_test: int, seed: int, shape: tuple[int, int, int],
          bilateral: float = 0.0) -> Iterator[tuple]:
    for number in range(1, n_train + n_test + 1):
        # both knees of a subject stay in one official split (no subject in train and test)
        same_split = (number <= n_train) == (number - 1 <= n_train)
        partner = bilateral_partner(seed, number, bilateral, same_split)
        yield (str(out_dir), "train" if number <= n_train else "test", int(seed), number, shape, partner)


def _run_jobs(jobs: list[tuple], workers: int | None) -> dict[int, tuple[CaseLabels, dict[int, int]]]:
    """Run the case jobs in-process (1 worker) or in a process pool, with progress; keyed by case number."""
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results: dict[int, tuple[CaseLabels, dict[int, int]]] = {}
    with Progress("phantom", total=len(jobs), unit="case") as progress:
        if n_workers == 1:
            for job in jobs:
                results[job[3]] = _write_case(job)
                progress.update(1)
        else:
            # fork on Linux: instant start and no re-import of the caller's __main__ (scripts without a
            # main guard, the Slicer console); workers only use numpy/scipy/nibabel, so inherited torch
            # threads cannot deadlock them. Elsewhere fork is unsafe, so spawn.
            context = get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with ProcessPoolExecutor(n_workers, mp_context=context) as pool:
                futures = {pool.submit(_write_case, job): job[3] for job in jobs}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    progress.update(1)
    return results


def generate_cohort(out_dir: str | Path, n_train: int, n_test: int, shape: tuple[int, int, int] = (48, 48, 48),
                    seed: int = 0, preview: bool = False, workers: int | None = None,
                    bilateral: float = 0.0) -> dict:
    """Write a phantom cohort (shape = model space D, H, W) and return its summary (counts, kappa, time).

    `bilateral` in [0, 1]: the probability that a pair of consecutive cases is one subject's left and
    right knee (same SubjectID, correlated severity); about that share of knees then has a partner.
    The default 0 writes exactly the one-knee-per-subject cohort of earlier versions.
    """
    from kneeoa.data.tables import write_table
    from kneeoa.utils.atomic import atomic_write_text

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    shape = tuple(int(n) for n in shape)
    _check_args(out_dir, n_train, n_test, shape, workers)
    if not 0.0 <= float(bilateral) <= 1.0:
        raise ConfigError(f"bilateral must lie in [0, 1], got {bilateral}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the output folder ({err.strerror or err})", out_dir) from err
    jobs = list(_jobs(out_dir, n_train, n_test, seed, shape, bilateral))
    try:
        results = _run_jobs(jobs, workers)
    except OSError as err:  # disk full, permissions, ... while writing a case
        raise JobError(f"cannot write the cohort ({err})", out_dir) from err
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    labels = [results[n][0] for n in sorted(results)]
    for split, name in (("train", "subInfo_train.xlsx"), ("test", "subInfo_test.xlsx")):
        rows = [_table_row(lab) for lab in labels if (lab.case_number <= n_train) == (split == "train")]
        write_table(out_dir / name, rows, TABLE_COLUMNS)
    atomic_write_text(out_dir / "kneeSideInfo.csv",
                      "".join(f"{case_id(lab.case_number)}.nii.gz,{lab.knee_side}\n" for lab in labels))
    grid = grid_for(shape)
    summary = summarize(labels, n_train)
    if bilateral:
        summary.update(bilateral=float(bilateral), n_subjects=len({lab.subject_id for lab in labels}),
                       n_bilateral_subjects=sum(job[5] is not None for job in jobs))
    summary.update(out_dir=str(out_dir), seed=int(seed), shape_dhw=list(shape), shape_ijk=list(grid.shape_ijk),
                   spacing_mm=[round(s, 4) for s in grid.spacing_mm], workers=n_workers,
                   mask_voxels_mean={k: round(float(np.mean([results[n][1][k] for n in results])), 1)
                                     for k in range(6)})
    if preview:
        from kneeoa.data.phantom.preview import save_preview

        summary["preview"] = str(save_preview(out_dir, labels, n_train))
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def _table_row(lab: CaseLabels) -> dict:
    return {"SubjectID": lab.subject_id, "CMT-ID": lab.case_number, "Path": lab.path, "MRBarCode": lab.mr_barcode,
            "KneeSide": 1 if lab.knee_side == "right" else 2, "KLGrade": lab.recorded_kl, "Gender": lab.gender,
            "Age": lab.age, "BMI": lab.bmi, "TrueSeverity": lab.severity, "TrueKL": lab.true_kl}


def summarize(labels: list[CaseLabels], n_train: int) -> dict:
    """Counts per split and grade (recorded and true), ungraded ids, and recorded-vs-true kappa."""
    out: dict = {"n_train": n_train, "n_test": len(labels) - n_train, "reader_flip_prob": READER_FLIP_PROB,
                 "kl_counts": {}, "true_kl_counts": {}}
    for split in ("train", "test"):
        part = [lab for lab in labels if (lab.case_number <= n_train) == (split == "train")]
        out["kl_counts"][split] = np.bincount([lab.recorded_kl for lab in part if lab.recorded_kl is not None],
                                              minlength=N_KL).tolist()
        out["true_kl_counts"][split] = np.bincount([lab.true_kl for lab in part], minlength=N_KL).tolist()
    out["ungraded"] = [case_id(lab.case_number) for lab in labels if lab.recorded_kl is None]
    graded = [lab for lab in labels if lab.recorded_kl is not None]
    rec = np.array([lab.recorded_kl for lab in graded], dtype=int)
    true = np.array([lab.true_kl for lab in graded], dtype=int)
    out["agreement"] = round(float(np.mean(rec == true)), 4) if graded else float("nan")
    for w in (None, "linear", "quadratic"):
        out[f"kappa_{w or 'unweighted'}"] = round(cohens_kappa(true, rec, w), 4)
    return out

"""Robustness class 7: quiet wrong answers get a warning.

Generated: masks without any cartilage label (empty, bone only, random non-cartilage labels), affines
with random rotation, scaling and flips (no warning) or with a shear of 0.5-20 degrees (a warning), and
study prediction tables made before test cases were renamed (a warning, and the predictions are redone).
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import run_main
from reliability_helpers import SHAPE, good_array, tiny_checkpoint

from kneeoa.analysis.overlap import saliency_overlap
from kneeoa.contracts.vocab import CARTILAGE_LABELS
from kneeoa.data.volume import read_volume, shear_degrees, write_nifti
from kneeoa.errors import DataWarning

NON_CARTILAGE = sorted({0, 1, 3} - set(CARTILAGE_LABELS))


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn()
    return value, [w for w in caught if issubclass(w.category, DataWarning)]


def _cli(monkeypatch, *args: str) -> int:
    """`kneeoa ARGS` in this process, warnings printed as the CLI prints them (pytest would record them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # print as an unrecorded run would (pytest records warnings instead); restored when the block ends
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        return run_main(monkeypatch, *args)


def _masks_without_cartilage(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    masks = [np.zeros(SHAPE, np.uint8)]
    for _ in range(n - 1):
        masks.append(rng.choice(NON_CARTILAGE, size=SHAPE).astype(np.uint8))
    return masks


def test_an_empty_cartilage_mask_gives_nan_and_a_warning_never_a_silent_zero():
    rng = np.random.default_rng(7)
    for k, mask in enumerate(_masks_without_cartilage(rng, 12)):
        saliency = rng.random(SHAPE)
        result, caught = _caught(lambda mask=mask, saliency=saliency, k=k: saliency_overlap(
            saliency, mask, source=f"mask_{k}.nii.gz"))
        assert len(caught) == 1 and f"mask_{k}.nii.gz" in str(caught[0].message)
        assert math.isnan(result["mass_roi"]) and math.isnan(result["dice1"]) and result["roi_voxels"] == 0
    mask = np.zeros(SHAPE, np.uint8)
    mask[4:8, 4:8, 4:8] = CARTILAGE_LABELS[0]
    result, caught = _caught(lambda: saliency_overlap(rng.random(SHAPE), mask))
    assert not caught and 0 <= result["mass_roi"] <= 1


def test_grade_with_an_empty_cartilage_mask_warns_in_one_line(tmp_path, monkeypatch, capsys):
    image = write_nifti(tmp_path / "knee.nii.gz", good_array(), np.eye(4))
    mask = write_nifti(tmp_path / "knee_mask.nii.gz", np.ones(SHAPE), np.eye(4), is_label=True)  # femur only
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors")
    out = tmp_path / "r.json"
    assert _cli(monkeypatch, "grade", str(image), "--checkpoint", str(checkpoint), "--mask", str(mask),
                    "--result-json", str(out), "--saliency-method", "grad", "--device", "cpu") == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("kneeoa: warning:")]
    assert len(lines) == 1 and str(mask) in lines[0] and "no cartilage voxels" in lines[0]
    assert json.loads(out.read_text())["overlap"]["mass_roi"] is None


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q @ np.diag(np.sign(np.diag(r)))


def _affine(rng: np.random.Generator, shear_deg: float) -> np.ndarray:
    shear = np.eye(3)
    shear[0, 1] = math.tan(math.radians(shear_deg))
    linear = _rotation(rng) @ np.diag(rng.uniform(0.3, 1.5, 3) * rng.choice([-1, 1], 3)) @ shear
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = linear, rng.uniform(-50, 50, 3)
    return affine


def _sheared_nifti(path: Path, affine: np.ndarray) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(good_array(), affine)
    img.set_sform(affine, code=2)  # a qform cannot hold shear; the sform can
    path.write_bytes(img.to_bytes())
    return path


def test_sheared_affines_warn_and_rotations_do_not(tmp_path):
    rng = np.random.default_rng(21)
    for k in range(10):
        shear = float(rng.uniform(0.5, 20))
        sheared = _sheared_nifti(tmp_path / f"sheared_{k}.nii", _affine(rng, shear))
        volume, caught = _caught(lambda p=sheared: read_volume(p))
        assert len(caught) == 1 and str(sheared) in str(caught[0].message) and "sheared" in str(caught[0].message)
        assert shear_degrees(volume.affine) == pytest.approx(shear, abs=0.05) or shear_degrees(volume.affine) > 0.4
        plain = _sheared_nifti(tmp_path / f"rotated_{k}.nii", _affine(rng, 0.0))
        _, caught = _caught(lambda p=plain: read_volume(p))
        assert not caught, caught[0].message


def test_grade_of_a_sheared_image_warns_in_one_line(tmp_path, monkeypatch, capsys):
    image = _sheared_nifti(tmp_path / "oblique.nii", _affine(np.random.default_rng(3), 8.0))
    checkpoint = tiny_checkpoint(tmp_path / "m.safetensors")
    assert _cli(monkeypatch, "grade", str(image), "--checkpoint", str(checkpoint), "--result-json",
                str(tmp_path / "r.json"), "--device", "cpu") == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("kneeoa: warning:")]
    assert len(lines) == 1 and str(image) in lines[0] and "shear is ignored" in lines[0]


@pytest.fixture(scope="module")
def predicted(phantom_cohort, tmp_path_factory):
    """A study's prediction folder for one tiny model on the phantom cohort."""
    from kneeoa.data.cohort import load_cohort
    from kneeoa.study import _predict_one

    root = tmp_path_factory.mktemp("study")
    checkpoint = tiny_checkpoint(root / "m.safetensors", shape=(24, 24, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        test_cases = load_cohort(phantom_cohort).split("test")
    pred_dir = root / "predictions"
    _predict_one(checkpoint, phantom_cohort, pred_dir, "resnet3d_dual", str(root / "cache"), test_cases)
    return {"checkpoint": checkpoint, "pred_dir": pred_dir, "cases": test_cases, "root": root}


@pytest.mark.parametrize("seed", range(3))
def test_a_study_rerun_after_renames_warns_and_predicts_again(predicted, phantom_cohort, seed):
    import csv

    from kneeoa.study import _predict_one

    preds = predicted["pred_dir"] / "resnet3d_dual_preds.csv"
    args = (predicted["checkpoint"], phantom_cohort, predicted["pred_dir"], "resnet3d_dual",
            str(predicted["root"] / "cache"), predicted["cases"])
    before = preds.read_bytes()
    _, caught = _caught(lambda: _predict_one(*args))
    assert not caught and preds.read_bytes() == before  # same cases: reused, quietly and rightly
    rows = list(csv.DictReader(preds.open(encoding="utf-8")))
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(rows), size=int(rng.integers(1, 3)), replace=False):  # predictions of older names
        rows[i]["img_path"] = rows[i]["img_path"].replace(".nii.gz", f"_old{seed}.nii.gz")
    with preds.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _, caught = _caught(lambda: _predict_one(*args))
    assert len(caught) == 1 and str(preds) in str(caught[0].message) and "predicting again" in str(caught[0].message)
    assert {r["img_path"] for r in csv.DictReader(preds.open(encoding="utf-8"))} == \
        {str(c.image) for c in predicted["cases"]}

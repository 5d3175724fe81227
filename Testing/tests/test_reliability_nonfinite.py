"""Robustness class 1: non-finite values never become a confident grade.

Every case is generated here (seeded): images that are finite on disk but not after the float32 cast or
the header's scl_slope, images whose z-score overflows, checkpoints with NaN/Inf weights, and finite
weights whose outputs overflow. Single files end in one error line, batch jobs in error rows, `predict`
leaves such cases out of its metrics with a note, and no JSON we write holds a bare NaN.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import run_main
from reliability_helpers import SHAPE, assert_one_clear_error, good_array, tiny_checkpoint

from kneeoa.data.preprocess import preprocess_volume
from kneeoa.data.volume import read_volume, write_nifti
from kneeoa.errors import CheckpointError, InputError
from kneeoa.utils import strict_json

N_PER_KIND = 6  # generated cases per kind of non-finite image


def _nifti(path: Path, array: np.ndarray, slope: float | None = None) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(array, np.eye(4))
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    path.write_bytes(img.to_bytes())
    return path


def _image_cases(folder: Path) -> list[tuple[Path, str]]:
    """(path, regex) for every generated non-finite image: overflow at the cast, at scaling, at z-score."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(13)
    cases = []
    for k in range(N_PER_KIND):
        big = good_array(seed=k).astype(np.float64)  # float64 1e39..1e308 is inf once cast to float32
        where = tuple(rng.integers(0, s) for s in SHAPE)
        big[where] = float(rng.choice([-1, 1])) * 10.0 ** rng.uniform(39, 308)
        cases.append((_nifti(folder / f"float64_{k}.nii", big), "NaN/Inf voxels after conversion to float32"))
        ints = rng.integers(1000, 30000, SHAPE).astype(np.int16)  # int16 x scl_slope 1e35..1e38 overflows
        cases.append((_nifti(folder / f"slope_{k}.nii", ints, slope=float(10.0 ** rng.uniform(35, 38))),
                      "NaN/Inf voxels after conversion"))
        huge = rng.uniform(1e38, 3.4e38, SHAPE).astype(np.float32)  # finite, but the z-score's sum overflows
        cases.append((_nifti(folder / f"huge_{k}.nii", huge), "overflow float32 when z-scored"))
    return cases


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[tuple[Path, str]]:
    return _image_cases(tmp_path_factory.mktemp("nonfinite"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "model.safetensors")


def _scaled_checkpoint(source: Path, out: Path, factor: float | None = None, poison: float | None = None,
                       seed: int = 0) -> Path:
    """A copy of `source` with every weight scaled by `factor` (outputs overflow) or one weight set to `poison`."""
    from kneeoa.models.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(source)
    params = [p for p in model.parameters() if p.numel() > 1]
    with torch.no_grad():
        if factor is not None:
            for p in params:
                p.mul_(factor)
        if poison is not None:
            rng = np.random.default_rng(seed)
            p = params[int(rng.integers(len(params)))]
            p.view(-1)[int(rng.integers(p.numel()))] = poison
    return save_checkpoint(out, model, card)


def test_every_generated_image_is_refused_naming_the_file(images):
    for path, match in images:
        with pytest.raises(InputError, match=match) as err:
            preprocess_volume(read_volume(path), SHAPE)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("kind", ["float64", "slope", "huge"])
def test_grade_gives_no_grade_for_a_non_finite_image(images, checkpoint, kind, tmp_path, monkeypatch, capsys):
    path, match = next(case for case in images if case[0].name.startswith(kind))
    rc = run_main(monkeypatch, "grade", str(path), "--checkpoint", str(checkpoint), "--result-json",
                  str(tmp_path / "r.json"), "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", path, match)
    assert not (tmp_path / "r.json").exists()


def test_score_writes_an_error_row_per_non_finite_image_and_scores_the_rest(images, checkpoint, tmp_path,
                                                                           monkeypatch):
    import shutil

    folder = tmp_path / "cohort"
    folder.mkdir()
    for path, _ in images:
        shutil.copy(path, folder / path.name)
    write_nifti(folder / "good.nii.gz", good_array(seed=99), np.eye(4))
    out = tmp_path / "scores.csv"
    assert run_main(monkeypatch, "score", str(folder), "--checkpoint", str(checkpoint), "--out", str(out),
                    "--device", "cpu") == 0
    rows = {r["case_id"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert len(rows) == len(images) + 1 and rows["good"]["status"] == "ok"
    for path, match in images:
        row = rows[path.name[: -len(".nii")]]
        assert row["status"] == "error" and str(folder / path.name) in row["error"], row
        assert re.search(match, row["error"]), row["error"]
        assert row["oa_prob"] == "" and row["pred_kl"] == "" and row["pred_oa"] == ""
    numbers = [v for r in rows.values() for k, v in r.items() if k not in ("case_id", "path", "error", "status")]
    assert not any(v.lower() in ("nan", "inf", "-inf") for v in numbers)


@pytest.mark.parametrize("poison", [math.nan, math.inf, -math.inf, math.nan, math.inf, math.nan],
                         ids=lambda v: str(v))
def test_a_checkpoint_with_a_non_finite_weight_is_refused(checkpoint, poison, tmp_path, monkeypatch, capsys):
    seed = int(np.random.default_rng(abs(hash(str(poison))) % 2**32).integers(1000))
    bad = _scaled_checkpoint(checkpoint, tmp_path / "nan.safetensors", poison=poison, seed=seed)
    image = write_nifti(tmp_path / "knee.nii.gz", good_array(), np.eye(4))
    rc = run_main(monkeypatch, "grade", str(image), "--checkpoint", str(bad), "--result-json",
                  str(tmp_path / "r.json"), "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", bad, "weights hold NaN/Inf")
    assert not (tmp_path / "r.json").exists()
    with pytest.raises(CheckpointError, match="NaN/Inf"):
        from kneeoa.engine.inference import load_model

        load_model(bad, torch.device("cpu"))


@pytest.fixture(scope="module")
def overflowing(checkpoint, tmp_path_factory) -> Path:
    """Finite weights, each x1e4: activations overflow float32 and every output is NaN."""
    return _scaled_checkpoint(checkpoint, tmp_path_factory.mktemp("overflow") / "big.safetensors", factor=1e4)


def test_grade_refuses_to_grade_when_the_model_output_is_not_finite(overflowing, tmp_path, monkeypatch, capsys):
    image = write_nifti(tmp_path / "knee.nii.gz", good_array(), np.eye(4))
    rc = run_main(monkeypatch, "grade", str(image), "--checkpoint", str(overflowing), "--result-json",
                  str(tmp_path / "r.json"), "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", image, "output is not finite")


def test_score_records_non_finite_outputs_as_error_rows(overflowing, tmp_path, monkeypatch):
    from engine_helpers import volume_folder

    volume_folder(tmp_path / "cohort", 3, shape=SHAPE)
    out = tmp_path / "scores.csv"
    assert run_main(monkeypatch, "score", str(tmp_path / "cohort"), "--checkpoint", str(overflowing),
                    "--out", str(out), "--device", "cpu") == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 3 and all(r["status"] == "error" and "not finite" in r["error"] for r in rows)
    assert all(r["oa_prob"] == "" and r["kl_prob_0"] == "" for r in rows)


def test_predict_leaves_non_finite_cases_out_of_the_metrics_with_a_note(phantom_cohort, overflowing, tmp_path):
    from kneeoa.engine.predict import predict

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = predict(overflowing, phantom_cohort, tmp_path / "out", device="cpu")
    assert any("left out of the predictions and metrics" in str(w.message) for w in caught)
    assert out["metrics"]["n"] == 0 and out["metrics"]["n_excluded_nonfinite"] == out["n"]
    assert list(csv.DictReader(out["predictions"].open(encoding="utf-8"))) == []


def test_drop_nonfinite_keeps_exactly_the_finite_rows():
    from kneeoa.engine.predict import drop_nonfinite

    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(1, 12))
        kl = rng.dirichlet(np.ones(5), n)
        result = {"case_id": [f"c{i}" for i in range(n)], "kl": rng.integers(0, 5, n), "oa": rng.integers(0, 2, n),
                  "kl_probs": kl, "oa_prob": kl[:, 2:].sum(1), "oa_prob_from_kl": kl[:, 2:].sum(1),
                  "embedding": rng.normal(size=(n, 4)),
                  "inspected": [([f"w{i}"], np.full(3, float(i))) for i in range(n)]}  # the feed's trust facts
        bad = rng.random(n) < 0.4
        for i in np.flatnonzero(bad):
            key = ["kl_probs", "oa_prob", "embedding"][int(rng.integers(3))]
            if result[key].ndim == 1:
                result[key][i] = rng.choice([np.nan, np.inf])
            else:
                result[key][i, int(rng.integers(result[key].shape[1]))] = rng.choice([np.nan, -np.inf])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kept, excluded = drop_nonfinite(result)
        assert excluded == [f"c{i}" for i in np.flatnonzero(bad)]
        assert kept["case_id"] == [f"c{i}" for i in np.flatnonzero(~bad)]
        assert [w for w, _f in kept["inspected"]] == [[f"w{i}"] for i in np.flatnonzero(~bad)]  # stay with their knee
        assert all(len(kept[k]) == (~bad).sum() for k in ("kl", "kl_probs", "oa_prob", "embedding"))


def _no_constants(text: str) -> None:
    def refuse(name: str):
        raise AssertionError(f"bare {name} in JSON: {text[:200]}")

    json.loads(text, parse_constant=refuse)


def test_json_we_write_never_holds_a_bare_nan():
    rng = np.random.default_rng(7)
    specials = [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf"), torch.tensor(float("nan"))]
    for _ in range(50):  # random nested payloads with non-finite values in random places
        def build(depth: int):
            roll = rng.random()
            if depth > 3 or roll < 0.3:
                return specials[int(rng.integers(len(specials)))] if rng.random() < 0.5 else float(rng.normal())
            if roll < 0.6:
                return [build(depth + 1) for _ in range(int(rng.integers(1, 4)))]
            return {f"k{i}": build(depth + 1) for i in range(int(rng.integers(1, 4)))}

        _no_constants(strict_json.dumps({"payload": build(0), "arr": np.array([np.nan, 1.0])}))


def test_progress_lines_and_the_metrics_log_hold_no_bare_nan(tmp_path, monkeypatch, capsys):
    from kneeoa.engine.rundir import RunDir
    from kneeoa.progress import Progress

    monkeypatch.setenv("KNEEOA_PROGRESS", "json")
    with Progress("train", total=2) as bar:
        bar.update(1, loss=math.nan, auc=np.float32("inf"))
    for line in capsys.readouterr().out.splitlines():
        _no_constants(line)
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.append_metrics({"epoch": 1, "loss": math.nan, "lr": np.float64("inf")})
    _no_constants(run.metrics.read_text(encoding="utf-8"))
    assert run.read_metrics() == [{"epoch": 1, "loss": None, "lr": None}]

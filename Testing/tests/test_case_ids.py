"""One case-id rule for every command: `oaizib_161_0000.nii.gz` is case `oaizib_161` in score, saliency,
predict, the labels tables and the Slicer mask matching, so the outputs join with the masks and tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import run_main, tiny_checkpoint

from kneeoa.contracts.case_ids import case_id_from_name, saliency_map_name
from kneeoa.data.tables import read_table


@pytest.mark.parametrize("name, expected", [
    ("oaizib_161_0000.nii.gz", "oaizib_161"),
    ("imagesTs/oaizib_161_0000.nii.gz", "oaizib_161"),
    ("oaizib_161.nii.gz", "oaizib_161"),
    ("oaizib_161_0000", "oaizib_161"),       # a DICOM folder or a Slicer node name
    ("knee_0000.NRRD", "knee"),
    ("knee.mha", "knee"),
    ("knee_0012.nii", "knee_0012"),          # only channel 0 is a tag: real digits stay
    ("knee_0000_0000.nii.gz", "knee_0000"),  # one tag, once
    ("scan.v2.nii.gz", "scan.v2"),
])
def test_the_rule(name, expected):
    assert case_id_from_name(name) == expected
    assert case_id_from_name(Path(name)) == expected


def test_saliency_map_name_is_the_case_id_plus_one_suffix():
    assert saliency_map_name("oaizib_161") == "oaizib_161_saliency.nii.gz"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _test_ids(phantom_cohort: Path) -> list[str]:
    return sorted(p.name.removesuffix(".nii.gz") for p in (phantom_cohort / "labelsTs").iterdir())


def test_score_on_an_images_folder_uses_the_mask_ids(phantom_cohort, checkpoint, tmp_path, monkeypatch):
    masks = _test_ids(phantom_cohort)
    out = tmp_path / "scores.csv"
    assert run_main(monkeypatch, "score", str(phantom_cohort / "imagesTs"), "--checkpoint", str(checkpoint),
                    "--out", str(out), "--saliency", str(tmp_path / "maps"), "--threads", "1") == 0
    assert sorted(r["case_id"] for r in read_table(out)) == masks
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [saliency_map_name(m) for m in masks]


def test_saliency_on_a_cohort_and_on_one_image_use_the_mask_ids(phantom_cohort, checkpoint, tmp_path,
                                                                monkeypatch):
    masks = _test_ids(phantom_cohort)
    assert run_main(monkeypatch, "saliency", "--checkpoint", str(checkpoint), "--data", str(phantom_cohort),
                    "--out", str(tmp_path / "cohort"), "--limit", "2", "--n-samples", "1", "--threads", "1") == 0
    written = sorted(p.name for p in (tmp_path / "cohort").glob("*_saliency.nii.gz"))
    assert written == [saliency_map_name(m) for m in masks[:2]]
    rows = read_table(tmp_path / "cohort" / "saliency_overlap.csv")
    assert [r["case_id"] for r in rows if r["case_id"] in masks] == masks[:2]

    image = phantom_cohort / "imagesTs" / f"{masks[0]}_0000.nii.gz"
    assert run_main(monkeypatch, "saliency", "--checkpoint", str(checkpoint), "--image", str(image),
                    "--out", str(tmp_path / "one"), "--n-samples", "1", "--threads", "1") == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == [saliency_map_name(masks[0])]


def test_predict_and_the_labels_table_on_a_generic_folder_of_nnunet_names(phantom_cohort, checkpoint, tmp_path,
                                                                          monkeypatch):
    """A generic folder of `<id>_0000` images, masks in labels/<id>, a table naming the image files."""
    folder = tmp_path / "folder"
    shutil.copytree(phantom_cohort / "imagesTs", folder)
    shutil.copytree(phantom_cohort / "labelsTs", folder / "labels")
    ids = _test_ids(phantom_cohort)
    split = {cid: "train" if k % 2 else "test" for k, cid in enumerate(ids)}
    lines = ["case_id,kl,split"] + [f"{cid}_0000.nii.gz,{k % 5},{split[cid]}" for k, cid in enumerate(ids)]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")

    from kneeoa.data.cohort import load_cohort

    cohort = load_cohort(folder)
    assert sorted(c.case_id for c in cohort.cases) == ids
    assert all(c.mask == folder / "labels" / f"{c.case_id}.nii.gz" for c in cohort.cases)

    out = tmp_path / "pred"
    assert run_main(monkeypatch, "predict", "--checkpoint", str(checkpoint), "--data", str(folder),
                    "--out", str(out), "--embeddings", "--device", "cpu", "--threads", "1") == 0
    table = next(out.glob("*_preds.csv"))
    test_ids = [cid for cid in ids if split[cid] == "test"]
    assert sorted(str(r["CMT_ID"]) for r in read_table(table)) == test_ids
    emb = np.load(next(out.glob("*_embeddings.npz")))
    assert sorted(emb["test_case_id"].tolist()) == test_ids
    assert sorted(emb["train_case_id"].tolist()) == [cid for cid in ids if split[cid] == "train"]


def test_slicer_matches_the_label_map_by_the_same_rule():
    from kneeoa.slicer.grading import _case_key

    assert _case_key("oaizib_001_0000") == _case_key("oaizib_001") == case_id_from_name("oaizib_001")
    assert _case_key("knee_0012") != _case_key("knee")

"""The KneeOA Grading model manager: import (checkpoint or zip, checksum), list the cards, remove; the bundled
demo model always listed and marked synthetic. Real checkpoints written by kneeoa, real zips, real files."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from slicer_helpers import load_scripted_module

from kneeoa.errors import CheckpointError
from kneeoa.slicer import model_store

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "Resources" / "demo_model.safetensors"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="resnet3d", variant="single-kl", input_shape=(16, 16, 16), width=4))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "knee model.safetensors", model,
                           {"training_data": "OAI-ZIB-CM train split (383 graded knees)"})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_import_lists_the_card_and_the_demo_model_stays_first(checkpoint, tmp_path):
    folder = tmp_path / "models"
    entry = model_store.import_model(checkpoint, folder)
    assert entry.path.parent == folder and entry.path.name == "knee_model.safetensors"
    assert (entry.backbone, entry.variant, entry.synthetic, entry.bundled) == ("resnet3d", "single-kl", False, False)
    assert entry.trained_on.startswith("OAI-ZIB-CM") and not entry.calibrated
    listed = model_store.list_models(folder, [DEMO])
    assert [e.name for e in listed] == ["demo_model", "knee_model"]
    assert listed[0].bundled and listed[0].synthetic and "SYNTHETIC" in listed[0].label()


def test_importing_twice_never_replaces_a_model(checkpoint, tmp_path):
    first = model_store.import_model(checkpoint, tmp_path)
    second = model_store.import_model(checkpoint, tmp_path)
    assert first.path != second.path and first.path.is_file() and second.path.name == "knee_model_2.safetensors"


def test_a_zip_with_its_checksum_imports_and_a_wrong_checksum_is_refused(checkpoint, tmp_path):
    archive = tmp_path / "shared.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(checkpoint, "release/knee model.safetensors")
        zf.writestr("release/knee model.safetensors.sha256", f"{_sha(checkpoint)}  knee model.safetensors\n")
    assert model_store.import_model(archive, tmp_path / "a").variant == "single-kl"
    with pytest.raises(CheckpointError, match="checksum does not match"):
        model_store.import_model(archive, tmp_path / "b", sha256="0" * 64)
    assert list((tmp_path / "b").glob("*.safetensors")) == []


def test_a_sha256_file_beside_the_checkpoint_is_checked(checkpoint, tmp_path):
    copy = tmp_path / "m.safetensors"
    copy.write_bytes(checkpoint.read_bytes())
    (tmp_path / "m.safetensors.sha256").write_text("f" * 64 + "  m.safetensors\n")
    with pytest.raises(CheckpointError, match="checksum does not match"):
        model_store.import_model(copy, tmp_path / "models")
    with pytest.raises(CheckpointError, match="not a SHA-256"):
        model_store.import_model(checkpoint, tmp_path / "models", sha256="abc")


def test_files_that_are_not_kneeoa_models_are_refused_before_copying(tmp_path):
    xlsx_like = tmp_path / "table.zip"
    with zipfile.ZipFile(xlsx_like, "w") as zf:
        zf.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(CheckpointError, match="exactly one .safetensors"):
        model_store.import_model(xlsx_like, tmp_path / "models")
    import numpy as np
    from safetensors.numpy import save_file

    junk = tmp_path / "junk.safetensors"
    save_file({"weight": np.zeros(3, dtype=np.float32)}, str(junk))  # valid safetensors, but no KneeOA card
    with pytest.raises(CheckpointError, match="no KneeOA model card"):
        model_store.import_model(junk, tmp_path / "models")
    assert list((tmp_path / "models").glob("*.safetensors")) == []


def test_remove_deletes_an_imported_model_but_never_the_demo(checkpoint, tmp_path):
    entry = model_store.import_model(checkpoint, tmp_path)
    model_store.remove_model(entry)
    assert not entry.path.exists()
    with pytest.raises(CheckpointError, match="cannot be removed"):
        model_store.remove_model(model_store.entry_for(DEMO, bundled=True))
    assert DEMO.is_file()


def test_the_models_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(model_store.MODELS_ENV, str(tmp_path / "site models"))
    assert model_store.models_folder() == tmp_path / "site models"


def test_the_grading_logic_lists_imports_and_removes(monkeypatch, checkpoint, tmp_path):
    module = load_scripted_module(monkeypatch, ROOT / "KneeOAGrading" / "KneeOAGrading.py")
    logic = module.KneeOAGradingLogic()
    entry = logic.importModel(checkpoint, folder=tmp_path)
    assert [e.name for e in logic.listModels(tmp_path)] == ["demo_model", "knee_model"]
    logic.removeModel(entry)
    assert [e.name for e in logic.listModels(tmp_path)] == ["demo_model"]

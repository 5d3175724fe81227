"""The contracts layer: one torch-free definition of every name, and nobody keeping a copy of it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from kneeoa.contracts import catalog, vocab

ROOT = Path(__file__).resolve().parents[2]
# per-backbone data that belongs to one module, keyed by catalog names (a use, not a copy of the list)
KEYED_BY_NAME = {"kneeoa/models/paper_import.py": "the paper's .pth head key of each of its three backbones"}
HEAVY = ("torch", "numpy", "yaml", "scipy", "sklearn", "monai", "nibabel", "SimpleITK", "safetensors", "matplotlib")


@pytest.mark.parametrize("module", ["kneeoa", "kneeoa.contracts.vocab", "kneeoa.contracts.catalog",
                                    "kneeoa.contracts.schemas", "kneeoa.contracts.prediction",
                                    "kneeoa.contracts.checkpoint_meta",
                                    "kneeoa.slicer.training", "kneeoa.slicer.grading", "kneeoa.slicer.results",
                                    "kneeoa.commands.train"])
def test_contracts_and_slicer_glue_import_only_the_standard_library(module):
    code = f"import sys, json, {module}; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout) == []


def _names() -> set[str]:
    """Every enumerated name of the vocabulary and catalog (the strings nobody else may list)."""
    names = {*catalog.BACKBONES, *catalog.ALIASES, *vocab.VARIANTS, *vocab.VARIANT_TAGS, *vocab.HEADS,
             *vocab.KL_HEADS, *vocab.SALIENCY_METHODS, *vocab.LABELS.values(), *vocab.COMPARTMENTS}
    return names - {"dual", "saliency"}  # ordinary words too (a "dual" column, the "saliency" folder)


def _literal_strings(node: ast.AST) -> list[str]:
    elements = node.keys if isinstance(node, ast.Dict) else node.elts
    return [e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def test_no_module_outside_the_contracts_lists_the_vocabulary():
    """A tuple/list/set literal (or dict keys) of two or more backbones, variants, labels, ... and nothing else
    is a copy. (The phantom's tissue tables name more tissues than the mask labels: not a copy.)"""
    names, copies = _names(), []
    files = [p for p in (ROOT / "kneeoa").rglob("*.py") if "contracts" not in p.relative_to(ROOT).parts]
    files += [*ROOT.glob("KneeOA*/*.py"), *ROOT.glob("KneeOA*/*Lib/*.py")]
    for path in files:
        if str(path.relative_to(ROOT)) in KEYED_BY_NAME:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                strings = set(_literal_strings(node))
                found = sorted(strings & names)
                if len(found) >= 2 and strings <= names:
                    copies.append(f"{path.relative_to(ROOT)}:{node.lineno} {found}")
    assert copies == [], "\n".join(copies)


def test_the_cli_choices_come_from_the_contracts():
    from kneeoa.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    train = {a.dest: a.choices for a in sub["train"]._actions}
    assert (train["backbone"], train["variant"], train["head"], train["device"], train["amp"]) == \
        (catalog.backbone_names(), vocab.VARIANTS, vocab.HEADS, vocab.DEVICES, vocab.AMP_MODES)
    for command, dest in (("score", "saliency_method"), ("grade", "saliency_method"), ("saliency", "method")):
        assert {a.dest: a.choices for a in sub[command]._actions}[dest] == vocab.SALIENCY_METHODS
    for command in ("predict", "score", "grade", "study"):
        assert {a.dest: a.choices for a in sub[command]._actions}["device"] == vocab.DEVICES


def test_catalog_names_spellings_and_labels():
    assert catalog.study_backbones() == ("resnet3d", "m3t", "nnmamba")
    assert catalog.paper_backbones() == ("resnet3d", "m3t", "nnmamba")
    assert catalog.spellings("nnmamba") == ("mamba", "nnmamba")
    assert [catalog.backbone_label(n) for n in ("mamba", "resnet3d_monai", "vgg")] == ["nnMamba", "ResNet3D (MONAI)",
                                                                                       "vgg"]
    assert vocab.model_name("resnet3d-monai", "single-kl") == "resnet3d_monai_single_kl"
    assert vocab.variant_from_tag(vocab.variant_tag("single-oa")) == "single-oa"
    with pytest.raises(ValueError, match="unknown variant"):
        vocab.variant_from_tag("triple")


def test_a_registered_backbone_is_everywhere_and_a_taken_name_is_refused(monkeypatch):
    monkeypatch.setitem(catalog.BACKBONES, "toy", catalog.BACKBONES["m3t"])
    assert "toy" in catalog.backbone_names() and "toy" in catalog.study_backbones()
    with pytest.raises(ValueError, match="taken"):
        catalog.register_backbone("mamba", catalog.BACKBONES["m3t"])
    with pytest.raises(ValueError, match="taken"):
        catalog.register_backbone("toy", catalog.BACKBONES["resnet3d"])


def test_a_prediction_writes_the_published_columns_the_scores_columns_and_the_grade_json():
    from kneeoa.contracts.prediction import Prediction
    from kneeoa.contracts.schemas import PRED_COLUMNS, SCORE_COLUMNS, pred_columns

    dual = Prediction(oa_prob=0.7, pred_oa=1, kl_probs=(0.1, 0.1, 0.5, 0.2, 0.1), oa_prob_from_kl=0.8, pred_kl=2,
                      consistent_kl=2, heads_agree=True)
    assert set(dual.to_pred_row()) == set(pred_columns("dual")) - {"CMT_ID", "img_path", "label_kl", "label_oa"}
    assert set(dual.to_score_row()) <= set(SCORE_COLUMNS) and dual.to_score_row()["kl_prob_2"] == 0.5
    assert Prediction.from_result({**dual.to_result(), "card": {}}) == dual
    single_oa = Prediction(oa_prob=0.2, pred_oa=0)
    assert list(single_oa.to_pred_row()) == ["prob_oa", "pred_oa"]
    assert pred_columns("single_oa", img_path=False) == ["CMT_ID", "label_kl", "label_oa", "prob_oa", "pred_oa"]
    assert pred_columns("single-kl") == PRED_COLUMNS


def test_the_stdlib_metadata_reader_reads_what_safetensors_reads_and_refuses_the_rest(tmp_path):
    import pickle

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from kneeoa.contracts.checkpoint_meta import MAX_HEADER, read_card, read_metadata, read_trainer_meta
    from kneeoa.errors import CheckpointError

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"kneeoa_card": json.dumps({"spec": {"a": 1}}), "x": "y"})
    with safe_open(str(path), framework="pt") as fh:
        assert read_metadata(path) == fh.metadata()
    assert read_card(path) == {"spec": {"a": 1}}
    with pytest.raises(CheckpointError, match="not a KneeOA trainer state"):
        read_trainer_meta(path)
    (tmp_path / "p.safetensors").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_card(tmp_path / "p.safetensors")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((MAX_HEADER + 1).to_bytes(8, "little") + b"{" + b" " * (MAX_HEADER + 8))
    with pytest.raises(CheckpointError, match="header of"):
        read_card(huge)


def test_model_names_split_back_into_backbone_and_variant():
    for backbone in (*catalog.backbone_names(), "toy"):
        for variant in vocab.VARIANTS:
            assert vocab.split_model_name(vocab.model_name(backbone, variant)) == \
                (backbone.replace("-", "_"), vocab.variant_tag(variant))
    with pytest.raises(ValueError, match="not <backbone>_<variant>"):
        vocab.split_model_name("resnet3d")

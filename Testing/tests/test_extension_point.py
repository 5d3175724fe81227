"""The README's promise: a new backbone is one new file plus one catalog line, and then every command works.

The toy backbone lives in a temporary module on sys.path (nothing in the repository is touched); its one
catalog line is the `register_backbone(...)` call in that file, and `KNEEOA_PLUGINS` names the module.
It then goes through `kneeoa train`, `predict`, `score`, `stats` and a tiny `study`.
"""

from __future__ import annotations

import sys
import textwrap

import pytest
from engine_helpers import run_main

from kneeoa.contracts import catalog

TOY = '''\
import torch
from torch import nn

from kneeoa.contracts.catalog import Backbone, register_backbone


class Toy(nn.Module):
    """One strided 3-D convolution, global-average pooled: the smallest thing that is a backbone."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.conv = nn.Conv3d(1, width, 3, stride=2, padding=1)
        self.embedding_dim = width

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).relu().mean(dim=(2, 3, 4))


register_backbone("toy", Backbone("kneeoa_toy_backbone:Toy", 4, (16, 16, 16), "a toy 3-D CNN", "Toy", 4))
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "kneeoa_toy_backbone.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    monkeypatch.setenv(catalog.PLUGINS_ENV, "kneeoa_toy_backbone")
    yield "toy"
    catalog.BACKBONES.pop("toy", None)  # the catalog is process-wide: leave it as the other tests know it
    sys.modules.pop("kneeoa_toy_backbone", None)


@pytest.mark.slow
def test_a_toy_backbone_in_one_file_runs_through_every_command(toy_plugin, phantom_cohort, tmp_path, monkeypatch):
    tiny = ["--epochs", "1", "--input-size", "16", "--width", "4", "--device", "cpu"]
    for variant in ("single-oa", "single-kl", "dual"):
        run = tmp_path / "runs" / f"toy_{variant}"
        assert run_main(monkeypatch, "train", "--data", str(phantom_cohort), "--backbone", "toy", "--variant",
                        variant, "--out", str(run), "--batch-size", "4", "--no-cache", *tiny) == 0
        assert run_main(monkeypatch, "predict", "--checkpoint", str(run / "checkpoints" / "last.safetensors"),
                        "--data", str(phantom_cohort), "--out", str(tmp_path / "preds"), "--device", "cpu") == 0
    assert sorted(p.name for p in (tmp_path / "preds").glob("*_preds.csv")) == \
        ["toy_dual_preds.csv", "toy_single_kl_preds.csv", "toy_single_oa_preds.csv"]
    dual = tmp_path / "runs" / "toy_dual" / "checkpoints" / "last.safetensors"
    assert run_main(monkeypatch, "score", str(phantom_cohort / "imagesTs"), "--checkpoint", str(dual),
                    "--out", str(tmp_path / "scores.csv"), "--device", "cpu") == 0
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 1 + 6
    assert run_main(monkeypatch, "stats", str(tmp_path / "preds"), "--out", str(tmp_path / "stats.csv"),
                    "--resamples", "50") == 0
    assert "toy,OA,AUC" in (tmp_path / "stats.csv").read_text()
    assert run_main(monkeypatch, "study", "--data", str(phantom_cohort), "--out", str(tmp_path / "study"),
                    "--backbones", "toy", "--variants", "single-oa,dual", "--saliency-cases", "1",
                    "--resamples", "50", *tiny) == 0
    report = (tmp_path / "study" / "report.html").read_text(encoding="utf-8")
    assert "toy_dual" in report or ">toy<" in report  # its rows in the report tables


def test_a_plugin_that_fails_to_import_is_one_line(monkeypatch, capsys):
    from kneeoa.cli import main

    monkeypatch.setenv(catalog.PLUGINS_ENV, "no_such_kneeoa_plugin")
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert "no_such_kneeoa_plugin" in err and len(err.strip().splitlines()) == 1

"""`kneeoa models`: the table of backbones x variants."""

from __future__ import annotations

import argparse
import json

from kneeoa.commands import models as models_command


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="kneeoa")
    models_command.add_parser(parser.add_subparsers())
    code = models_command.run(parser.parse_args(["models", *argv]))
    return code, capsys.readouterr().out


def test_table_lists_every_backbone_and_variant(capsys):
    code, text = run([], capsys)
    assert code == 0
    for word in ("resnet3d", "resnet3d-monai", "m3t", "nnmamba", "single-oa", "single-kl", "parallel"):
        assert word in text
    assert "33,162,577" in text  # ResNet3D Dual at paper width: MedicalNet ResNet-18 + heads
    assert "128x128x128" in text and "160x256x256" in text


def test_json_rows_follow_input_shape_and_width(capsys):
    code, text = run(["--input-shape", "32", "32", "48", "--width", "8", "--json"], capsys)
    rows = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and len(rows) == 16
    m3t = [r for r in rows if r["backbone"] == "m3t"]
    assert all(r["input_shape"] == [32, 32, 32] for r in m3t)
    assert {r["embedding_dim"] for r in rows if r["backbone"] == "nnmamba"} == {8}
    assert {r["embedding_dim"] for r in rows if r["backbone"] == "resnet3d"} == {64}


def test_command_is_registered_in_the_cli():
    from kneeoa.cli import COMMANDS

    assert "models" in COMMANDS

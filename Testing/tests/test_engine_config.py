"""Presets, per-backbone blocks, command-line overrides and the rules on unknown keys and resumes."""

from pathlib import Path

import pytest

from kneeoa.config import (
    apply_resume_overrides,
    load_config,
    load_preset,
    resolve_config,
    save_config,
    spec_dict,
)
from kneeoa.errors import ConfigError


def test_paper_preset_is_the_published_protocol():
    cfg = resolve_config("paper", "resnet3d", "dual")
    assert (cfg["lr"], cfg["weight_decay"], cfg["batch_size"], cfg["epochs"]) == (1e-4, 1e-4, 2, 100)
    assert cfg["input_shape"] == [160, 256, 256]
    assert cfg["width"] is None and cfg["head"] == "chained" and cfg["evaluate"] is True


def test_paper_preset_gives_m3t_its_cube():
    assert resolve_config("paper", "m3t", "single-kl")["input_shape"] == [128, 128, 128]


def test_quick_preset_is_small():
    cfg = resolve_config("quick", "nnmamba", "single-oa")
    assert max(cfg["input_shape"]) <= 48 and cfg["width"] <= 16


def test_command_line_overrides_win_and_a_single_size_makes_a_cube():
    cfg = resolve_config("quick", "resnet3d", "dual", overrides={"epochs": 3, "input_shape": [24], "lr": None})
    assert cfg["epochs"] == 3 and cfg["input_shape"] == [24, 24, 24]
    assert cfg["lr"] == load_preset("quick")["lr"]  # None = not given


def test_unknown_override_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown option"):
        resolve_config("quick", "resnet3d", "dual", overrides={"learning_rate": 0.1})


def test_unknown_key_in_a_preset_file_is_a_config_error(tmp_path: Path):
    text = Path(load_preset("quick")["_path"]).read_text() + "warmup: 5\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="warmup") as err:
        load_preset(bad)
    assert str(bad) in str(err.value)


def test_unknown_key_in_a_backbone_block_is_a_config_error(tmp_path: Path):
    text = Path(load_preset("quick")["_path"]).read_text().replace("  nnmamba:\n", "  nnmamba:\n    depth: 3\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match="depth"):
        load_preset(bad)


@pytest.mark.parametrize("override", [{"epochs": 0}, {"amp": "fp8"}, {"head": "stacked"}, {"input_shape": [4, 4]},
                                      {"batch_size": "2"}])
def test_invalid_values_are_config_errors(override):
    with pytest.raises(ConfigError):
        resolve_config("quick", "resnet3d", "dual", overrides=override)


def test_unknown_preset_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="quick"):
        load_preset("fast")


def test_saved_config_round_trips(tmp_path: Path):
    cfg = resolve_config("quick", "m3t", "dual", data=tmp_path, overrides={"epochs": 2})
    save_config(tmp_path / "config.yaml", cfg)
    assert load_config(tmp_path / "config.yaml") == cfg
    assert spec_dict(cfg)["input_shape"] == cfg["input_shape"]


def test_resume_may_extend_epochs_but_not_change_the_model():
    cfg = resolve_config("quick", "resnet3d", "dual")
    assert apply_resume_overrides(cfg, {"epochs": 20, "width": None})["epochs"] == 20
    with pytest.raises(ConfigError, match="width"):
        apply_resume_overrides(cfg, {"width": 32})


def test_reorient_is_a_preset_option_carried_by_the_model_spec():
    from kneeoa.config import spec_dict
    from kneeoa.models.registry import ModelSpec

    cfg = resolve_config("paper", "resnet3d", "dual")
    assert cfg["reorient"] == "ras"  # identical to the paper's order on RAS-stored OAI-ZIB-CM files
    spec = ModelSpec.from_dict(spec_dict(resolve_config("quick", "resnet3d", "dual", overrides={"reorient": "none"})))
    assert spec.reorient == "none" and ModelSpec.from_dict(spec.to_dict()) == spec
    old_card = {k: v for k, v in spec.to_dict().items() if k != "reorient"}  # written by KneeOA 0.1
    assert ModelSpec.from_dict(old_card).reorient == "ras"
    with pytest.raises(ConfigError, match="reorient"):
        resolve_config("quick", "resnet3d", "dual", overrides={"reorient": "lps"})

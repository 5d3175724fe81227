"""`TrainConfig`: one typed, frozen definition of every training option (YAML, CLI flags, engine attributes)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kneeoa.config import OPTIONS, TrainConfig, load_config, load_preset, resolve_config, save_config
from kneeoa.errors import ConfigError


def _preset_copy(tmp_path: Path, edit) -> Path:
    bad = tmp_path / "edited.yaml"
    bad.write_text(edit(Path(load_preset("quick")["_path"]).read_text()))
    return bad


def test_the_engine_reads_attributes_of_a_frozen_config():
    cfg = resolve_config("quick", "resnet3d", "dual", overrides={"epochs": 3})
    assert isinstance(cfg, TrainConfig) and cfg.epochs == 3 and cfg.lr == pytest.approx(1e-3)
    assert isinstance(cfg.lr, float)  # `lr: 1` in YAML is still a float learning rate
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 5


def test_a_duplicate_key_in_a_preset_is_refused_naming_the_file(tmp_path):
    bad = _preset_copy(tmp_path, lambda text: text + "lr: 0.5\n")
    with pytest.raises(ConfigError, match="duplicate key 'lr'") as err:
        load_preset(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("line, message", [("epochs: ten", "epochs must be int"), ("amp: fp8", "amp"),
                                           ("input_shape: [4, 4, 4]", "input_shape"), ("cache: 1", "cache must be bool")])
def test_a_wrong_type_or_value_in_a_preset_names_the_file_and_the_key(tmp_path, line, message):
    key = line.split(":")[0]
    bad = _preset_copy(tmp_path, lambda text: "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"{key}:"))
                       + f"\n{line}\n")
    with pytest.raises(ConfigError, match=message) as err:
        resolve_config(bad, "resnet3d", "dual")
    assert str(bad) in str(err.value)


def test_a_run_config_saved_before_the_newest_options_still_loads(tmp_path):
    cfg = resolve_config("quick", "m3t", "dual", data=tmp_path)
    save_config(tmp_path / "config.yaml", cfg)
    old = "\n".join(ln for ln in (tmp_path / "config.yaml").read_text().splitlines() if not ln.startswith("m3t_"))
    (tmp_path / "config.yaml").write_text(old + "\nkneeoa_version: 0.1.0\n")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_the_train_flags_are_generated_from_the_options():
    from kneeoa.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.option_strings[0]: a for a in train._actions if a.option_strings}
    for name, option in OPTIONS.items():
        if option.flag is None:
            assert f"--{name.replace('_', '-')}" not in flags
            continue
        action = flags[option.flag]
        assert action.default is None and action.help == option.help
        assert action.choices == option.choices or option.choices is None
    args = build_parser().parse_args(["train", "--out", "r", "--no-cache", "--input-size", "24", "--lr", "0.1"])
    from kneeoa.config import overrides_from_args

    given = {k: v for k, v in overrides_from_args(args).items() if v is not None}
    assert given == {"cache": False, "input_shape": [24], "lr": 0.1}


def test_the_input_shape_rule_is_one_rule_for_config_and_model_spec():
    from kneeoa.models.registry import ModelSpec

    with pytest.raises(ConfigError) as from_config:
        resolve_config("quick", "resnet3d", "dual", overrides={"input_shape": [4, 8, 8]})
    with pytest.raises(ConfigError) as from_spec:
        ModelSpec("resnet3d", "dual", input_shape=(4, 8, 8))
    assert from_config.value.problem == from_spec.value.problem

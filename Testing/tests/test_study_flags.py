"""`kneeoa study`'s training overrides are `kneeoa train`'s flags, generated from the same TrainConfig fields
(help, type, choices), and a CV plan's plain `kneeoa train` command lines say exactly those overrides."""

from __future__ import annotations

import argparse
import json

import pytest

from kneeoa.cli import build_parser, main
from kneeoa.commands.study import NOT_STUDY_WIDE, STUDY_OPTIONS, overrides_from
from kneeoa.config import FLAGGED, OPTIONS, check_overrides, overrides_from_args, train_flag_argv
from kneeoa.errors import ConfigError


def _actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    return {s: a for a in parser._actions for s in a.option_strings}


def _same_flag(a: argparse.Action, b: argparse.Action) -> tuple:
    return (a.dest, a.help, a.type, a.choices, a.nargs, a.default, a.metavar, type(a).__name__) == \
        (b.dest, b.help, b.type, b.choices, b.nargs, b.default, b.metavar, type(b).__name__)


def test_every_training_flag_is_either_a_study_flag_or_set_by_the_study_for_a_stated_reason():
    assert set(STUDY_OPTIONS) | set(NOT_STUDY_WIDE) == set(FLAGGED)
    assert not set(STUDY_OPTIONS) & set(NOT_STUDY_WIDE)
    assert all(reason.strip() for reason in NOT_STUDY_WIDE.values())


def test_study_flags_are_the_train_flags_generated_from_train_config():
    train, study = _actions("train"), _actions("study")
    for name in STUDY_OPTIONS:
        flag = OPTIONS[name].flag
        assert _same_flag(study[flag], train[flag]), f"kneeoa study {flag} differs from kneeoa train {flag}"
        assert study[flag].help == OPTIONS[name].help
    for name in NOT_STUDY_WIDE:
        assert OPTIONS[name].flag not in study


def test_the_flags_users_already_type_mean_what_they_meant():
    """README and the Slicer module pass --epochs --width --input-size --device; `--seeds` stays cv's."""
    args = build_parser().parse_args(["study", "--data", "c", "--out", "s", "--epochs", "2", "--width", "4",
                                      "--input-size", "16", "--device", "cpu", "--seeds", "2"])
    given = {k: v for k, v in overrides_from(args).items() if v is not None}
    assert given == {"epochs": 2, "width": 4, "input_shape": [16], "device": "cpu"}
    assert check_overrides(given) == {"epochs": 2, "width": 4, "input_shape": [16, 16, 16], "device": "cpu"}
    assert args.seeds == 2


def test_wrong_types_and_choices_are_refused_by_the_generated_parser(capsys):
    for argv in (["--epochs", "two"], ["--amp", "fp8"], ["--device", "tpu"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["study", "--data", "c", "--out", "s", *argv])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_a_bad_override_is_refused_before_a_cv_study_plans_anything(tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["study", "--protocol", "cv", "--data", str(tmp_path / "cohort"), "--out", str(out),
                 "--plan", "--epochs", "0"]) != 0
    assert "invalid value for epochs: 0" in capsys.readouterr().err
    assert not out.exists()  # the rule is TrainConfig's, checked once before plan.json, not in every run


def test_a_plans_plain_train_command_parses_back_to_the_same_overrides():
    overrides = {"epochs": 3, "lr": 0.0005, "weight_decay": 0.0, "batch_size": 2, "input_shape": [16, 24, 24],
                 "width": 4, "head": "parallel", "lambda_oa": 0.5, "device": "cpu", "workers": 0, "amp": "bf16",
                 "channels_last": True, "m3t_pretrained": "imagenet", "reorient": "none",
                 "calibration_fraction": 0.25, "cache_dir": "/tmp/cache", "cache": False}
    argv = [w for name, value in overrides.items() for w in train_flag_argv(name, value)]
    args = build_parser().parse_args(["train", "--out", "r", *argv])
    given = {k: v for k, v in overrides_from_args(args).items() if v is not None}
    assert check_overrides(given) == overrides
    with pytest.raises(ConfigError, match="no `kneeoa train` flag"):
        train_flag_argv("channels_last", False)  # a switch cannot say "off": the plan refuses, not guesses
    with pytest.raises(ConfigError, match="no `kneeoa train` flag"):
        train_flag_argv("deterministic", True)


def test_plan_json_commands_carry_the_new_study_flags(tmp_path):
    """--batch-size and --amp (study flags since they are generated) reach every run and its plain command."""
    from kneeoa.data.phantom import generate_cohort

    cohort = tmp_path / "cohort"
    generate_cohort(cohort, 6, 3, shape=(16, 16, 16), seed=1, bilateral=0.5)
    out = tmp_path / "cv"
    assert main(["study", "--protocol", "cv", "--data", str(cohort), "--out", str(out), "--folds", "2",
                 "--seeds", "1", "--backbones", "resnet3d", "--variants", "dual", "--plan", "--batch-size", "3",
                 "--amp", "bf16", "--input-size", "16"]) == 0
    plan = json.loads((out / "plan.json").read_text())
    assert plan["overrides"] == {"cache_dir": str(out.resolve() / "cache"), "batch_size": 3,
                                 "input_shape": [16, 16, 16], "amp": "bf16"}
    train_line = plan["tasks"][0]["plain_commands"][0]
    assert "--batch-size 3" in train_line and "--amp bf16" in train_line and "--input-size 16 16 16" in train_line

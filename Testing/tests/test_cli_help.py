"""Every subcommand's --help says what it does, its inputs, its outputs and one example, and every option
has help text. Generic over every subcommand the parser has: a command added later is checked without editing this file.

The convention (kneeoa/cli.py): the description has a first paragraph saying what the command does, then
`inputs:`, `outputs:` and `example:  kneeoa <command> ...` lines (the example may sit in the epilog).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from kneeoa.cli import NO_THREADS, build_parser, command_names

COMMANDS = command_names()


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


@pytest.mark.parametrize("name", COMMANDS)
def test_help_says_what_inputs_outputs_and_an_example(name):
    text = _subparser(name).format_help()
    description = f"{_subparser(name).description or ''}\n\n{_subparser(name).epilog or ''}"
    what = description.split("\n\n")[0].strip()
    assert len(what) > 40, f"{name}: the first paragraph should say what the command does"
    for label in ("inputs:", "outputs:", "example:"):
        assert f"\n{label}" in f"\n{description}", f"kneeoa {name} --help has no {label!r} line"
    example = description.split("example:", 1)[1].strip().splitlines()[0]
    assert example.startswith(f"kneeoa {name}"), f"{name}: the example should be a `kneeoa {name} ...` line"
    assert "inputs:" in text and "example:" in text  # what the user sees keeps the layout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_has_help_text(name):
    parser = _subparser(name)
    missing = [a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)
               and not (a.help or "").strip()]
    assert not missing, f"kneeoa {name}: options without help: {missing}"


@pytest.mark.parametrize("name", COMMANDS)
def test_example_options_exist(name):
    """The example only uses options the command has (a renamed option would leave a stale example)."""
    parser = _subparser(name)
    example = f"{parser.description}\n{parser.epilog}".split("example:", 1)[1].strip().splitlines()[0]
    known = {s for a in parser._actions for s in a.option_strings}
    used = [w for w in example.split() if w.startswith("--")]
    assert set(used) <= known, f"{name}: example uses unknown options {set(used) - known}"


@pytest.mark.parametrize("name", [c for c in COMMANDS if c not in NO_THREADS])
def test_computing_commands_take_threads(name):
    args = build_parser().parse_args([name, *_required_args(name), "--threads", "3"])
    assert args.threads == 3


def _required_args(name: str) -> list[str]:
    """Minimal arguments that satisfy the command's required options and positionals (values unused)."""
    out: list[str] = []
    for action in _subparser(name)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            out.append("x")
        elif action.required:
            out += [action.option_strings[0], "x"]
    for group in _subparser(name)._mutually_exclusive_groups:
        if group.required:
            out += [group._group_actions[0].option_strings[0], "x"]
    return out


def test_top_level_help_is_for_users_and_lists_examples():
    proc = subprocess.run([sys.executable, "-m", "kneeoa", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "KneeOA: knee osteoarthritis" in proc.stdout
    assert "examples:" in proc.stdout and "Resources/demo_model.safetensors" in proc.stdout
    assert "add_parser" not in proc.stdout  # not the developer docstring
    for name in COMMANDS:
        assert name in proc.stdout

"""Off a terminal, long jobs print one plain line per finished step (a `make demo > log` is not silent)."""

from __future__ import annotations

import pytest

from kneeoa import progress
from kneeoa.progress import Progress


def test_lines_mode_prints_finished_steps_throttled_and_always_the_last(monkeypatch, capsys):
    monkeypatch.setenv(progress.MODE_ENV, "lines")
    with Progress("study", total=3, unit="model") as bar:
        for name in ("resnet3d_single_oa", "resnet3d_single_kl", "resnet3d_dual"):
            bar.update(1, model=name, seconds=1.5)
    lines = capsys.readouterr().err.splitlines()
    # the first step prints, the second falls inside the 10 s window, the last always prints
    assert lines == [line for line in lines if line.startswith("kneeoa: study ")]
    assert len(lines) == 2
    assert "1/3 models" in lines[0] and "model=resnet3d_single_oa" in lines[0]
    assert "3/3 models" in lines[1] and "model=resnet3d_dual" in lines[1]


def test_every_step_prints_when_steps_are_slower_than_the_interval(monkeypatch, capsys):
    monkeypatch.setenv(progress.MODE_ENV, "lines")
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    with Progress("train", total=4, unit="epoch") as bar:
        for _ in range(4):
            bar.update(1, loss=0.5)
    assert len(capsys.readouterr().err.splitlines()) == 4


def test_a_task_of_big_steps_prints_every_one(monkeypatch, capsys):
    monkeypatch.setenv(progress.MODE_ENV, "lines")
    with Progress("study", total=3, unit="model", every_line=True) as bar:
        for _ in range(3):
            bar.update(1)
    assert [line.split()[2] for line in capsys.readouterr().err.splitlines()] == ["1/3", "2/3", "3/3"]


def test_none_mode_stays_silent(monkeypatch, capsys):
    monkeypatch.setenv(progress.MODE_ENV, "none")
    with Progress("study", total=2, unit="model") as bar:
        bar.update(2)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command, args, expected", [
    ("train", ["--out", "x"], "lines"),      # a long job off a terminal
    ("stats", ["x", "--out", "y"], "none"),  # a short one keeps stderr for its result or error
])
def test_the_cli_picks_lines_for_long_jobs_off_a_terminal(monkeypatch, command, args, expected):
    import importlib

    from kneeoa.cli import main

    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    seen = {}
    module = importlib.import_module(f"kneeoa.commands.{command}")
    monkeypatch.setattr(module, "run", lambda a: seen.setdefault("mode", progress.mode()) and 0)
    assert main([command, *args, "--threads", "1"]) == 0
    assert seen["mode"] == expected
    assert progress.MODE_ENV not in __import__("os").environ  # nothing leaks into the caller's process


def test_an_explicit_progress_none_keeps_a_long_job_silent(monkeypatch):
    from kneeoa.cli import main
    from kneeoa.commands import train

    monkeypatch.delenv(progress.MODE_ENV, raising=False)
    seen = {}
    monkeypatch.setattr(train, "run", lambda a: seen.setdefault("mode", progress.mode()) and 0)
    assert main(["--progress", "none", "train", "--out", "x", "--threads", "1"]) == 0
    assert seen["mode"] == "none"
    monkeypatch.delenv(progress.MODE_ENV, raising=False)

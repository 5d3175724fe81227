"""CPU threads: a default that leaves room for other work, an order of precedence, and torch really using it.

Speed under load is measured in benchmarks/bench_threads.py (quiet vs a competing CPU hog), not here.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kneeoa.errors import ConfigError
from kneeoa.threads import THREADS_ENV, default_threads, resolve_threads


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8), (64, 32)])
def test_the_default_is_half_the_cores_and_at_least_one(cores, expected):
    assert default_threads(cores) == expected


def test_precedence_flag_then_kneeoa_env_then_omp_env_then_default(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads() == (default_threads(), "default")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv(THREADS_ENV, "2")
    assert resolve_threads() == (2, THREADS_ENV)
    assert resolve_threads(5) == (5, "--threads")
    monkeypatch.setenv(THREADS_ENV, "lots")  # unreadable values are ignored, not fatal
    assert resolve_threads() == (3, "OMP_NUM_THREADS")
    with pytest.raises(ConfigError):
        resolve_threads(0)


def _child(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in (THREADS_ENV, "OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**base, **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_torch_loaded_after_the_choice_uses_it_and_waits_passively():
    out = _child("from kneeoa.threads import configure_threads\n"
                 "configure_threads(1, announce=False)\n"
                 "import os, torch\n"
                 "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])")
    assert out == "1 PASSIVE"


def test_torch_loaded_before_the_choice_is_resized():
    import torch

    before = torch.get_num_threads()
    try:
        from kneeoa.threads import configure_threads

        assert configure_threads(2, announce=False) == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        os.environ["OMP_NUM_THREADS"] = "1"  # the suite's setting (engine tests run single-threaded)
        os.environ.pop(THREADS_ENV, None)


def test_the_cli_applies_threads_and_says_so_for_long_jobs(tmp_path):
    """`--threads` reaches torch inside the command; `train` announces the choice even off a terminal."""
    code = ("import sys, torch\n"
            "from kneeoa import cli\n"
            "from kneeoa.commands import train\n"
            "train.run = lambda args: print('torch threads', torch.get_num_threads()) or 0\n"
            "sys.exit(cli.main(['--progress', 'none', 'train', '--out', 'x', '--threads', '1']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr
    assert "torch threads 1" in proc.stdout
    assert "kneeoa: 1 CPU thread(s) of" in proc.stderr and "--threads" in proc.stderr

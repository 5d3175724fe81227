"""The CLI starts light: `kneeoa --help`, `phantom`, `stats` and `merge` never import torch or MONAI.

Under load, importing torch alone took tens of seconds (issue 19: `kneeoa models` 41 s); commands that do
not need a network must not pay for it. Each command runs in a fresh interpreter that then reports which
heavy packages ended up in sys.modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kneeoa.analysis.synthetic_preds import write_synthetic_predictions
from kneeoa.engine.score_io import ensure_header

HEAVY = ("torch", "monai", "captum")
CHILD = """
import json, sys
from kneeoa.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exit:  # --help
    rc = exit.code
print(json.dumps({"rc": rc, "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _run(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KNEEOA_PROGRESS": "none"}
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("light")
    write_synthetic_predictions(root / "preds", n_subjects=20, seed=0)
    for name in ("s0.csv", "s1.csv"):
        ensure_header(root / name)
    return root


@pytest.mark.parametrize("name", ["help", "command help", "phantom", "stats", "merge"])
def test_light_commands_never_import_torch_or_monai(inputs, name):
    args = {
        "help": ["--help"],
        "command help": ["train", "--help"],
        "phantom": ["phantom", str(inputs / "cohort"), "--train", "2", "--test", "1", "--shape", "16", "16", "16",
                    "--workers", "1", "--threads", "1"],
        "stats": ["stats", str(inputs / "preds"), "--out", str(inputs / "stats.csv"), "--resamples", "20",
                  "--threads", "1", "--overwrite"],
        "merge": ["merge", str(inputs / "merged.csv"), str(inputs / "s0.csv"), str(inputs / "s1.csv"), "--overwrite"],
    }[name]
    result = _run(*args)
    assert result["rc"] == 0
    assert result["heavy"] == [], f"kneeoa {' '.join(args[:1])} imported {result['heavy']}"

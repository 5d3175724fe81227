"""Robustness class 4: background jobs run only our code.

A folder holding files named like our dependencies (torch.py, safetensors.py, numpy.py, yaml.py, each of
which would create a marker file when imported) is planted; the test first proves the payloads are
live (a plain `python -m kneeoa` started there imports them), then that every way KneeOA starts a
child (`jobs.Job`, with the user's folder as its working folder or none) does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kneeoa.slicer import jobs

DEPENDENCIES = ("torch", "safetensors", "numpy", "yaml", "nibabel", "SimpleITK")
ROOT = Path(__file__).resolve().parents[2]


def _plant(folder: Path) -> Path:
    """Files named like dependencies that leave a marker (naming themselves) when imported."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "PWNED"
    for name in DEPENDENCIES:
        (folder / f"{name}.py").write_text(
            f"import pathlib\npathlib.Path({str(marker)!r}).open('a').write({name!r} + '\\n')\n"
            "raise SystemExit('planted module ran')\n")
    return marker


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env["PYTHONPATH"] = str(ROOT)
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


@pytest.fixture()
def planted(tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "user folder"
    return folder, _plant(folder)


def test_the_planted_modules_are_live(planted):
    folder, marker = planted
    proc = subprocess.run([sys.executable, "-m", "kneeoa", "grade", "knee.nii.gz", "--checkpoint", "m.safetensors",
                           "--result-json", "r.json"], cwd=folder, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and marker.is_file(), proc.stderr


def test_a_job_started_in_a_folder_with_planted_modules_runs_only_our_code(planted, tmp_path, monkeypatch):
    """The hardest case: the user's folder is the job's working folder (default: `jobs.safe_cwd()`)."""
    import numpy as np
    from reliability_helpers import good_array, tiny_checkpoint

    from kneeoa.data.volume import write_nifti

    folder, marker = planted
    image = write_nifti(tmp_path / "knee.nii.gz", good_array(), np.eye(4))
    checkpoint = tiny_checkpoint(tmp_path / "model.safetensors")
    monkeypatch.chdir(folder)  # Slicer's own working folder may be anywhere, e.g. the user's data folder
    argv = jobs.grade_command(image, checkpoint, tmp_path / "result.json", device="cpu", python=sys.executable)
    job = jobs.Job(argv, env=_env(), cwd=folder).start()
    assert job.wait(timeout_s=120) == 0, list(job.tail)
    assert not marker.exists(), marker.read_text()
    assert job.result is not None and job.result["pred_oa"] in (0, 1)


def test_the_default_working_folder_holds_no_module_named_like_a_dependency():
    """Interpreters older than 3.11 ignore PYTHONSAFEPATH: there the safe working folder is what protects."""
    safe = jobs.safe_cwd()
    assert safe.is_dir() and (safe / "kneeoa" / "__init__.py").is_file()
    assert not [n for n in DEPENDENCIES if (safe / f"{n}.py").exists() or (safe / n).is_dir()]


def test_job_environment_asks_for_a_safe_path():
    assert jobs.job_environment({})["PYTHONSAFEPATH"] == "1"


def test_study_executors_start_children_safely(tmp_path):
    """The CV study's local executor and SLURM script: PYTHONSAFEPATH, our package first on PYTHONPATH."""
    from kneeoa.studyexec.local import child_environment
    from kneeoa.studyexec.slurm import SlurmOptions, write_script

    env = child_environment(0, 2, None, base={"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONSAFEPATH"] == "1" and env["PYTHONPATH"].split(os.pathsep)[0] == str(jobs.KNEEOA_ROOT)
    script = write_script(tmp_path / "study", [0, 1], SlurmOptions()).read_text()
    assert "export PYTHONSAFEPATH=1" in script

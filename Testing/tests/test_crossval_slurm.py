"""A tiny CV study as a real SLURM job array on a single-node cluster started by the fixture.

Needs Debian's slurm-wlm and munge (installed by .ci/run) and root. Outside CI a missing SLURM is a
loud skip naming what is missing; in CI (CI=true) it is a failure.
"""

from __future__ import annotations

import json

import pytest
from slurm_helpers import Cluster, require_slurm


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory, request):
    paths = require_slurm()
    cluster = Cluster(tmp_path_factory.mktemp("slurm"), paths)
    request.addfinalizer(cluster.stop)
    return cluster.start()


@pytest.mark.slow
def test_cv_study_runs_as_a_slurm_job_array(slurm_cluster, tmp_path, monkeypatch, capsys):
    from kneeoa.cli import main
    from kneeoa.data.phantom import generate_cohort

    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    data = tmp_path / "cohort"
    generate_cohort(data, 12, 6, shape=(24, 24, 24), seed=5, bilateral=0.5, workers=1)
    out = tmp_path / "cv"
    args = ["study", "--protocol", "cv", "--data", str(data), "--out", str(out), "--folds", "3", "--seeds", "1",
            "--backbones", "resnet3d", "--variants", "single-oa,dual", "--epochs", "1", "--width", "4",
            "--input-size", "16", "--device", "cpu", "--resamples", "100",
            "--executor", "slurm", "--gpus-per-task", "0", "--cpus-per-task", "1", "--array-throttle", "2",
            "--time", "00:20:00"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "submitted job array" in printed, printed
    script = (out / "slurm" / "study.sbatch").read_text()
    assert "#SBATCH --array=0-5%2" in script
    job_id = json.loads((out / "slurm" / "submitted.json").read_text())[0]["job_id"]
    slurm_cluster.wait_idle(timeout_s=600)
    logs = sorted((out / "logs").glob("task_*.log"))
    assert len(logs) == 6, slurm_cluster.logs()
    assert main(["study", "--collect", str(out), "--resamples", "100"]) == 0, \
        "\n".join(p.read_text()[-2000:] for p in logs)
    summary = json.loads((out / "study.json").read_text())
    assert (summary["done"], summary["failed"], summary["unfinished"]) == (6, 0, 0)
    assert ">Conclusions across seeds and folds</h2>" in (out / "report.html").read_text(encoding="utf-8")
    assert job_id.isdigit()
    # everything finished: submitting again has nothing to run and only collects
    assert main(args) == 0
    assert "sbatch script" not in capsys.readouterr().out

"""Real `kneeoa --progress json train` jobs as the module runs them: live progress, cancel that leaves a
resumable run, `--resume` to the end, and the predict + latent chain of a run (tiny phantom, width 4, CPU)."""

from __future__ import annotations

import math

import pytest
from slicer_helpers import fresh_scene

from kneeoa.slicer import jobs, latent_cases, latent_plot, training
from kneeoa.utils.processes import alive

TINY = {"input_size": 24, "width": 4, "device": "cpu"}


def _env():
    return {**jobs.job_environment(), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(phantom_cohort, tmp_path_factory):
    """One epoch trained through a background Job, every event it printed, and the monitor fed with them."""
    run = tmp_path_factory.mktemp("train") / "run"
    options = training.TrainingOptions(phantom_cohort, run, epochs=1, **TINY)
    job = jobs.Job(training.train_command(options), env=_env()).start()
    monitor, events, redraws = training.TrainingMonitor(), [], []
    rc = job.wait(lambda e: (events.append(e), redraws.append(monitor.update(e))), timeout_s=300)
    assert rc == 0, job.error_message()
    return {"run": run, "events": events, "monitor": monitor, "redraws": redraws, "job": job}


def test_progress_lines_of_a_real_training_become_one_epoch_with_loss_and_accuracy(trained):
    monitor = trained["monitor"]
    train_events = [e for e in trained["events"] if e.get("task") == "train"]
    assert [e["event"] for e in train_events] == ["start", "progress", "end"]
    assert sum(trained["redraws"]) == 1 and monitor.epochs_total == 1
    (row,) = monitor.history
    assert row["epoch"] == 1 and math.isfinite(row["loss"]) and row["loss"] > 0
    assert row["metric_name"] == "train_kl_acc" and 0.0 <= row["metric"] <= 1.0
    assert monitor.fraction == 1.0 and trained["job"].fraction == 1.0
    assert monitor.status().startswith("epoch 1/1, loss ")


def test_the_finished_run_folder_and_its_loss_plot(trained):
    state = training.run_state(trained["run"])
    assert (state.kind, state.epochs_done, state.finished, state.resumable) == ("run", 1, True, False)
    table, _ = training.update_loss_plot(trained["monitor"].history, fresh_scene())
    assert table.GetTable().GetNumberOfRows() == 1
    assert table.GetTable().GetValueByName(0, "Loss").ToDouble() == pytest.approx(trained["monitor"].history[0]["loss"])


def test_run_state_reads_the_trainer_state_without_importing_torch(trained):
    import subprocess
    import sys

    code = ("import sys; from kneeoa.slicer import training; s = training.run_state(sys.argv[1]); "
            "print(s.finished, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(trained["run"])], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]


def test_latent_chain_of_a_run_embeds_the_cohort_and_fits_the_pca(trained, phantom_cohort):
    source = latent_cases.latent_source(trained["run"], compute=True, device="cpu")
    assert source.cohort_root == phantom_cohort and [s[5] for s in source.steps] == ["predict", "latent"]
    events = []
    latent_cases.run_source(source, _env(), on_event=events.append, timeout_s=300)
    assert any(e["event"] == "result" and e.get("task") == "latent" for e in events)
    points = latent_plot.read_points(source.points_csv)
    assert latent_plot.model_names(points) == ["resnet3d_dual"] and len(points) == 18
    again = latent_cases.latent_source(trained["run"])  # tables there now: nothing to run
    assert again.ready and not again.steps


def test_a_failing_step_stops_the_chain_with_its_error(tmp_path, phantom_cohort):
    (tmp_path / "broken.safetensors").write_bytes(b"not a checkpoint")
    source = latent_cases.latent_source(tmp_path / "out", tmp_path / "broken.safetensors", phantom_cohort)
    chain = latent_cases.JobChain(source.steps, _env()).start()
    assert chain.wait(timeout_s=120) != 0
    assert chain.index == 0 and "broken.safetensors" in chain.error_message()


@pytest.mark.slow
def test_cancel_kills_the_training_tree_and_resume_completes_the_run(phantom_cohort, tmp_path):
    run = tmp_path / "run"
    epochs = 25
    options = training.TrainingOptions(phantom_cohort, run, epochs=epochs, **TINY)
    job = jobs.Job(training.train_command(options), env=_env()).start()
    monitor = training.TrainingMonitor()
    try:
        job.wait(lambda e: monitor.update(e) and job.cancel(), timeout_s=300)  # cancel at the first epoch
    finally:
        job.cancel()
    assert job.cancelled and job.returncode != 0
    assert not alive(job.process.pid) and not any(alive(p) for p in jobs.descendants(job.process.pid))
    state = training.run_state(run)
    assert state.kind == "run" and state.resumable and 1 <= state.epochs_done < epochs

    resumed = training.TrainingMonitor(epochs_total=state.epochs_total)
    resumed.load_history(run)
    job = jobs.Job(training.resume_command(run, device="cpu"), env=_env()).start()
    assert job.wait(resumed.update, timeout_s=300) == 0, job.error_message()
    assert [r["epoch"] for r in resumed.history] == list(range(1, epochs + 1))
    final = training.run_state(run)
    assert final.finished and final.epochs_done == epochs

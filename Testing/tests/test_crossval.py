"""Cross-validated, multi-seed studies: two-knee phantom subjects, grouped folds, the clustered bootstrap,
the across-seeds summary, the executors' scripts and plan, and a tiny K=3 x S=2 study end to end."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest

from kneeoa.errors import ConfigError

TINY = ["--backbones", "resnet3d", "--variants", "single-oa,dual", "--epochs", "1", "--width", "4",
        "--input-size", "16", "--device", "cpu", "--resamples", "200"]


@pytest.fixture(scope="module")
def bilateral_cohort(tmp_path_factory):
    """16 train + 8 test phantom knees (24^3), about half of them one subject's left and right knee."""
    from kneeoa.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("bilateral") / "cohort"
    summary = generate_cohort(root, 16, 8, shape=(24, 24, 24), seed=3, bilateral=0.5, workers=2)
    assert summary["n_bilateral_subjects"] >= 3
    return root


# --- phantom ------------------------------------------------------------------------------------------
def test_second_knee_shares_the_subject_with_the_other_side_and_correlated_severity():
    from kneeoa.data.phantom.severity import TRUE_BALANCE, bilateral_partner, case_labels

    firsts, seconds, true_kl = [], [], []
    for number in range(2, 1602, 2):
        partner = bilateral_partner(7, number, share=1.0)
        assert partner == number - 1
        a, b = case_labels(7, partner), case_labels(7, number, partner)
        assert (a.subject_id, a.gender, a.age, a.bmi) == (b.subject_id, b.gender, b.age, b.bmi)
        assert {a.knee_side, b.knee_side} == {"left", "right"}
        assert b.path.rsplit("/", 1)[0] == a.path.rsplit("/", 1)[0]  # same subject folder and visit
        firsts.append(a.severity)
        seconds.append(b.severity)
        true_kl.append(b.true_kl)
    assert np.corrcoef(firsts, seconds)[0, 1] > 0.5  # OAI: a subject's knees are alike
    share = np.bincount(true_kl, minlength=5) / len(true_kl)
    assert np.abs(share - np.asarray(TRUE_BALANCE)).max() < 0.05  # the copula keeps the class balance


def test_bilateral_zero_leaves_every_case_as_before():
    from kneeoa.data.phantom.severity import bilateral_partner, case_labels

    assert all(bilateral_partner(0, n, 0.0) is None for n in range(1, 50))
    assert bilateral_partner(0, 3, 1.0) is None  # odd numbers open a pair
    assert bilateral_partner(0, 4, 1.0, same_split=False) is None
    assert case_labels(0, 5) == case_labels(0, 5, None)


def test_phantom_pairs_never_straddle_the_official_split(bilateral_cohort):
    from kneeoa.crossval.folds import subject_of
    from kneeoa.data.cohort import load_cohort

    cohort = load_cohort(bilateral_cohort)
    splits = defaultdict(set)
    for case in cohort.cases:
        splits[subject_of(case)].add(case.split)
    assert all(len(s) == 1 for s in splits.values())
    assert max(Counter(subject_of(c) for c in cohort.cases).values()) == 2


# --- folds --------------------------------------------------------------------------------------------
def test_folds_keep_a_subjects_knees_together_and_balance_grades(bilateral_cohort, tmp_path):
    from kneeoa.crossval.folds import load_or_make_folds, subject_of
    from kneeoa.data.cohort import load_cohort

    cohort = load_cohort(bilateral_cohort)
    folds = load_or_make_folds(tmp_path, cohort, 3)
    graded = cohort.split("all")
    assert set(folds) == {c.case_id for c in graded} and set(folds.values()) == {0, 1, 2}
    by_subject = defaultdict(set)
    for case in graded:
        by_subject[subject_of(case)].add(folds[case.case_id])
    assert all(len(f) == 1 for f in by_subject.values())
    sizes = Counter(folds.values())
    assert max(sizes.values()) - min(sizes.values()) <= 3
    # the table is reused: another seed does not reshuffle a study that has started
    assert load_or_make_folds(tmp_path, cohort, 3, seed=99) == folds
    with pytest.raises(ConfigError, match="not --folds 4"):
        load_or_make_folds(tmp_path, cohort, 4)


def test_fold_view_is_a_cohort_holding_out_exactly_its_fold(bilateral_cohort, tmp_path):
    from kneeoa.crossval.folds import load_or_make_folds, write_fold_views
    from kneeoa.data.cohort import load_cohort

    cohort = load_cohort(bilateral_cohort)
    folds = load_or_make_folds(tmp_path, cohort, 3)
    roots = write_fold_views(tmp_path, cohort, folds)
    assert write_fold_views(tmp_path, cohort, folds) == roots  # rewriting is harmless
    for fold, root in enumerate(roots):
        view = load_cohort(root)
        assert {c.case_id for c in view.split("test")} == {k for k, f in folds.items() if f == fold}
        assert len(view.split("train")) + len(view.split("test")) == len(folds)
        original = cohort.case(view.split("test")[0].case_id)
        assert view.split("test")[0].image.resolve() == original.image.resolve()
        assert view.split("test")[0].extra["TrueSeverity"] is not None  # the phantom's columns come along


# --- clustered bootstrap ------------------------------------------------------------------------------
def test_cluster_bootstrap_of_duplicated_knees_equals_the_subject_bootstrap():
    """Two identical knees per subject: resampling subjects must give exactly the one-knee bootstrap."""
    from kneeoa.analysis.cluster import PairedScores, clustered_deltas, subject_index
    from kneeoa.analysis.stats import paired_bootstrap

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    a, b = np.clip(y * 0.6 + rng.normal(0.2, 0.3, 40), 0, 1), rng.random(40)
    single = paired_bootstrap(y, a, b, "auc", n_resamples=400, rng=5, chunk_size=400)
    twice = PairedScores(np.repeat(y, 2), np.repeat(a, 2), np.repeat(b, 2))
    groups, n_subjects = subject_index(np.repeat(np.arange(40), 2))
    assert n_subjects == 40
    clustered = clustered_deltas({"t:auc": [twice]}, groups, n_resamples=400, rng=5, chunk_size=400)["t:auc"][0]
    np.testing.assert_allclose(clustered, single.deltas, atol=1e-12)
    # resampling knees instead would pretend to twice the data: a narrower, wrong interval
    naive = paired_bootstrap(twice.y, twice.dual, twice.single, "auc", n_resamples=400, rng=5)
    assert np.std(naive.deltas) < 0.85 * np.std(clustered)


def _pooled_synthetic(tmp_path, seeds):
    from kneeoa.analysis.synthetic_preds import write_synthetic_predictions

    folders = {}
    for s in seeds:
        folders[s] = tmp_path / f"seed{s}"
        write_synthetic_predictions(folders[s], n_subjects=60, seed=s, backbones=("resnet3d",))
    ids = [str(i) for i in range(405, 465)]
    return folders, {i: str(int(i) // 2) for i in ids}, {i: int(i) % 3 for i in ids}


def test_across_seed_summary_counts_seeds_and_combines_by_subject(tmp_path):
    from kneeoa.crossval.aggregate import cv_statistics

    folders, subjects, folds = _pooled_synthetic(tmp_path, [0, 1, 2])
    result = cv_statistics(folders, subjects, folds, n_resamples=300)
    rows, summary = result["rows"], result["summary"]
    assert len(summary) == 6 and len(rows) == 6 * 4  # 6 tests x (3 seeds + combined)
    for entry in summary:
        per_seed = [r for r in rows if (r["backbone"], r["task"], r["metric"]) ==
                    (entry["backbone"], entry["task"], entry["metric"]) and r["seed"] != "combined"]
        deltas = [r["delta"] for r in per_seed]
        assert entry["mean_delta"] == pytest.approx(np.mean(deltas))
        assert entry["sd_delta"] == pytest.approx(np.std(deltas, ddof=1))
        assert entry["n_seeds_sig"] == sum(r["sig_fdr_0.05"] for r in per_seed)
        assert entry["combined_delta"] == pytest.approx(np.mean(deltas))
        assert entry["combined_ci_lo"] <= entry["combined_delta"] <= entry["combined_ci_hi"]
        assert 0 <= entry["n_fold_runs_positive"] <= entry["n_fold_runs"] == 9
    # one seed: the combined estimate is that seed's test
    one = cv_statistics({0: folders[0]}, subjects, folds, n_resamples=300)["rows"]
    for seed_row, comb in zip(one[:6], one[6:]):
        assert (seed_row["delta"], seed_row["ci_lo"], seed_row["p_value"]) == \
            (comb["delta"], comb["ci_lo"], comb["p_value"])


def test_aggregation_refuses_knees_missing_from_the_fold_table(tmp_path):
    from kneeoa.crossval.aggregate import cv_statistics
    from kneeoa.errors import InputError

    folders, subjects, folds = _pooled_synthetic(tmp_path, [0])
    subjects.pop("405")
    with pytest.raises(InputError, match="not in the fold table"):
        cv_statistics(folders, subjects, folds, n_resamples=10)


# --- executors ----------------------------------------------------------------------------------------
def test_slurm_script_runs_one_task_per_array_index(tmp_path):
    from kneeoa.studyexec.slurm import SlurmOptions, array_spec, write_script

    assert array_spec([0, 1, 2, 5, 7, 8], throttle=4) == "0-2,5,7-8%4"
    script = write_script(tmp_path, [3, 4, 9], SlurmOptions(partition="gpu", time="02:00:00", gpus_per_task=1,
                                                            throttle=2, mem="16G")).read_text()
    for line in ("#SBATCH --array=3-4,9%2", "#SBATCH --partition=gpu", "#SBATCH --time=02:00:00",
                 "#SBATCH --gpus-per-task=1", "#SBATCH --mem=16G", f"#SBATCH --output={tmp_path}/logs/task_%a.log"):
        assert line in script
    assert '--run-task' in script and '"$SLURM_ARRAY_TASK_ID"' in script


def test_local_children_get_one_device_each():
    from kneeoa.studyexec.local import child_environment

    envs = [child_environment(slot, 2, ["0", "1"], base={}, cores=8) for slot in range(3)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0"]
    assert {e["KNEEOA_THREADS"] for e in envs} == {e["OMP_NUM_THREADS"] for e in envs} == {"4"}  # 8 cores / 2 jobs
    assert child_environment(0, 4, None, base={"OMP_NUM_THREADS": "9"}, cores=2)["OMP_NUM_THREADS"] == "1"


def test_plan_lists_every_run_with_commands(bilateral_cohort, tmp_path, capsys):
    from kneeoa.cli import main

    out = tmp_path / "plan"
    assert main(["study", "--protocol", "cv", "--data", str(bilateral_cohort), "--out", str(out), "--folds", "3",
                 "--seeds", "2", "--plan", *TINY]) == 0
    plan = json.loads((out / "plan.json").read_text())
    tasks = plan["tasks"]
    assert len(tasks) == 3 * 2 * 2
    assert {(t["fold"], t["seed"], t["variant"]) for t in tasks} == \
        {(f, s, v) for f in range(3) for s in range(2) for v in ("single-oa", "dual")}
    assert len({t["run_dir"] for t in tasks}) == len(tasks)
    train, predict = tasks[0]["plain_commands"]
    assert "kneeoa train" in train and "--input-size 16 16 16" in train and "--seed 0" in train
    assert "kneeoa predict" in predict and tasks[0]["pred_dir"] in predict
    assert not (out / "runs").exists()  # --plan runs nothing


# --- end to end ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_cv_study_end_to_end_local_executor(bilateral_cohort, tmp_path, capsys):
    """K=3 x S=2 with two jobs; `kneeoa stats` reads the pooled folder; a failed task is listed with its log;
    re-running finishes it without retraining the others."""
    from kneeoa.cli import main
    from kneeoa.crossval.plan import read_plan

    out = tmp_path / "cv"
    args = ["study", "--protocol", "cv", "--data", str(bilateral_cohort), "--out", str(out), "--folds", "3",
            "--seeds", "2", "--jobs", "2", *TINY]
    assert main(args) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    for heading in ("Folds", "Runs", "Pooled out-of-fold performance", "Conclusions across seeds and folds",
                    "Latent geometry across folds"):
        assert f">{heading}</h2>" in page
    summary = {(r["task"], r["metric"]) for r in _read(out / "tables" / "cv_seed_summary.csv")}
    assert summary == {("OA", "AUC"), ("OA", "Acc"), ("OA", "F1")}
    stats = _read(out / "tables" / "cv_stats.csv")
    assert {r["seed"] for r in stats} == {"0", "1", "combined"}
    assert len(_read(out / "tables" / "cv_latent_folds.csv")) == 12
    pooled = _read(out / "pooled" / "seed1" / "resnet3d_dual_preds.csv")
    assert len(pooled) == 24 and len({r["CMT_ID"] for r in pooled}) == 24  # every knee once
    assert main(["stats", str(out / "pooled" / "seed0"), "--out", str(tmp_path / "s.csv"), "--resamples", "50"]) == 0

    tasks, _, _ = read_plan(out)
    victim = tasks[0]
    kept = tasks[1].run_dir + "/checkpoints/last.safetensors"
    before = _mtime(kept)
    for path in victim.prediction_files():
        path.unlink()
    (out / "folds" / "fold0" / "subInfo_train.csv").write_text("not,a,table\n")
    assert main(["study", "--run-task", str(out), "--index", "0"]) == 1  # as an executor slot sees it
    assert "table has a header but no rows" in capsys.readouterr().err
    assert main(["study", "--collect", str(out), "--resamples", "50"]) == 1
    printed = capsys.readouterr().out
    assert "failed task 0 (resnet3d_single_oa fold 0 seed 0)" in printed and "task_0.log" in printed
    assert not (out / "pooled" / "seed0" / "resnet3d_single_oa_preds.csv").exists()  # no stale pooled file
    assert (out / "pooled" / "seed1" / "resnet3d_single_oa_preds.csv").exists()
    assert main(args) == 0  # the views are rewritten, the failed task runs again, nothing else retrains
    assert _mtime(kept) == before
    assert json.loads((out / "study.json").read_text())["failed"] == 0


def _read(path):
    from kneeoa.data.tables import read_table

    return [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in read_table(path)]


def _mtime(path):
    from pathlib import Path

    return Path(path).stat().st_mtime_ns


def test_a_terminated_task_is_recorded_as_failed_with_the_reason(bilateral_cohort, tmp_path):
    """SIGTERM (SLURM's time limit, scancel) leaves a failed state with the reason, not a task stuck 'running'."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from kneeoa.crossval.plan import task_command
    from kneeoa.crossval.study import prepare_cv_study, task_states
    from kneeoa.crossval.task import read_status

    out = tmp_path / "cv"
    tasks = prepare_cv_study(bilateral_cohort, out, folds=3, seeds=1, backbones=("resnet3d",), variants=("dual",),
                             overrides={"epochs": 1, "width": 4, "input_shape": [16, 16, 16], "device": "cpu"})
    proc = subprocess.Popen(task_command(out, 0, sys.executable), env={**os.environ, "KNEEOA_PROGRESS": "none"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while (read_status(out, 0) or {}).get("state") != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # past the handler's installation, inside imports or training
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    status = read_status(out, 0)
    assert status["state"] == "failed" and "SIGTERM" in status["error"]
    assert [e["index"] for e in task_states(out, tasks)["failed"]] == [0]


def test_slurm_executor_without_submitting_writes_the_array_of_unfinished_runs(bilateral_cohort, tmp_path, capsys):
    from kneeoa.cli import main

    out = tmp_path / "cv"
    assert main(["study", "--protocol", "cv", "--data", str(bilateral_cohort), "--out", str(out), "--folds", "3",
                 "--seeds", "1", "--executor", "slurm", "--no-submit", "--partition", "gpu", *TINY]) == 0
    assert f"sbatch script: {out / 'slurm' / 'study.sbatch'}" in capsys.readouterr().out
    script = (out / "slurm" / "study.sbatch").read_text()
    assert "#SBATCH --array=0-5\n" in script and "#SBATCH --partition=gpu" in script
    assert not (out / "slurm" / "submitted.json").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc (Linux)")
def test_stopping_a_local_task_reaches_its_whole_process_group(tmp_path):
    """A task's DataLoader workers are its children: stopping the task must not leave them running."""
    import subprocess
    import time

    from kneeoa.studyexec.local import _stop

    pid_file = tmp_path / "grandchild.pid"
    proc = subprocess.Popen(["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"], start_new_session=True)
    deadline = time.monotonic() + 20
    while not (pid_file.is_file() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    _stop(proc, grace_s=5)
    assert proc.returncode is not None
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that a container's PID 1 may never be counts as ended)."""
    import time
    from pathlib import Path

    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


def test_resuming_with_another_grid_is_refused_but_more_seeds_are_fine(bilateral_cohort, tmp_path):
    from kneeoa.crossval.study import prepare_cv_study

    out = tmp_path / "cv"
    first = prepare_cv_study(bilateral_cohort, out, folds=3, seeds=1, backbones=("resnet3d",), variants=("dual",))
    more = prepare_cv_study(bilateral_cohort, out, folds=3, seeds=2, backbones=("resnet3d",), variants=("dual",))
    assert more[:len(first)] == first  # existing tasks keep their index (status files, logs, array ids)
    with pytest.raises(ConfigError, match="variants"):
        prepare_cv_study(bilateral_cohort, out, folds=3, seeds=2, backbones=("resnet3d",), variants=("single-oa",))
    with pytest.raises(ConfigError, match="folds"):
        prepare_cv_study(bilateral_cohort, out, folds=4, seeds=2, backbones=("resnet3d",), variants=("dual",))

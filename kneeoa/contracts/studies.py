"""Names of study protocols, executors and the cross-validated study's files (standard library only)."""

from __future__ import annotations

PROTOCOLS = ("official", "cv")  # official = the published train/test split; cv = subject-grouped K folds
EXECUTORS = ("local", "slurm")  # `--plan` writes the run list for any other engine instead
DEFAULT_FOLDS = 5
DEFAULT_SEEDS = 3

# STUDY/ layout of a CV study (one definition; the executors, the collector and Slicer read these)
FOLD_TABLE = "folds.csv"  # one row per graded knee: case_id, CMT-ID, subject, KLGrade, fold
FOLD_COLUMNS = ["case_id", "CMT-ID", "subject", "KLGrade", "fold"]
PLAN_FILE = "plan.json"  # every run (index, backbone, variant, fold, seed, run_dir, commands)
CV_META_FILE = "cv_study.json"  # protocol settings, checked on resume

# task states written by `kneeoa study --run-task` (STUDY/status/task_<index>.json)
TASK_RUNNING, TASK_DONE, TASK_FAILED = "running", "done", "failed"
SEED_COMBINED = "combined"  # the `seed` value of the across-seeds rows in cv_stats.csv
# STUDY/tables/cv_stats.csv (one row per test and seed) and cv_seed_summary.csv (one row per test)
CV_STATS_COLUMNS = ["seed", "backbone", "task", "metric", "single", "dual", "delta", "ci_lo", "ci_hi", "p_value",
                    "test", "n_knees", "n_subjects", "q_value_BH", "sig_fdr_0.05"]
SEED_SUMMARY_COLUMNS = ["backbone", "task", "metric", "n_seeds", "mean_delta", "sd_delta", "min_delta", "max_delta",
                        "n_seeds_sig", "n_fold_runs_positive", "n_fold_runs", "combined_delta", "combined_ci_lo",
                        "combined_ci_hi", "combined_p", "combined_q", "combined_sig"]


def fold_dir(fold: int) -> str:
    """Folder of a fold's cohort view under STUDY/folds/."""
    return f"fold{fold}"


def run_tag(fold: int, seed: int) -> str:
    """Run directory name under STUDY/runs/<model>/, e.g. 'fold0_seed1'."""
    return f"fold{fold}_seed{seed}"

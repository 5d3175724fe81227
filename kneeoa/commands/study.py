"""`kneeoa study`: the whole protocol (the official split, or cross-validated over folds and seeds) -> report.html."""

from __future__ import annotations

import argparse

from kneeoa.config import FLAGGED, add_train_arguments, overrides_from_args
from kneeoa.contracts.catalog import study_backbones
from kneeoa.contracts.studies import DEFAULT_FOLDS, DEFAULT_SEEDS, EXECUTORS, PROTOCOLS
from kneeoa.contracts.vocab import VARIANTS

DESCRIPTION = """The whole protocol: train the 3 backbones x 3 variants, predict, then statistics, latent analysis,
saliency and one report.html. Re-run the same command to resume: finished runs are kept, and so are
their compute times. --protocol official (default) trains once on the published train split and tests
on its test split. --protocol cv trains every (backbone, variant, fold, seed) on subject-grouped,
KL-stratified folds over all graded knees and reports which Dual-vs-Single conclusions hold across seeds
and folds; its runs go to an executor: local (--jobs N at once, one per --devices GPU), slurm (a job
array, submitted when sbatch exists; then --collect), or --plan (the run list as JSON for any engine).

inputs:   --data (a cohort root in the OAI-ZIB-CM layout, e.g. a phantom cohort), --preset
outputs:  official: OUT/runs/, OUT/predictions/, OUT/stats/, OUT/latent/, OUT/saliency/, OUT/report.html,
          OUT/study.json; cv: OUT/folds.csv, OUT/plan.json, OUT/runs/<model>/fold<k>_seed<s>/,
          OUT/pooled/seed<s>/, OUT/tables/cv_*.csv, OUT/slurm/study.sbatch, OUT/report.html
example:  kneeoa study --data cohort --out study --backbones resnet3d --epochs 2
          kneeoa study --protocol cv --folds 5 --seeds 3 --data cohort --out cv --jobs 2 --devices 0,1
          kneeoa study --protocol cv --data cohort --out cv --executor slurm --partition gpu --time 12:00:00
          kneeoa study --collect cv"""

# The `kneeoa train` options a study passes to every one of its runs: each flag is generated from its
# TrainConfig field (type, choices, help), as `kneeoa train`'s are, except these, which the study sets itself:
NOT_STUDY_WIDE = {"seed": "one per run: the preset's (official) or 0..S-1 (--seeds, cv)",
                  "cache": "train and predict share the study's preprocessing cache",
                  "cache_dir": "the study's own OUT/cache"}
STUDY_OPTIONS = tuple(name for name in FLAGGED if name not in NOT_STUDY_WIDE)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="the whole protocol (official split or cross-validated, multi-seed) -> report",
                       description=DESCRIPTION)
    p.add_argument("--data", help="cohort root (OAI-ZIB-CM layout, e.g. a phantom cohort)")
    p.add_argument("--out", help="study folder (re-run the same command to resume)")
    p.add_argument("--preset", default="quick", help="quick | paper | a YAML preset file")
    p.add_argument("--backbones", default=",".join(study_backbones()), help="comma-separated subset")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--saliency-cases", type=int, default=5,
                   help="test knees explained per model (one per KL grade first)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--segmenter", help="segmenter (.safetensors): automatic masks where a test case has none, and "
                                       "a segmentation section (Dice, outlines, thickness) in the report; default: the "
                                       "preset's `segmenter:` (a path relative to the preset file), else none")
    add_train_arguments(p.add_argument_group("training overrides, the same for every run (default: the preset's "
                                             "value; as kneeoa train)"), only=STUDY_OPTIONS)
    cv = p.add_argument_group("cross-validation (--protocol cv)")
    cv.add_argument("--protocol", choices=PROTOCOLS, default="official",
                    help="official = the published split (default); cv = K folds x S seeds")
    cv.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="K subject-grouped folds")
    cv.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="S training seeds 0..S-1")
    cv.add_argument("--executor", choices=EXECUTORS, default="local", help="where the runs go")
    cv.add_argument("--jobs", type=int, default=1, help="local: runs at once")
    cv.add_argument("--devices", help="local: comma-separated GPU ids, one per concurrent run (e.g. 0,1)")
    cv.add_argument("--plan", action="store_true", help="only write STUDY/plan.json (runs, commands, run dirs)")
    cv.add_argument("--collect", metavar="STUDY", help="aggregate the finished runs of STUDY and write its report")
    cv.add_argument("--run-task", metavar="STUDY", help=argparse.SUPPRESS)  # what every executor slot runs
    cv.add_argument("--index", type=int, help=argparse.SUPPRESS)
    sl = p.add_argument_group("SLURM (--executor slurm)")
    sl.add_argument("--partition", help="partition of the array tasks")
    sl.add_argument("--time", default="24:00:00", help="time limit per task (one run)")
    sl.add_argument("--gpus-per-task", type=int, default=1, help="GPUs per task (0 = CPU)")
    sl.add_argument("--cpus-per-task", type=int, default=4, help="CPU cores per task")
    sl.add_argument("--mem", help="memory per task, e.g. 32G")
    sl.add_argument("--array-throttle", type=int, help="at most this many tasks at once (%%N)")
    sl.add_argument("--no-submit", action="store_true", help="write the sbatch script, do not submit it")
    p.set_defaults(func=run)


def overrides_from(args: argparse.Namespace) -> dict:
    """The training overrides (None = not given); the study checks them before it plans or trains any run."""
    return overrides_from_args(args, only=STUDY_OPTIONS)


def run(args: argparse.Namespace) -> int:
    from kneeoa.errors import ConfigError

    if args.run_task:
        from kneeoa.crossval.task import run_task

        if args.index is None:
            raise ConfigError("--run-task needs --index")
        status = run_task(args.run_task, args.index)
        print(f"task {args.index} ({status['name']} fold {status['fold']} seed {status['seed']}): {status['state']}")
        return 0
    if args.collect:
        from kneeoa.crossval.study import collect_cv_study

        return _print_collected(collect_cv_study(args.collect, resamples=args.resamples))
    if not args.data or not args.out:
        raise ConfigError("--data and --out are required (or --collect STUDY)")
    if args.protocol == "cv":
        return _run_cv(args)
    from kneeoa.study import run_study

    result = run_study(args.data, args.out, preset=args.preset, backbones=tuple(args.backbones.split(",")),
                       variants=tuple(args.variants.split(",")), overrides=overrides_from(args),
                       saliency_cases=args.saliency_cases, resamples=args.resamples, segmenter=args.segmenter)
    print(f"report: {result['report']}")
    return 0


def _run_cv(args: argparse.Namespace) -> int:
    from kneeoa.crossval.study import run_cv_study
    from kneeoa.studyexec.slurm import SlurmOptions, sbatch_available

    slurm = SlurmOptions(partition=args.partition, time=args.time, gpus_per_task=args.gpus_per_task,
                         cpus_per_task=args.cpus_per_task, mem=args.mem, throttle=args.array_throttle)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    result = run_cv_study(args.data, args.out, folds=args.folds, seeds=args.seeds, preset=args.preset,
                          backbones=tuple(args.backbones.split(",")), variants=tuple(args.variants.split(",")),
                          overrides=overrides_from(args), executor=args.executor, jobs=args.jobs, devices=devices,
                          slurm=slurm, plan_only=args.plan, submit=not args.no_submit, resamples=args.resamples)
    print(f"plan: {result['plan']} ({result['n_tasks']} runs, {len(result['pending'])} to do)")
    if args.plan:
        return 0
    if "script" in result:
        print(f"sbatch script: {result['script']}")
        if "job_id" in result:
            print(f"submitted job array {result['job_id']}; when it is done: kneeoa study --collect {result['study']}")
        elif not args.no_submit and not sbatch_available():
            print("sbatch not found here: submit the script on the cluster, then kneeoa study --collect "
                  f"{result['study']}")
        return 0
    return _print_collected(result)


def _print_collected(result: dict) -> int:
    states = result["states"]
    print(f"runs: {len(states['done'])} done, {len(states['failed'])} failed, {len(states['unfinished'])} unfinished")
    for entry in states["failed"]:
        print(f"failed task {entry['index']} ({entry['name']} fold {entry['fold']} seed {entry['seed']}): "
              f"{entry['error']}; log {entry['log']}")
    for entry in states["unfinished"]:
        if entry["state"] != "not started":
            print(f"unfinished task {entry['index']} ({entry['name']} fold {entry['fold']} seed {entry['seed']}): "
                  f"{entry['state']}; log {entry['log']}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"report: {result['report']}")
    return 1 if states["failed"] else 0

"""Executors of a CV study's tasks (STUDY/plan.json): `local` runs N tasks at once on this machine (one per
GPU, or N CPU processes); `slurm` writes and submits a job array, one array task per run. Any other
engine can run the commands listed in plan.json. All of them run `kneeoa study --run-task STUDY --index I`
and log to STUDY/logs/task_<I>.log, so `kneeoa study --collect STUDY` reads every engine's results alike.
"""

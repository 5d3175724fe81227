"""SLURM executor: one job-array `sbatch` script per study, one array task per run, submitted when sbatch exists.

    STUDY/slurm/study.sbatch      #SBATCH --array=<pending tasks>%<throttle>, partition, time, GPUs per task
    STUDY/logs/task_<index>.log   each array task's output (%a), the same log the local executor writes
    STUDY/slurm/submitted.json    job ids of every submission

Re-submitting is safe: the array lists only tasks that have not finished, and a task that finished
meanwhile returns at once. `kneeoa study --collect STUDY` aggregates whatever has finished.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kneeoa.errors import ConfigError, JobError


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: str = "24:00:00"  # per array task (one training run)
    gpus_per_task: int = 1
    cpus_per_task: int = 4
    mem: str | None = None  # e.g. "32G"; None = the cluster's default
    throttle: int | None = None  # at most this many array tasks at once (%N)
    job_name: str = "kneeoa-cv"
    extra: tuple[str, ...] = ()  # more `#SBATCH` lines, e.g. ("--account=abc",)


def array_spec(indices: Sequence[int], throttle: int | None = None) -> str:
    """'0-3,7,9-10%2' from task indices (consecutive runs folded into ranges)."""
    values = sorted(set(int(i) for i in indices))
    if not values:
        raise ConfigError("no tasks to submit")
    parts, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur is None or cur != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(parts) + (f"%{throttle}" if throttle else "")


def write_script(study: Path, indices: Sequence[int], options: SlurmOptions, python: str | None = None) -> Path:
    """STUDY/slurm/study.sbatch for the tasks `indices`; returns its path."""
    from kneeoa.crossval.plan import task_command
    from kneeoa.utils.atomic import atomic_write_text

    study = Path(study).resolve()
    if options.gpus_per_task < 0 or options.cpus_per_task < 1:
        raise ConfigError("--gpus-per-task must be >= 0 and --cpus-per-task >= 1")
    lines = ["#!/bin/bash", f"#SBATCH --job-name={options.job_name}",
             f"#SBATCH --array={array_spec(indices, options.throttle)}",
             f"#SBATCH --output={study / 'logs' / 'task_%a.log'}", "#SBATCH --open-mode=append",
             f"#SBATCH --time={options.time}", "#SBATCH --ntasks=1", f"#SBATCH --cpus-per-task={options.cpus_per_task}"]
    if options.partition:
        lines.append(f"#SBATCH --partition={options.partition}")
    if options.gpus_per_task:
        lines.append(f"#SBATCH --gpus-per-task={options.gpus_per_task}")
    if options.mem:
        lines.append(f"#SBATCH --mem={options.mem}")
    lines += [f"#SBATCH {x}" for x in options.extra]
    command = shlex.join(task_command(study, "INDEX", python)).replace("INDEX", '"$SLURM_ARRAY_TASK_ID"')
    lines += ["# one array task = one (backbone, variant, fold, seed) run; safe to re-run",
              "set -euo pipefail", 'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
              "export KNEEOA_PROGRESS=none", "export PYTHONSAFEPATH=1  # the cwd is not on sys.path: only our code",
              f"cd {shlex.quote(str(study))}", f"exec {command}", ""]
    path = study / "slurm" / "study.sbatch"
    (study / "logs").mkdir(parents=True, exist_ok=True)  # SLURM does not create the --output folder
    atomic_write_text(path, "\n".join(lines))
    path.chmod(0o755)
    return path


def sbatch_available() -> bool:
    return shutil.which("sbatch") is not None


def submit(script: Path) -> str:
    """`sbatch --parsable SCRIPT`; returns the job id and records it in STUDY/slurm/submitted.json."""
    from kneeoa.utils.atomic import atomic_write_text

    if not sbatch_available():
        raise JobError("sbatch not found on PATH; submit the script on the cluster's login node", script)
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise JobError(f"sbatch failed: {(proc.stderr or proc.stdout).strip()}", script)
    job_id = proc.stdout.strip().split(";")[0]
    record = script.parent / "submitted.json"
    previous = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else []
    atomic_write_text(record, json.dumps(previous + [{"job_id": job_id, "script": str(script)}], indent=2))
    return job_id


def queue_state(job_ids: Sequence[str]) -> dict[str, str]:
    """{'<job>_<task>': state} from squeue for jobs still queued or running (empty without squeue)."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True,
                          text=True, timeout=60)
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def python_for_jobs() -> str:
    """The interpreter the array tasks run (this one: the cluster nodes share the environment's path)."""
    return sys.executable

"""Local executor: N tasks at once as child processes, each pinned to one device of `devices` (round robin).

The pattern nnU-Net users know: one fold per GPU. The cores are shared out: each child gets
cores // N CPU threads (KNEEOA_THREADS, see kneeoa/threads.py), so N runs never oversubscribe the machine.
A failed task does not stop the others; its return code and log are reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kneeoa.errors import ConfigError

POLL_S = 0.2


def child_environment(slot: int, jobs: int, devices: Sequence[str] | None,
                      base: dict[str, str] | None = None, cores: int | None = None) -> dict[str, str]:
    """Environment of the child in `slot`: its GPU via CUDA_VISIBLE_DEVICES, its share of the CPU threads."""
    from kneeoa.threads import POOL_ENVS, THREADS_ENV, available_cores

    env = dict(os.environ if base is None else base)
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = str(devices[slot % len(devices)])
    threads = str(max(1, (cores or available_cores()) // max(jobs, 1)))
    for name in (THREADS_ENV, *POOL_ENVS):
        env[name] = threads
    env.setdefault("KNEEOA_PROGRESS", "none")
    # only our code in the children: the working folder stays off sys.path (Python >= 3.11), our package on it
    from kneeoa.slicer.jobs import KNEEOA_ROOT

    env["PYTHONSAFEPATH"] = "1"
    paths = [str(KNEEOA_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def run_local(study: Path, indices: Sequence[int], jobs: int = 1, devices: Sequence[str] | None = None,
              python: str | None = None, on_done=None) -> dict[int, int]:
    """Run the tasks `indices` of STUDY/plan.json, `jobs` at a time; returns {index: return code}."""
    from kneeoa.crossval.plan import task_command
    from kneeoa.crossval.task import log_path
    from kneeoa.slicer.jobs import safe_cwd

    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    pending = list(indices)
    running: dict[int, tuple[subprocess.Popen, int, object]] = {}  # index -> (process, slot, log file)
    free_slots = list(range(jobs))
    codes: dict[int, int] = {}
    try:
        while pending or running:
            while pending and free_slots:
                index, slot = pending.pop(0), free_slots.pop(0)
                log = log_path(study, index)
                log.parent.mkdir(parents=True, exist_ok=True)
                fh = open(log, "ab")
                # each task in its own session (POSIX): stopping it reaches its DataLoader workers too (killpg),
                # and a terminal's Ctrl-C reaches only this parent, which then stops the tasks in order
                proc = subprocess.Popen(task_command(study, index, python), stdout=fh, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=child_environment(slot, jobs, devices),
                                        cwd=safe_cwd(),  # never the user's folder (a planted torch.py)
                                        start_new_session=True)
                running[index] = (proc, slot, fh)
            time.sleep(POLL_S)
            for index, (proc, slot, fh) in list(running.items()):
                if proc.poll() is None:
                    continue
                fh.close()
                codes[index] = proc.returncode
                free_slots.append(slot)
                del running[index]
                if on_done is not None:
                    on_done(index, proc.returncode)
    finally:
        for proc, _slot, fh in running.values():  # interrupted: stop our children, keep their logs
            _stop(proc)
            fh.close()
    return codes


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the task's process group (the task records itself as failed), SIGKILL after the grace time."""
    _signal_group(proc, signal.SIGTERM, proc.terminate)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL, proc.kill)
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int, fallback: Callable[[], None]) -> None:
    """`sig` to the task's whole process group (POSIX); `fallback()` (the process alone) where there is none."""
    if hasattr(os, "killpg"):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    else:
        fallback()

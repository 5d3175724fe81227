"""CPU threads for every command: one choice, made before torch/numpy load, printed once.

Why: torch's default is one OpenMP thread per core, and its threads spin while they wait for each other. On a
machine where another process keeps a core busy, every parallel region then waits for the thread that lost
its core: a quick ResNet3D training step took 9.8 s with 2 threads against 1.2 s with 1 thread on a loaded
2-core machine (issue 19). The default here leaves room for the rest of the machine (half the cores, at
least 1) and makes waiting threads sleep (OMP_WAIT_POLICY=PASSIVE) instead of spinning, so a busy core
costs at most its share instead of a barrier stall; measured in benchmarks/bench_threads.py.

Order of precedence: `--threads N` > `KNEEOA_THREADS` > `OMP_NUM_THREADS` (the usual knob) > the default.
Standard library only: the CLI calls `configure_threads` before any heavy import, so the OpenMP/MKL/OpenBLAS
pools of torch, numpy and scipy are created with that size (they read the environment when they load).
"""

from __future__ import annotations

import os
import sys

THREADS_ENV = "KNEEOA_THREADS"
# the thread-pool variables of the libraries torch, numpy and scipy load (OpenMP, MKL, OpenBLAS, BLIS)
POOL_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS")

def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container limit)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads(cores: int | None = None) -> int:
    """Half the cores, at least 1: 1 on a 2-core laptop or CI box, 8 on 16 cores.

    Leaving half free costs little on an idle machine (3D convs of the quick models scale poorly past a few
    threads) and keeps other work - the Slicer GUI, a colleague's job - from stalling every OpenMP barrier.
    """
    cores = available_cores() if cores is None else cores
    return max(1, cores // 2)


def _from_env(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    try:
        n = int(value)
    except ValueError:
        return None
    return n if n >= 1 else None


def resolve_threads(requested: int | None = None) -> tuple[int, str]:
    """(threads, where the number came from) following the order of precedence above."""
    if requested is not None:
        if requested < 1:
            from kneeoa.errors import ConfigError

            raise ConfigError(f"--threads must be at least 1, got {requested}")
        return requested, "--threads"
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        n = _from_env(name)
        if n is not None:
            return n, name
    return default_threads(), "default"


def configure_threads(requested: int | None = None, announce: bool = True) -> int:
    """Size the thread pools (environment for libraries not loaded yet, torch's setters if it is) and say so.

    Returns the thread count. Child processes (DataLoader workers, the phantom's pool, Slicer jobs) inherit
    the environment, so they follow the same choice.
    """
    threads, source = resolve_threads(requested)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # sleep, do not spin, while waiting at a barrier
    os.environ[THREADS_ENV] = str(threads)
    for name in POOL_ENVS:
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:  # already loaded (a test, Slicer's Python): the environment is read too late
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass  # allowed once, before any inter-op work; the intra-op pool is what matters here
    if announce:
        from kneeoa.progress import emit, mode

        message = f"{threads} CPU thread(s) of {available_cores()} core(s) ({source}; change with --threads N)"
        if mode() == "json":
            emit("log", task="threads", message=message, threads=threads)  # stdout carries only JSON lines
        else:
            print(f"kneeoa: {message}", file=sys.stderr)
    return threads


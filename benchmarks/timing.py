"""Timing helpers shared by the ours-vs-baseline benchmark cases."""

from __future__ import annotations

import time


def interleaved_best(fns, repeats: int, sync) -> list[tuple[float, object]]:
    """Best wall time of each function, run in turns (ours, baseline, ours, ...) so that load from other
    processes on a shared machine hits all alike; returns (seconds, last output) per function."""
    best = [(float("inf"), None) for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            best[i] = (min(best[i][0], time.perf_counter() - t0), out)
    return best


def device_sync(device):
    """A no-argument function that waits for the device's queued work (a no-op on the CPU)."""
    import torch

    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def where(device) -> str:
    """The device in words for a result row: the GPU's name, or the CPU and its thread count."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu, {torch.get_num_threads()} threads"

"""The data feed shared by `score`, `predict`, `grade` and the study's evaluation: volumes -> model inputs.

Loader worker processes decode while the device computes. On CUDA a worker only decodes (the voxels stay
in their stored dtype, int16 for most MRI) and the DataLoader pins them; the main process copies them
non-blocking and reorients, z-scores and resizes on the GPU (`kneeoa.data.resample`), so a CPU core's
share per 384x384x160 volume is the gunzip and a copy. On the CPU the workers preprocess too (there the
"device" is the same cores). The number of workers comes from the cores this process may use
(`os.sched_getaffinity`, per torchrun rank) and the measured decode and model times of the first volume;
the prefetch queue is bounded (`PREFETCH_BATCHES` single volumes per worker; batches are formed in the
main process), so memory stays flat however long the cohort.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch

from kneeoa.errors import KneeOAError

PREFETCH_BATCHES = 2  # volumes ahead per worker: enough to hide a slow volume, bounded so memory stays flat
MAX_WORKERS = 16


def cores_for_loading() -> int:
    """CPU cores this process may use (`kneeoa.threads.available_cores`: its affinity mask, e.g. a Slurm or
    cgroup allocation), shared with the other ranks torchrun started on this machine."""
    from kneeoa.threads import available_cores

    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, available_cores() // max(1, local_ranks))


def preprocess_on_device(device: Any) -> bool:
    """Whether model inputs are made on the device (CUDA) rather than in the loader workers (CPU, MPS)."""
    return torch.device(device).type == "cuda"


DECODE_THREAD = -1  # `workers` value meaning: no worker process, one decode thread in this process


def plan_workers(device: Any, decode_s: float, step_s: float, cores: int | None = None) -> int:
    """Loader processes needed so decoding keeps up with the model: ceil(decode / step), within the cores.

    On CUDA one core stays with the main process (it feeds the GPU); the workers take the rest. On the
    CPU the model's threads need the cores too: at most half of them on > 2 cores; on <= 2 cores no
    process (measured: a worker there competes with the model's threads and costs pickling) but one
    decode thread (`DECODE_THREAD`, `threaded`) when decoding is not negligible (>= 2 % of a step).
    """
    cores = cores_for_loading() if cores is None else int(cores)
    need = math.ceil(max(decode_s, 0.0) / max(step_s, 1e-6))
    if not preprocess_on_device(device) and cores <= 2:
        return DECODE_THREAD if decode_s >= 0.02 * step_s else 0
    spare = cores - 1 if preprocess_on_device(device) else cores // 2
    return int(max(0, min(spare, need, MAX_WORKERS)))


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (float32 unless it was cast)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class InputSpec(NamedTuple):
    """What a model takes: input (D, H, W), voxel order ('ras' | 'none', contracts.vocab.REORIENT), dtype."""

    shape: tuple[int, int, int]
    reorient: str = "ras"
    dtype: torch.dtype = torch.float32


class VolumeFeed(torch.utils.data.Dataset):
    """(key, path) items -> {'key', 'path', 'image' (1,D,H,W) | None, 'raw', 'affine', 'envelope', 'error',
    'decode_s'}.

    Never raises on bad data: the error is the item's message, so a batch job records a row and goes on.
    With `on_device` the item carries the decoded voxels (`raw`, stored dtype) and the affine instead of
    the preprocessed image. `check(array, affine)` (the trust layer's acquisition check and image
    features, kneeoa.trust.predict.TrustPredictor.inspect) runs here, in the loader, before the network;
    its result is the item's 'envelope'. Picklable for worker processes.
    """

    def __init__(self, items: list[tuple[str, str]], spec: InputSpec, on_device: bool = False,
                 check: Callable[[Any, Any], Any] | None = None):
        self.items = list(items)
        self.spec = InputSpec(tuple(int(s) for s in spec.shape), spec.reorient, spec.dtype)
        self.on_device = bool(on_device)
        self.check = check

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        from kneeoa.data.preprocess import preprocess_volume
        from kneeoa.data.volume import read_volume

        key, path = self.items[index]
        item: dict[str, Any] = {"key": key, "path": path, "image": None, "raw": None, "raw_axes": None,
                                "affine": None, "envelope": [], "error": ""}
        t0 = time.perf_counter()
        try:
            volume = read_volume(path, stored_dtype=self.on_device)
            if self.on_device:
                raw, axes = contiguous_view(volume.array)
                item.update(raw=raw, raw_axes=axes, affine=volume.affine)
            else:
                item["image"] = preprocess_volume(volume, self.spec.shape, reorient=self.spec.reorient)
            if self.check is not None:
                item["envelope"] = self.check(volume.array, volume.affine)
        except KneeOAError as err:
            item.update(error=str(err), image=None, raw=None)
        except Exception as err:  # a batch job records any per-case failure and goes on
            item.update(error=f"{type(err).__name__}: {err}", image=None, raw=None)
        item["decode_s"] = time.perf_counter() - t0
        return item


def contiguous_view(array: Any) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(a C-contiguous tensor over the array's memory, the permutation that gives back (i, j, k) axes).

    NIfTI data is Fortran-ordered: its transpose is contiguous, so the shared-memory hand-off of a worker,
    pinning and the host-to-device copy are plain memcpys, never a transposing copy of the full grid."""
    import numpy as np

    a = np.asarray(array)
    if a.flags.c_contiguous:
        return torch.from_numpy(a), (0, 1, 2)
    if a.flags.f_contiguous:
        return torch.from_numpy(a.T), (2, 1, 0)
    return torch.from_numpy(np.ascontiguousarray(a)), (0, 1, 2)


def collate_items(items: list[dict]) -> list[dict]:
    """Keep items as a list (failed reads carry no tensor, raw volumes differ in shape); module-level so
    worker processes can pickle it. The DataLoader pins the tensors inside when asked."""
    return items


def model_input(item: dict, spec: InputSpec, device: Any) -> torch.Tensor:
    """An item's (1, D, H, W) model input on `device`: preprocessed there from `raw`, or copied over.
    InputError (naming the file) if the z-score overflowed (as `preprocess_volume` checks on the CPU)."""
    from kneeoa.data.preprocess import finite_input
    from kneeoa.data.resample import preprocess_tensor

    if item["image"] is not None:
        return item["image"].to(device=device, dtype=spec.dtype, non_blocking=True)
    raw = item["raw"].to(device, non_blocking=True).permute(item["raw_axes"])  # back to (i, j, k): a view
    return finite_input(preprocess_tensor(raw, item["affine"], spec.shape, spec.dtype, spec.reorient), item["path"])


def iterate_batches(items: list[tuple[str, str]], spec: InputSpec, device: Any, workers: int, batch_size: int = 1,
                    check: Callable[[Any, Any], Any] | None = None) -> Iterator[list[dict]]:
    """Batches (lists of VolumeFeed items) in order, decoded by `workers` processes ahead of the model
    (`DECODE_THREAD`: by one thread of this process; 0: in turn with the model)."""
    from torch.utils.data import DataLoader

    device = torch.device(device)
    dataset = VolumeFeed(items, spec, preprocess_on_device(device), check)
    # the loader hands over single volumes (a worker decodes one at a time, at most PREFETCH_BATCHES ahead:
    # in flight are ~2 volumes per worker, never 2 batches of 16 knees each); batches are formed here
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=max(0, int(workers)),
                        collate_fn=collate_items, pin_memory=device.type == "cuda",
                        prefetch_factor=PREFETCH_BATCHES if workers > 0 else None)
    singles = threaded(iter(loader), PREFETCH_BATCHES * max(1, int(batch_size))) if workers == DECODE_THREAD \
        else iter(loader)
    yield from regroup(singles, max(1, int(batch_size)))


def regroup(singles: Iterator[list[dict]], batch_size: int) -> Iterator[list[dict]]:
    """One-item lists -> lists of `batch_size` items (the last one shorter), in order."""
    batch: list[dict] = []
    for one in singles:
        batch.extend(one)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def threaded(batches: Iterator, depth: int) -> Iterator:
    """`batches` produced by a background thread, at most `depth` ahead (a bounded queue).

    For a machine with too few cores for worker processes: gunzip (ISA-L), numpy and torch release the
    GIL, so decoding fills the gaps the model's threads leave (Python between ops) without the pickling
    of a worker process. An exception in the thread is raised here, in order.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        q.put((batch, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as err:  # handed to the consumer, which raises it
            q.put((done, err))

    thread = threading.Thread(target=produce, name="kneeoa-feed", daemon=True)
    thread.start()
    try:
        while True:
            batch, err = q.get()
            if batch is done:
                if err is not None:
                    raise err
                return
            yield batch
    finally:
        stop.set()
        thread.join(timeout=5)


def stack_inputs(batch: list[dict], spec: InputSpec, device: Any) -> tuple[list[dict], torch.Tensor | None]:
    """(the items that decoded, their inputs stacked (B, 1, D, H, W) on `device`) for one batch; an item
    whose input cannot be made gets its error set instead."""
    good, inputs = [], []
    for item in batch:
        if item["error"]:
            continue
        try:
            inputs.append(model_input(item, spec, device))
            good.append(item)
        except KneeOAError as err:
            item["error"] = str(err)
    return good, (torch.stack(inputs) if inputs else None)


def measure_step(step: Callable[[torch.Tensor], Any], item: dict, spec: InputSpec, device: Any) -> tuple[float, int]:
    """(seconds of one warm model step `step(x)` for `item`, preprocessing on the device included; its peak
    device memory in bytes, 0 off CUDA). (inf, 0) for an item that did not decode: then no workers are planned.
    The step is passed in (the scorer's forward pass) so the feed needs nothing from the inference module."""
    if item["error"]:
        return float("inf"), 0
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    step(model_input(item, spec, device)[None])
    if cuda:
        torch.cuda.synchronize(device)
    step_s = time.perf_counter() - t0
    return step_s, (torch.cuda.max_memory_allocated(device) - base) if cuda else 0


def auto_batch_size(device: Any, per_volume_bytes: int, limit: int = 16) -> int:
    """Volumes per forward pass where memory allows: on CUDA as many as half the free memory holds (each
    at its measured peak), up to `limit`; 1 elsewhere (the CPU gains nothing from batching)."""
    device = torch.device(device)
    if device.type != "cuda" or per_volume_bytes <= 0:
        return 1
    free, _total = torch.cuda.mem_get_info(device)
    return int(max(1, min(limit, (free // 2) // per_volume_bytes)))

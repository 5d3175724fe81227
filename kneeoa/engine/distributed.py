"""`torchrun` support: process group from the environment, DDP, DistributedSampler, rank-0 writes.

Run the same command under torchrun and it uses every process:
    torchrun --nproc_per_node 4 -m kneeoa train --data ROOT ...
NCCL on CUDA, gloo on CPU. Without torchrun's environment everything here is a single-process no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank and the backend ('' when single-process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_name: str = "auto") -> tuple[DistInfo, Any]:
    """Initialise the process group when launched by torchrun; returns (DistInfo, torch.device) for this rank."""
    import torch
    import torch.distributed as dist

    from kneeoa.engine.devices import resolve_device

    rank, world = env_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank=local_rank if world > 1 else None, quiet=rank != 0)
    if world <= 1:
        return DistInfo(), device
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend), device


def cleanup(info: DistInfo) -> None:
    """Tear the process group down (after the last barrier)."""
    import torch.distributed as dist

    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op single-process)."""
    import torch.distributed as dist

    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few scalars over ranks (float64 on CPU, so it works with gloo and nccl alike)."""
    import torch
    import torch.distributed as dist

    if not info.enabled:
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if info.backend == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's boolean on every rank (e.g. 'the run dir is ready')."""
    return bool(all_reduce_sum([1.0 if (flag and info.is_main) else 0.0], info)[0]) if info.enabled else flag


def make_sampler(dataset: Any, info: DistInfo, seed: int, shuffle: bool = True) -> Any:
    """DistributedSampler for every run (world 1 too): its permutation depends only on (seed, epoch), so a
    resumed run visits the samples in the same order as an uninterrupted one."""
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle,
                              seed=seed, drop_last=False)


def wrap_model(model: Any, info: DistInfo, device: Any) -> Any:
    """DDP-wrap under torchrun; the plain model otherwise."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # every parameter of a KneeOA model feeds its variant's loss (a variant builds only its own heads),
    # so DDP needs no per-step search for unused parameters
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def unwrap(model: Any) -> Any:
    """The module inside a DDP wrapper."""
    return getattr(model, "module", model)

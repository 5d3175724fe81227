"""Device choice (auto: CUDA, then Apple MPS, then CPU), mixed precision, and a clear out-of-memory message."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from kneeoa.errors import ConfigError, JobError

log = logging.getLogger("kneeoa.engine")


def _mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto", local_rank: int | None = None, quiet: bool = False) -> Any:
    """'auto'|'cpu'|'cuda'|'cuda:N'|'mps' -> torch.device; 'auto' picks CUDA, then MPS, then CPU and says which."""
    import torch

    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available(torch):
            name = "mps"
        else:
            name = "cpu"
        if not quiet:
            _say(f"device: {describe_device(torch.device(name))} (auto)")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)")
        if name == "cuda" and local_rank is not None:
            name = f"cuda:{local_rank}"
    elif name == "mps":
        if not _mps_available(torch):
            raise ConfigError("--device mps was asked for but Apple MPS is not available (use --device auto or cpu)")
    elif name != "cpu":
        raise ConfigError(f"unknown device {name!r} (auto, cpu, cuda, mps)")
    return torch.device(name)


def describe_device(device: Any) -> str:
    """A human-readable name, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def _say(message: str) -> None:
    from kneeoa.progress import emit, mode

    log.info(message)
    if mode() == "json":
        emit("log", task="device", message=message)
    elif mode() == "bar":
        import sys

        print(message, file=sys.stderr)


def autocast(device: Any, amp: str = "none") -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; a no-op elsewhere or with amp='none' (CPU runs stay fp32 and deterministic)."""
    import torch

    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise ConfigError(f"unknown amp mode {amp!r} (none, bf16, fp16)")
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: Any, amp: str = "none") -> Any:
    """A GradScaler for fp16 on CUDA, else a disabled one (its calls are pass-throughs)."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=(amp == "fp16" and device.type == "cuda"))


def is_oom(err: BaseException) -> bool:
    """True for a GPU/accelerator out-of-memory error."""
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text.lower() or "MPS backend out of memory" in text)


@contextlib.contextmanager
def oom_guard(device: Any, what: str = "training", batch_size: int | None = None) -> Iterator[None]:
    """Turn an out-of-memory error into a JobError that says what to change."""
    try:
        yield
    except RuntimeError as err:
        if not is_oom(err):
            raise
        if device.type == "cpu":
            hint = "use a smaller --batch-size or --input-size"
        else:
            smaller = f"--batch-size {max(1, batch_size // 2)}" if batch_size and batch_size > 1 else "a smaller --input-size"
            hint = f"try {smaller}, --amp bf16, or --device cpu"
        raise JobError(f"out of memory on {device} during {what}; {hint}") from None

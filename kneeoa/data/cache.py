"""Disk cache of preprocessed tensors, so training epochs never decode a NIfTI twice.

An entry is `<cache_dir>/<key[:2]>/<key>.npy`, key = sha256 of (resolved path, file size, mtime_ns,
input_shape, spacing, dtype, cache format version): editing or replacing a source file, or changing the
preprocessing, gives a new key. Entries are written atomically; an unreadable or wrong-shaped entry is
recomputed. Stored as float32 by default; `dtype='float16'` halves the disk use (values are z-scores, so
float16's ~3 significant digits are plenty) and tensors are returned as float32 either way.

Why not MONAI's `PersistentDataset`: it writes each item with `torch.save` and reads it back with
`torch.load`, i.e. it unpickles its cache (only recent MONAI passes `weights_only=True`; we support 1.3 on).
A cache folder is shared between runs, processes and users, so reading it must never run code: entries
here are plain `.npy` read with `allow_pickle=False`. Its key (a hash of the item dict, the file path) also
ignores the file's size and mtime, so an edited image would be served stale.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from kneeoa.utils.atomic import atomic_write_bytes

CACHE_VERSION = 1


def fingerprint(path: Path) -> list:
    """(resolved path, size, mtime_ns) of a file; for a DICOM folder, summed sizes and the newest mtime."""
    path = Path(path).resolve()
    if path.is_dir():
        stats = [p.stat() for p in sorted(path.iterdir()) if p.is_file()]
        return [str(path), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


class PreprocessCache:
    """`load(path)` returns the preprocessed (1, D, H, W) float32 tensor, computing it at most once."""

    def __init__(self, cache_dir: str | Path, input_shape: Sequence[int], spacing_mm: Sequence[float] | None = None,
                 dtype: str = "float32", reorient: str = "ras"):
        from kneeoa.data.preprocess import check_input_shape

        if dtype not in ("float32", "float16"):
            raise ValueError(f"cache dtype must be float32 or float16, not {dtype!r}")
        self.cache_dir = Path(cache_dir)
        self.input_shape = check_input_shape(input_shape)
        self.spacing_mm = None if spacing_mm is None else [float(s) for s in spacing_mm]
        self.dtype = dtype
        self.reorient = reorient
        self.hits = 0
        self.misses = 0

    def key(self, path: str | Path) -> str:
        """Cache key of a source file under this cache's preprocessing settings."""
        parts = [fingerprint(Path(path)), list(self.input_shape), self.spacing_mm, self.dtype, CACHE_VERSION]
        if self.reorient != "ras":  # only then: entries written before the option keep their keys
            parts.append(self.reorient)
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def entry(self, path: str | Path) -> Path:
        """Where the entry for `path` lives."""
        key = self.key(path)
        return self.cache_dir / key[:2] / f"{key}.npy"

    def get(self, path: str | Path) -> torch.Tensor | None:
        """The cached tensor, or None when absent or unreadable (a corrupt entry is treated as absent)."""
        entry = self.entry(path)
        if not entry.is_file():
            return None
        try:
            array = np.load(entry, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if array.shape != (1, *self.input_shape) or not np.isfinite(array).all():
            return None
        return torch.from_numpy(array.astype(np.float32, copy=False))

    def put(self, path: str | Path, tensor: torch.Tensor) -> Path:
        """Store a preprocessed tensor for `path` (atomic)."""
        buf = io.BytesIO()
        np.save(buf, tensor.detach().cpu().numpy().astype(self.dtype), allow_pickle=False)
        entry = self.entry(path)
        atomic_write_bytes(entry, buf.getvalue())
        return entry

    def load(self, path: str | Path) -> torch.Tensor:
        """Cached tensor for `path`, else read + preprocess + store it."""
        from kneeoa.data.preprocess import preprocess_volume
        from kneeoa.data.volume import read_volume

        cached = self.get(path)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        tensor = preprocess_volume(read_volume(path), self.input_shape, self.spacing_mm, reorient=self.reorient)
        self.put(path, tensor)
        return tensor.to(torch.float16).float() if self.dtype == "float16" else tensor

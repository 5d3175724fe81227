"""Builders for the reliability campaign (not a test module): a corpus of bad files, tiny checkpoints, checks.

Every bad file is made here, from a valid tiny volume, so the tests need no data on disk and each case
says exactly what is wrong with it.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

SHAPE = (16, 16, 16)  # voxels a side of every corpus volume (model input of the tiny checkpoints too)


def good_array(shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, shape).astype(np.float32)


def _nifti_bytes(array: np.ndarray, dtype=None) -> bytes:
    """Uncompressed NIfTI-1 bytes written by nibabel directly (so arrays our writer refuses can exist)."""
    import nibabel as nib

    img = nib.Nifti1Image(array, np.eye(4), dtype=dtype)
    return img.to_bytes()


def _good_nifti(tmp: Path) -> bytes:
    from kneeoa.data.volume import write_nifti

    return write_nifti(tmp / ".seed.nii", good_array(), np.eye(4)).read_bytes()


def _with_dims(raw: bytes, dims: tuple[int, ...]) -> bytes:
    data = bytearray(raw)
    data[40:56] = struct.pack("<8h", len(dims), *dims, *([1] * (7 - len(dims))))
    return bytes(data)


def _metaimage(element_type: str, payload: bytes) -> bytes:
    head = ("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"DimSize = {SHAPE[0]} {SHAPE[1]} {SHAPE[2]}\nElementSpacing = 1 1 1\n"
            f"ElementType = {element_type}\nElementDataFile = LOCAL\n")
    return head.encode() + payload


def bad_image_makers() -> dict[str, tuple[str, Callable[[Path], bytes], str]]:
    """name -> (file name, maker(tmp) -> file bytes, regex the message must match)."""
    def truncated(tmp: Path) -> bytes:
        data = gzip.compress(_good_nifti(tmp))
        return data[: len(data) // 2]

    def corrupt_deflate(tmp: Path) -> bytes:
        data = bytearray(gzip.compress(_good_nifti(tmp)))
        data[40:400] = bytes(360)  # zeroed deflate stream behind an intact gzip header
        return bytes(data)

    def wrong_magic(tmp: Path) -> bytes:
        data = bytearray(_good_nifti(tmp))
        data[344:348] = b"abcd"
        return gzip.compress(bytes(data))

    def nan(tmp: Path) -> bytes:
        array = good_array()
        array[3, 4, 5] = np.nan
        return _nifti_bytes(array)

    def inf(tmp: Path) -> bytes:
        array = good_array()
        array[1, 2, 3] = -np.inf
        return _nifti_bytes(array)

    return {
        "truncated gzip": ("truncated.nii.gz", truncated, "truncated or corrupt"),
        "corrupt deflate data": ("corrupt.nii.gz", corrupt_deflate, "truncated or corrupt|not a NIfTI"),
        "wrong NIfTI magic": ("magic.nii.gz", wrong_magic, "not a NIfTI-1 file"),
        "gzip suffix on plain bytes": ("plain.nii.gz", lambda t: _good_nifti(t), "wrong magic bytes"),
        "random bytes": ("noise.nii", lambda t: np.random.default_rng(1).bytes(2000), "not a NIfTI file"),
        "zero bytes": ("empty.nii.gz", lambda t: b"", "empty file"),
        "2D image": ("flat.nii.gz", lambda t: gzip.compress(_nifti_bytes(good_array()[..., 0])), "2D image"),
        "4D image": ("series.nii.gz", lambda t: gzip.compress(_nifti_bytes(np.stack([good_array()] * 3, -1))),
                      r"4D image of shape \(16, 16, 16, 3\)"),
        "zero-size image": ("nothing.nii", lambda t: _nifti_bytes(np.zeros((4, 0, 4), np.float32)), "empty image"),
        "NaN voxel": ("nan.nii", nan, "NaN/Inf voxels"),
        "Inf voxel": ("inf.nii", inf, "NaN/Inf voxels"),
        "constant image": ("constant.nii", lambda t: _nifti_bytes(np.full(SHAPE, 7.0, np.float32)), "constant image"),
        "huge dims, tiny file": ("huge.nii.gz", lambda t: gzip.compress(_with_dims(_good_nifti(t), (30000,) * 3)),
                                 "implausibly large|cannot hold them"),
        "float16 MetaImage": ("half.mha", lambda t: _metaimage("MET_HALF", good_array().astype(np.float16).tobytes()),
                              "unknown MetaImage ElementType 'MET_HALF'"),
        "unsupported suffix": ("scan.png", lambda t: b"\x89PNG\r\n\x1a\n" + bytes(64), "unsupported file type"),
    }


def write_bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """Write the whole bad-image corpus into `folder`; name -> (path, expected message regex)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, (file_name, maker, match) in bad_image_makers().items():
        path = folder / file_name
        path.write_bytes(maker(folder))
        out[name] = (path, match)
    (folder / ".seed.nii").unlink(missing_ok=True)
    return out


def write_odd_but_valid_images(folder: Path) -> dict[str, Path]:
    """Unusual voxel types that are still images: they must be read (as float32) and scored."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.arange(np.prod(SHAPE), dtype=np.int64).reshape(SHAPE) * 1000
    int64 = folder / "int64.nii.gz"
    nib.save(nib.Nifti1Image(ramp, np.eye(4), dtype=np.int64), str(int64))
    uint8 = folder / "uint8.nii.gz"
    nib.save(nib.Nifti1Image((ramp % 251).astype(np.uint8), np.eye(4)), str(uint8))
    return {"int64": int64, "uint8": uint8}


def tiny_checkpoint(path: Path, variant: str = "dual", backbone: str = "resnet3d", seed: int = 0,
                    shape: tuple[int, int, int] = SHAPE) -> Path:
    """An untrained narrow model saved as a real KneeOA checkpoint."""
    import torch

    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import ModelSpec, build_model

    torch.manual_seed(seed)
    model = build_model(ModelSpec(backbone, variant, input_shape=shape, width=4)).eval()
    return save_checkpoint(path, model, {"training_data": "untrained reliability-test model"})


def assert_one_clear_error(rc: int, err: str, command: str, path: Path | str | None, match: str | None = None) -> str:
    """Exit 1, one `kneeoa CMD: error:` line naming `path` (and matching `match`), no traceback."""
    import re

    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1, f"exit {rc}, stderr: {err}"
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith(f"kneeoa {command}: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    message = errors[0]
    if path is not None:
        assert str(path) in message, f"{path} not named in: {message}"
    if match is not None:
        assert re.search(match, message), f"{match!r} not in: {message}"
    return message


def is_temp(path: Path) -> bool:
    """Atomic writes use hidden `.<name>.*.tmp*` files; those are never outputs."""
    return path.name.startswith(".") and ".tmp" in path.name


def assert_scores_whole(table: Path, maps: Path) -> list[dict]:
    """Every line of the table is a whole row (no cut line, no duplicate case); every listed map loads."""
    import csv

    from kneeoa.data.volume import read_volume
    from kneeoa.engine.score_io import SCORE_COLUMNS

    if not table.exists():
        return []
    text = table.read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = list(csv.reader(text.splitlines()))
    assert lines[0] == SCORE_COLUMNS and all(len(values) == len(SCORE_COLUMNS) for values in lines)
    rows = [dict(zip(SCORE_COLUMNS, values)) for values in lines[1:]]
    ids = [r["case_id"] for r in rows]
    assert len(ids) == len(set(ids))
    for row in rows:
        if row["saliency_path"]:
            assert read_volume(row["saliency_path"]).array.max() <= 1.0
    for path in maps.glob("*_saliency.nii.gz") if maps.is_dir() else []:
        if not is_temp(path):
            read_volume(path)
    return rows

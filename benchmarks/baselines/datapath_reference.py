"""Baseline for the data-path benchmark and the equality tests: reading and preprocessing as before issue 20.

`read_reference`: `nibabel.load(mmap=False)` (gunzip through Python's zlib) and the float32 cast;
`preprocess_reference`: MONAI Orientation, z-score of the full grid, permute, MONAI Resize on the CPU
(kneeoa's `preprocess_volume_monai`, still the path when a spacing is asked for);
`map_back_reference`: the saliency's inverse resample with nibabel's orientation helpers.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import torch
import torch.nn.functional as F


def read_reference(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(float32 array (i, j, k), affine) as read_volume returned them before the fast decoder."""
    img = nib.load(str(path), mmap=False)
    return np.asarray(np.asarray(img.dataobj), dtype=np.float32), np.asarray(img.affine, dtype=float)


def preprocess_reference(array: np.ndarray, affine: np.ndarray, input_shape) -> torch.Tensor:
    from kneeoa.data.preprocess import preprocess_volume_monai
    from kneeoa.data.volume import Volume

    return preprocess_volume_monai(Volume(np.asarray(array, dtype=np.float32), affine), input_shape)


def map_back_reference(map_dhw: np.ndarray, affine: np.ndarray, shape_ijk) -> np.ndarray:
    """The inverse resample as `model_map_to_volume` did it before (CPU, numpy orientation helpers)."""
    to_ras = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt("RAS"))
    ras_i, ras_j, ras_k = nio.apply_orientation(np.empty(tuple(shape_ijk), np.uint8), to_ras).shape
    m = torch.as_tensor(np.asarray(map_dhw, dtype=np.float32))[None, None]
    if tuple(m.shape[2:]) != (ras_k, ras_i, ras_j):
        m = F.interpolate(m, size=(ras_k, ras_i, ras_j), mode="trilinear", align_corners=False)
    ras_map = np.moveaxis(m[0, 0].numpy(), -3, -1)
    back = nio.apply_orientation(ras_map, nio.ornt_transform(nio.axcodes2ornt("RAS"), nio.io_orientation(affine)))
    return np.ascontiguousarray(back, dtype=np.float32)


def score_reference(files: list[Path], model, input_shape, out_csv: Path) -> None:
    """The scoring loop as it was on 2 cores (no loader workers): read, MONAI-preprocess, forward, and one
    fsync'd CSV row per volume."""
    from kneeoa.engine.inference import batch_outputs, decisions
    from kneeoa.engine.score_io import ensure_header, format_row
    from kneeoa.utils.atomic import append_line

    out_csv = Path(out_csv)
    if out_csv.exists():
        out_csv.unlink()
    ensure_header(out_csv)
    for path in files:
        x = preprocess_reference(*read_reference(path), input_shape)[None]
        out = batch_outputs(model, x)
        dec = decisions(out["kl_probs"], out["oa_prob"])
        row = {"case_id": Path(path).name, "path": str(path), "status": "ok", "error": "",
               "oa_prob": float(out["oa_prob"][0]), "pred_oa": int(dec["pred_oa"][0])}
        if out["kl_probs"] is not None:
            row.update({f"kl_prob_{g}": float(out["kl_probs"][0, g]) for g in range(5)})
            row.update(pred_kl=int(dec["pred_kl"][0]), consistent_kl=int(dec["consistent_kl"][0]))
        append_line(out_csv, format_row(row))

"""Segmentation presets. `quick` trains on the phantom on 2 CPU cores in minutes; `paper` is sized for
OAI-ZIB-CM on one GPU with nnU-Net-like choices (documented here, not tuned by us).

Axis order is the NIfTI voxel order (i, j, k): for OAI-ZIB-CM DESS that is 384 x 384 in-plane x 160 slices
at 0.36 x 0.36 x 0.70 mm.
"""

from __future__ import annotations

from pathlib import Path

from kneeoa.contracts.segmentation import SEG_ARCHS
from kneeoa.errors import ConfigError

# class_ratios: how often a patch is centred on each label 0..5 (MONAI RandCropByLabelClassesd). Cartilage
# plates are ~2-4 % of the knee's voxels; centring 3 of every 4 patches on a cartilage label (and one on the
# bones) makes thin plates as frequent in training as the bones, which is what lifts their Dice.
PRESETS: dict[str, dict] = {
    # UNet: the only one of the three MONAI networks that learnt the cartilage plates within the quick budget
    # (README "Segmentation": measured comparison with SegResNet and DynUNet at equal CPU time)
    "quick": {
        "arch": "unet", "width": 8, "spacing_mm": None,  # train at the data's own spacing; scans are resampled to its median
        "patch": [48, 48, 48], "samples_per_volume": 2, "class_ratios": [0.5, 0.5, 1.0, 0.5, 1.0, 1.0],
        "epochs": 30, "lr": 3e-3, "weight_decay": 1e-5, "batch_size": 4, "seed": 0,
        "sw_overlap": 0.5, "sw_batch_size": 2, "device": "auto", "amp": "none", "workers": 0, "cache_rate": 1.0,
        "evaluate": True,
    },
    # nnU-Net's rules for a dataset like OAI-ZIB-CM: target spacing = the median spacing (0.36, 0.36, 0.7),
    # a patch of about 1/2 x 1/2 x 2/5 of the median image (192, 192, 64 voxels = 69 x 69 x 45 mm), 2
    # patches per step, Dice + CE, polynomial learning-rate decay, bf16 on the GPU; 5 downsamplings would
    # exceed the 64 slices, so 3 (patch divisible by 8). The network is the quick preset's UNet at 4x the
    # width: we could not compare the three networks at this scale (no GPU was lent to us).
    "paper": {
        "arch": "unet", "width": 32, "spacing_mm": [0.3646, 0.3646, 0.7],
        "patch": [192, 192, 64], "samples_per_volume": 2, "class_ratios": [0.5, 0.5, 1.0, 0.5, 1.0, 1.0],
        "epochs": 300, "lr": 1e-3, "weight_decay": 1e-5, "batch_size": 2, "seed": 0,
        "sw_overlap": 0.5, "sw_batch_size": 4, "device": "auto", "amp": "bf16", "workers": 4, "cache_rate": 0.0,
        "evaluate": True,
    },
}
KEYS = tuple(PRESETS["quick"])


def load_seg_preset(name_or_path: str | Path) -> dict:
    """A bundled preset by name, or a YAML file holding any subset of its keys (the rest from `quick`)."""
    if str(name_or_path) in PRESETS:
        cfg = dict(PRESETS[str(name_or_path)])
        cfg["preset"] = str(name_or_path)
        return cfg
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"unknown segmentation preset (use {', '.join(PRESETS)} or a YAML file)", path)
    from kneeoa.utils.safe_yaml import load_yaml

    data = load_yaml(path)  # bounded, no aliases, duplicate keys refused (as training presets)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"unknown keys {unknown} (known: {', '.join(KEYS)})", path)
    return {**PRESETS["quick"], **data, "preset": str(path)}


def resolve_seg_config(preset: str | Path, data: str | Path | None, overrides: dict | None = None) -> dict:
    """Preset + command-line overrides (None = not given), validated."""
    cfg = load_seg_preset(preset)
    cfg.update({k: v for k, v in (overrides or {}).items() if v is not None})
    cfg["data"] = None if data is None else str(Path(data).resolve())
    return validate_seg_config(cfg)


def validate_seg_config(cfg: dict) -> dict:
    if cfg["arch"] not in SEG_ARCHS:
        raise ConfigError(f"arch must be one of {', '.join(SEG_ARCHS)}, got {cfg['arch']!r}")
    patch = [int(n) for n in (cfg["patch"] * 3 if len(cfg["patch"]) == 1 else cfg["patch"])]
    if len(patch) != 3 or any(n < 8 or n % 8 for n in patch):
        raise ConfigError(f"patch must be 1 or 3 sizes, each a multiple of 8 (>= 8), got {cfg['patch']}")
    cfg["patch"] = patch
    if len(cfg["class_ratios"]) != 6 or min(cfg["class_ratios"]) < 0 or sum(cfg["class_ratios"]) <= 0:
        raise ConfigError("class_ratios needs 6 non-negative weights (labels 0-5), not all zero")
    for key in ("epochs", "batch_size", "samples_per_volume", "width"):
        if int(cfg[key]) < 1:
            raise ConfigError(f"{key} must be >= 1, got {cfg[key]}")
    if cfg["spacing_mm"] is not None and (len(cfg["spacing_mm"]) != 3 or min(cfg["spacing_mm"]) <= 0):
        raise ConfigError(f"spacing_mm must be null or three positive sizes, got {cfg['spacing_mm']}")
    return cfg

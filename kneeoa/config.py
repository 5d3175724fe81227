"""Training configuration: a YAML preset (`quick`, `paper` or a file) + per-backbone overrides + command-line overrides.

Resolution order (later wins): preset top-level keys -> preset `backbones.<name>` block -> explicit overrides.
The resolved config is a flat dict of the keys in `TRAIN_KEYS` plus the run identity (preset, backbone,
variant, data, labels); it is saved as `config.yaml` in the run directory. Unknown keys are a ConfigError.
"""

from __future__ import annotations

from pathlib import Path

from kneeoa.contracts.catalog import BACKBONES
from kneeoa.contracts.vocab import AMP_MODES, DEVICES, HEADS, M3T_PRETRAINED, REORIENT, VARIANTS
from kneeoa.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent / "presets"

# key -> (allowed python types, one-line meaning); None in the types tuple means "may be null"
TRAIN_KEYS: dict[str, tuple[tuple, str]] = {
    "epochs": ((int,), "number of epochs"),
    "lr": ((float, int), "AdamW learning rate"),
    "weight_decay": ((float, int), "AdamW weight decay"),
    "batch_size": ((int,), "samples per optimisation step (per process under torchrun)"),
    "input_shape": ((list,), "model input (D, H, W)"),
    "width": ((int, type(None)), "base channel width; null = the paper's width"),
    "head": ((str,), "dual-head topology: chained (paper) or parallel"),
    "lambda_oa": ((float, int), "weight of the OA loss in the dual-head loss"),
    "seed": ((int,), "seed for weights, shuffling and dropout"),
    "device": ((str,), "auto, cpu, cuda or mps"),
    "workers": ((int,), "DataLoader worker processes"),
    "amp": ((str,), "mixed precision on CUDA: none, bf16 or fp16 (+ GradScaler)"),
    "channels_last": ((bool,), "use channels_last_3d memory format"),
    "cache": ((bool,), "cache preprocessed tensors on disk"),
    "cache_dir": ((str, type(None)), "cache folder; null = <run dir>/cache"),
    "deterministic": ((bool,), "deterministic algorithms on GPU too (CPU runs always are)"),
    "evaluate": ((bool,), "evaluate the last epoch on the test split"),
    "eval_batch_size": ((int,), "batch size for evaluation"),
    "options": ((dict,), "backbone-specific ModelSpec options"),
    "m3t_pretrained": ((str,), "M3T's 2D ResNet-18 start: none or imagenet (torchvision IMAGENET1K_V1, the paper)"),
    "m3t_weights": ((str, type(None)), "local ImageNet ResNet-18 weights file; null = torchvision's cache/URL"),
    "reorient": ((str,), "input voxel order: ras (reorient first) or none (the file's own, as the paper's code)"),
    "calibration_fraction": ((float, int), "training knees held out (subject-grouped, KL-stratified) to calibrate "
                                           "probabilities, sets and the OOD flag; 0 = none"),
}
# keys added after 0.1: presets and saved run configs without them get these values
OPTIONAL_DEFAULTS = {"m3t_pretrained": "none", "m3t_weights": None, "reorient": "ras",
                     "calibration_fraction": 0.0}
PRESET_ONLY_KEYS = {"description", "backbones"}
IDENTITY_KEYS = ("preset", "backbone", "variant", "data", "labels")
# what may change when a run is resumed: nothing that changes the model or the optimisation
RESUME_MUTABLE = {"epochs", "device", "workers", "eval_batch_size"}


def preset_path(name_or_path: str | Path) -> Path:
    """The YAML file of a named preset (`quick`, `paper`) or an explicit path."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        if not candidate.is_file():
            raise ConfigError("preset file not found", candidate)
        return candidate
    path = PRESETS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown preset {str(name_or_path)!r} (known: {known}, or a .yaml file)")
    return path


def _read_yaml(path: Path) -> dict:
    from kneeoa.utils.safe_yaml import load_yaml

    return load_yaml(path)


def load_preset(name_or_path: str | Path) -> dict:
    """Read and validate a preset: its train keys, `description` and per-backbone `backbones` blocks."""
    path = preset_path(name_or_path)
    data = _read_yaml(path)
    unknown = set(data) - set(TRAIN_KEYS) - PRESET_ONLY_KEYS
    if unknown:
        raise ConfigError(f"unknown preset keys: {', '.join(sorted(unknown))}", path)
    data = {**OPTIONAL_DEFAULTS, **data}
    missing = set(TRAIN_KEYS) - set(data)
    if missing:
        raise ConfigError(f"preset lacks keys: {', '.join(sorted(missing))}", path)
    blocks = data.get("backbones") or {}
    if not isinstance(blocks, dict):
        raise ConfigError("`backbones` must map a backbone name to overrides", path)
    for name, block in blocks.items():
        if name not in BACKBONES:
            raise ConfigError(f"`backbones` names unknown backbone {name!r} (known: {', '.join(BACKBONES)})", path)
        if not isinstance(block, dict):
            raise ConfigError(f"`backbones.{name}` must be a mapping", path)
        bad = set(block) - set(TRAIN_KEYS)
        if bad:
            raise ConfigError(f"unknown keys in `backbones.{name}`: {', '.join(sorted(bad))}", path)
    validate({k: v for k, v in data.items() if k in TRAIN_KEYS}, source=path)
    data["_path"] = str(path)
    return data


def validate(cfg: dict, source: str | Path | None = None) -> dict:
    """Check types and values of train keys present in `cfg`; returns cfg with normalised values."""
    for key, value in cfg.items():
        if key in IDENTITY_KEYS or key == "kneeoa_version":
            continue
        if key not in TRAIN_KEYS:
            raise ConfigError(f"unknown option {key!r}", source)
        types, _ = TRAIN_KEYS[key]
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(f"{key} must be {types[0].__name__}, got {value!r}", source)
        if not isinstance(value, types):
            raise ConfigError(f"{key} must be {' or '.join(t.__name__ for t in types)}, got {value!r}", source)
    checks = {
        "epochs": lambda v: v >= 1, "batch_size": lambda v: v >= 1, "eval_batch_size": lambda v: v >= 1,
        "workers": lambda v: v >= 0, "lr": lambda v: v > 0, "weight_decay": lambda v: v >= 0,
        "lambda_oa": lambda v: v >= 0, "width": lambda v: v is None or v >= 1,
        "head": lambda v: v in HEADS, "m3t_pretrained": lambda v: v in M3T_PRETRAINED,
        "reorient": lambda v: v in REORIENT,
        "calibration_fraction": lambda v: 0 <= v < 1,
        "amp": lambda v: v in AMP_MODES, "device": lambda v: v in DEVICES,
    }
    for key, ok in checks.items():
        if key in cfg and not ok(cfg[key]):
            raise ConfigError(f"invalid value for {key}: {cfg[key]!r}", source)
    if "input_shape" in cfg:
        shape = cfg["input_shape"]
        if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 8 for s in shape):
            raise ConfigError(f"input_shape must be three integers >= 8 (D H W), got {shape!r}", source)
    for key in ("lr", "weight_decay", "lambda_oa", "calibration_fraction"):
        if key in cfg:
            cfg[key] = float(cfg[key])
    return cfg


def normalise_overrides(overrides: dict | None) -> dict:
    """Drop None values (an option not given on the command line); expand a single input size to a cube."""
    out = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "input_shape":
            value = [int(value)] * 3 if isinstance(value, int) else [int(v) for v in value]
            if len(value) == 1:
                value = value * 3
        out[key] = value
    return out


def resolve_config(preset: str | Path, backbone: str, variant: str, data: str | Path | None = None,
                   overrides: dict | None = None, labels: str | Path | None = None) -> dict:
    """Preset + its `backbones.<backbone>` block + overrides -> the flat, validated run config."""
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r} (known: {', '.join(VARIANTS)})")
    raw = load_preset(preset)
    cfg = {k: raw[k] for k in TRAIN_KEYS}
    cfg.update((raw.get("backbones") or {}).get(backbone, {}))
    extra = normalise_overrides(overrides)
    unknown = set(extra) - set(TRAIN_KEYS)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    cfg.update(extra)
    cfg = validate(cfg, source="command line" if extra else raw["_path"])
    cfg["options"] = dict(cfg["options"] or {})
    identity = {"preset": str(preset), "backbone": backbone, "variant": variant,
                "data": None if data is None else str(Path(data).resolve()),
                "labels": None if labels is None else str(Path(labels).resolve())}
    return {**identity, **cfg}


def spec_dict(cfg: dict) -> dict:
    """The ModelSpec dict of a resolved config."""
    return {"backbone": cfg["backbone"], "variant": cfg["variant"], "head": cfg["head"],
            "input_shape": list(cfg["input_shape"]), "width": cfg["width"], "options": dict(cfg["options"]),
            "reorient": cfg.get("reorient", "ras")}


def save_config(path: str | Path, cfg: dict) -> Path:
    """Write the resolved config as YAML (atomic)."""
    import yaml

    from kneeoa.utils.atomic import atomic_write_text

    text = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
    atomic_write_text(path, "# resolved KneeOA training config (written by `kneeoa train`)\n" + text)
    return Path(path)


def load_config(path: str | Path) -> dict:
    """Read a saved run config and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("run config not found", path)
    cfg = {**OPTIONAL_DEFAULTS, **_read_yaml(path)}
    missing = (set(TRAIN_KEYS) | set(IDENTITY_KEYS)) - set(cfg)
    if missing:
        raise ConfigError(f"run config lacks keys: {', '.join(sorted(missing))}", path)
    return validate(cfg, source=path)


def apply_resume_overrides(cfg: dict, overrides: dict | None, source: str | Path | None = None) -> dict:
    """Overrides allowed when resuming (epochs, device, workers); any other change is a ConfigError."""
    extra = normalise_overrides(overrides)
    changed = {k for k, v in extra.items() if cfg.get(k) != v}
    forbidden = changed - RESUME_MUTABLE
    if forbidden:
        raise ConfigError(
            f"cannot change {', '.join(sorted(forbidden))} when resuming (only {', '.join(sorted(RESUME_MUTABLE))}); "
            "start a new run instead", source)
    out = dict(cfg)
    out.update({k: extra[k] for k in changed})
    return validate(out, source=source)

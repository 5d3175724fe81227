"""Training configuration: `TrainConfig`, a frozen dataclass, from a YAML preset (`quick`, `paper` or a file)
+ its per-backbone block + command-line overrides (later wins).

`TrainConfig`'s fields are the single source of every training option: their type, their rule (checked
once, in `__post_init__`), their one-line meaning, their `kneeoa train` flag (the parser is generated from
them, `add_train_arguments`) and whether `--resume` may change them. The engine reads attributes
(`cfg.epochs`). The resolved config is saved as `config.yaml` in the run directory; unknown keys, duplicate
keys and wrong types are a ConfigError naming the file. Standard library at import (YAML is read lazily).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneeoa.contracts.catalog import BACKBONES, input_shape_problem
from kneeoa.contracts.vocab import AMP_MODES, DEVICES, HEADS, M3T_PRETRAINED, REORIENT, VARIANTS
from kneeoa.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
NULL = type(None)


@dataclass(frozen=True)
class Option:
    """What a training option may hold and how the command line sets it."""

    types: tuple[type, ...]  # allowed Python types (NULL: may be null)
    help: str
    rule: Callable[[Any], bool] | None = None  # value rule beyond the type
    choices: tuple[str, ...] | None = None
    flag: str | None = None  # `kneeoa train` override flag; None = preset/YAML only
    cli: dict[str, Any] = field(default_factory=dict)  # extra argparse keywords of the flag
    resume: bool = False  # may change when a run is resumed (nothing that changes the model or optimisation)
    path: bool = False  # a file given on the command line is stored as an absolute path


def _opt(types: tuple[type, ...], help: str, *, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    return field(default=default, metadata={"option": Option(types, help, **kw)})


def _min(limit: float, strict: bool = False) -> Callable[[Any], bool]:
    return (lambda v: v is None or v > limit) if strict else (lambda v: v is None or v >= limit)


@dataclass(frozen=True)
class TrainConfig:
    """One resolved training run. Identity first, then the options (YAML key = field name)."""

    preset: str
    backbone: str
    variant: str
    data: str | None
    labels: str | None
    epochs: int = _opt((int,), "training epochs", rule=_min(1), flag="--epochs", resume=True)
    lr: float = _opt((float, int), "AdamW learning rate", rule=_min(0, strict=True), flag="--lr")
    weight_decay: float = _opt((float, int), "AdamW weight decay", rule=_min(0), flag="--weight-decay")
    batch_size: int = _opt((int,), "volumes per step (per process under torchrun)", rule=_min(1), flag="--batch-size")
    input_shape: list = _opt((list,), "model input D H W, or one N for a cube", flag="--input-size",
                             cli={"type": int, "nargs": "+", "metavar": "N", "dest": "input_size"})
    width: int | None = _opt((int, NULL), "base channel width; null = the paper's", rule=_min(1), flag="--width")
    head: str = _opt((str,), "dual-head topology: chained (paper) or parallel", choices=HEADS, flag="--head")
    lambda_oa: float = _opt((float, int), "weight of the OA loss (dual)", rule=_min(0), flag="--lambda-oa")
    seed: int = _opt((int,), "seed of weights, split order and augmentation", flag="--seed")
    device: str = _opt((str,), "auto = CUDA, then MPS, else CPU", choices=DEVICES, flag="--device", resume=True)
    workers: int = _opt((int,), "DataLoader worker processes", rule=_min(0), flag="--workers", resume=True)
    amp: str = _opt((str,), "mixed precision on CUDA: none, bf16 or fp16 (+ GradScaler)", choices=AMP_MODES,
                    flag="--amp")
    channels_last: bool = _opt((bool,), "channels_last_3d memory format", flag="--channels-last",
                               cli={"action": "store_true"})
    cache: bool = _opt((bool,), "cache preprocessed tensors on disk (--no-cache: decode every volume every epoch)",
                       flag="--no-cache", cli={"action": "store_false"})
    cache_dir: str | None = _opt((str, NULL), "shared folder for preprocessed tensors; null = RUN/cache",
                                 flag="--cache-dir")
    deterministic: bool = _opt((bool,), "deterministic algorithms on GPU too (CPU runs always are)")
    evaluate: bool = _opt((bool,), "evaluate the last epoch on the test split")
    eval_batch_size: int = _opt((int,), "batch size for evaluation", rule=_min(1), resume=True)
    options: dict = _opt((dict,), "backbone-specific ModelSpec options")
    # keys added after 0.1: presets and saved run configs without them get these defaults
    m3t_pretrained: str = _opt((str,), "M3T's 2D ResNet-18 start: none or imagenet (torchvision IMAGENET1K_V1, "
                               "the paper)", default="none", choices=M3T_PRETRAINED, flag="--m3t-pretrained")
    m3t_weights: str | None = _opt((str, NULL), "ImageNet ResNet-18 weights file (safetensors or torch state "
                                   "dict) for m3t_pretrained; null = torchvision's cache/URL", default=None,
                                   flag="--m3t-weights", cli={"metavar": "FILE"}, path=True)
    reorient: str = _opt((str,), "input voxel order: ras (reorient first, default) or none (the file's own, as the "
                         "paper's code)", default="ras", choices=REORIENT, flag="--reorient")
    calibration_fraction: float = _opt((float, int), "hold out this fraction of the training knees (whole subjects, "
                                       "KL-stratified) to calibrate the probabilities, KL/OA sets and OOD flag at "
                                       "the end of training (e.g. 0.2; default 0)", default=0.0,
                                       rule=lambda v: 0 <= v < 1, flag="--calibration-fraction")

    def __post_init__(self) -> None:
        """Every rule, once: identity, types, values; numbers normalised (lr & co. as float)."""
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r} (known: {', '.join(BACKBONES)})")
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r} (known: {', '.join(VARIANTS)})")
        for name, option in OPTIONS.items():
            value = getattr(self, name)
            check_value(name, option, value)
            if float in option.types:
                object.__setattr__(self, name, float(value))
        object.__setattr__(self, "input_shape", list(self.input_shape))
        object.__setattr__(self, "options", dict(self.options or {}))

    def __getitem__(self, key: str) -> Any:
        """Read-only `cfg["epochs"]` for code written against the old dict config; new code reads attributes."""
        if key not in FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping saved as config.yaml (field order)."""
        return {name: getattr(self, name) for name in FIELDS}

    def spec_dict(self) -> dict[str, Any]:
        """The ModelSpec dict of this run."""
        return {"backbone": self.backbone, "variant": self.variant, "head": self.head,
                "input_shape": list(self.input_shape), "width": self.width, "options": dict(self.options),
                "reorient": self.reorient}

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | Path | None = None) -> TrainConfig:
        """Build from a mapping; unknown or missing keys and bad values are a ConfigError naming `source`."""
        unknown = sorted(set(values) - set(FIELDS) - IGNORED_KEYS)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}", source)
        given = {k: v for k, v in values.items() if k in FIELDS}
        missing = sorted(set(REQUIRED) - set(given))
        if missing:
            raise ConfigError(f"config lacks keys: {', '.join(missing)}", source)
        try:
            return cls(**given)
        except ConfigError as err:
            raise ConfigError(err.problem, source) from None


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in dataclasses.fields(TrainConfig)
                              if "option" in f.metadata}
REQUIRED = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.default is dataclasses.MISSING)
OPTIONAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                     if f.default is not dataclasses.MISSING}
RESUME_MUTABLE = {name for name, option in OPTIONS.items() if option.resume}
IGNORED_KEYS = {"kneeoa_version"}  # written by some older runs; informative only
PRESET_ONLY_KEYS = {"description", "backbones", "segmenter"}  # segmenter: the study's, not a training option


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is NULL else t.__name__ for t in types)


def check_value(name: str, option: Option, value: Any) -> None:
    """The one check of a training option: its type, then its rule (ConfigError without a file)."""
    if (isinstance(value, bool) and bool not in option.types) or not isinstance(value, option.types):
        raise ConfigError(f"{name} must be {_type_name(option.types)}, got {value!r}")
    if option.choices is not None and value not in option.choices:
        raise ConfigError(f"invalid value for {name}: {value!r} (choose {', '.join(option.choices)})")
    if option.rule is not None and not option.rule(value):
        raise ConfigError(f"invalid value for {name}: {value!r}")
    if name == "input_shape":
        problem = input_shape_problem(value)
        if problem:
            raise ConfigError(problem)


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
    from kneeoa.utils.safe_yaml import load_yaml  # bounded, refuses aliases and duplicate keys

    return load_yaml(path)


def _check_options(values: dict, source: Path, where: str = "") -> None:
    for key, value in values.items():
        if key not in OPTIONS:
            raise ConfigError(f"unknown {'keys in `' + where + '`' if where else 'preset keys'}: {key}", source)
        try:
            check_value(key, OPTIONS[key], value)
        except ConfigError as err:
            raise ConfigError(f"{where + ': ' if where else ''}{err.problem}", source) from None


def load_preset(name_or_path: str | Path) -> dict:
    """Read and check a preset: its options, `description` and per-backbone `backbones` blocks."""
    path = preset_path(name_or_path)
    data = {**OPTIONAL_DEFAULTS, **_read_yaml(path)}
    blocks = data.get("backbones") or {}
    _check_options({k: v for k, v in data.items() if k not in PRESET_ONLY_KEYS}, path)
    missing = set(OPTIONS) - set(data)
    if missing:
        raise ConfigError(f"preset lacks keys: {', '.join(sorted(missing))}", path)
    if not isinstance(blocks, dict):
        raise ConfigError("`backbones` must map a backbone name to overrides", path)
    for name, block in blocks.items():
        if name not in BACKBONES:
            raise ConfigError(f"`backbones` names unknown backbone {name!r} (known: {', '.join(BACKBONES)})", path)
        if not isinstance(block, dict):
            raise ConfigError(f"`backbones.{name}` must be a mapping", path)
        _check_options(block, path, f"backbones.{name}")
    segmenter = data.get("segmenter")
    if segmenter is not None and (not isinstance(segmenter, str) or not segmenter.strip()):
        raise ConfigError("`segmenter` must be a path to a segmenter checkpoint (relative to the preset) or null",
                          path)
    data["_path"] = str(path)
    return data


def preset_segmenter(name_or_path: str | Path) -> Path | None:
    """The segmenter a preset names (`segmenter: seg.safetensors`, relative to the preset file), or None.

    The study uses it for test knees without a mask when no `--segmenter` is given (the flag wins)."""
    preset = load_preset(name_or_path)
    if preset.get("segmenter") is None:
        return None
    named = Path(str(preset["segmenter"])).expanduser()
    return named if named.is_absolute() else Path(preset["_path"]).parent / named


def normalise_overrides(overrides: dict | None) -> dict:
    """Drop None values (an option not given on the command line); one input size makes a cube."""
    out = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "input_shape":
            value = [int(value)] * 3 if isinstance(value, int) else [int(v) for v in value]
            if len(value) not in (1, 3):
                raise ConfigError("--input-size takes one number (a cube) or three (D H W)")
            value = value * 3 if len(value) == 1 else value
        out[key] = value
    return out


def known_overrides(overrides: dict | None) -> dict:
    """`normalise_overrides`, refusing a name that is not a training option."""
    extra = normalise_overrides(overrides)
    unknown = set(extra) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return extra


def resolve_config(preset: str | Path, backbone: str, variant: str, data: str | Path | None = None,
                   overrides: dict | None = None, labels: str | Path | None = None) -> TrainConfig:
    """Preset + its `backbones.<backbone>` block + overrides -> the validated run config."""
    if backbone not in BACKBONES:  # before the preset is read: the catalog names it, not the file
        raise ConfigError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    raw = load_preset(preset)
    values = {k: raw[k] for k in OPTIONS}
    values.update((raw.get("backbones") or {}).get(backbone, {}))
    extra = known_overrides(overrides)
    values.update(extra)
    identity = {"preset": str(preset), "backbone": backbone, "variant": variant,
                "data": None if data is None else str(Path(data).resolve()),
                "labels": None if labels is None else str(Path(labels).resolve())}
    return TrainConfig.from_dict({**identity, **values}, source="command line" if extra else raw["_path"])


def spec_dict(cfg: TrainConfig) -> dict:
    """The ModelSpec dict of a resolved config."""
    return cfg.spec_dict()


def save_config(path: str | Path, cfg: TrainConfig) -> Path:
    """Write the resolved config as YAML (atomic)."""
    import yaml

    from kneeoa.utils.atomic import atomic_write_text

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    atomic_write_text(path, "# resolved KneeOA training config (written by `kneeoa train`)\n" + text)
    return Path(path)


def load_config(path: str | Path) -> TrainConfig:
    """Read a saved run config (also one written before the newest options existed) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("run config not found", path)
    return TrainConfig.from_dict(_read_yaml(path), source=path)


def apply_resume_overrides(cfg: TrainConfig, overrides: dict | None, source: str | Path | None = None) -> TrainConfig:
    """Overrides allowed when resuming (epochs, device, workers, eval batch); any other change is a ConfigError."""
    extra = normalise_overrides(overrides)
    changed = {k for k, v in extra.items() if getattr(cfg, k, None) != v}
    forbidden = changed - RESUME_MUTABLE
    if forbidden:
        raise ConfigError(
            f"cannot change {', '.join(sorted(forbidden))} when resuming (only {', '.join(sorted(RESUME_MUTABLE))}); "
            "start a new run instead", source)
    return TrainConfig.from_dict({**cfg.to_dict(), **{k: extra[k] for k in changed}}, source=source)


# --- the `kneeoa train` (and `kneeoa study`) override flags, generated from the options ----------------------

FLAGGED = tuple(name for name, option in OPTIONS.items() if option.flag is not None)


def _flagged(only: Iterable[str] | None) -> tuple[str, ...]:
    names = FLAGGED if only is None else tuple(only)
    unknown = [n for n in names if n not in FLAGGED]
    if unknown:  # a programming error (a study subset naming an option without a flag), not user input
        raise ValueError(f"not a flagged training option: {', '.join(unknown)}")
    return names


def add_train_arguments(group: argparse._ArgumentGroup, only: Iterable[str] | None = None) -> None:
    """One flag per option that has one (or per option in `only`); default None = the preset's value."""
    for name in _flagged(only):
        option = OPTIONS[name]
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": option.help, **option.cli}
        if "action" not in kwargs:
            kwargs.setdefault("type", float if float in option.types else int if int in option.types else None)
            if option.choices is not None:
                kwargs["choices"] = option.choices
        group.add_argument(option.flag, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})


def overrides_from_args(args: argparse.Namespace, only: Iterable[str] | None = None) -> dict:
    """The options given on the command line (None = not given); file options made absolute."""
    out = {}
    for name in _flagged(only):
        option = OPTIONS[name]
        value = getattr(args, option.cli.get("dest", name))
        out[name] = str(Path(value).resolve()) if option.path and value is not None else value
    return out


def check_overrides(overrides: dict | None) -> dict:
    """`known_overrides`, then every value checked by its option's own rule: a study checks its
    overrides once, before it plans or starts any of its runs (the runs check them again as TrainConfig)."""
    extra = known_overrides(overrides)
    for name, value in extra.items():
        check_value(name, OPTIONS[name], value)
    return extra


def train_flag_argv(name: str, value: Any) -> list[str]:
    """The `kneeoa train` arguments that set option `name` to `value` (the parser above, inverted): how a
    CV plan writes its plain command lines. ConfigError when no flag can say it."""
    option = OPTIONS.get(name)
    if option is None or option.flag is None:
        raise ConfigError(f"override {name!r} has no `kneeoa train` flag; use the task command instead")
    action = option.cli.get("action")
    if action in ("store_true", "store_false"):
        if bool(value) != (action == "store_true"):  # a switch only sets one value; the other is the preset's
            raise ConfigError(f"override {name}={value!r} has no `kneeoa train` flag; use the task command instead")
        return [option.flag]
    return [option.flag, *(str(v) for v in value)] if isinstance(value, list) else [option.flag, str(value)]

"""`kneeoa train`: train one backbone x variant on a cohort into a run directory (resumable, torchrun-ready)."""

from __future__ import annotations

import argparse

from kneeoa.config import add_train_arguments, overrides_from_args
from kneeoa.contracts.catalog import backbone_names
from kneeoa.contracts.vocab import VARIANTS

DESCRIPTION = """Train one backbone x variant on a cohort into a run directory (config, log, checkpoints, metrics).
Resumable from the last complete epoch; run under torchrun for several GPUs/processes
(torchrun --nproc_per_node N -m kneeoa train ...).

inputs:   --data (a cohort root or a generic folder; --labels for its table), --preset and overrides
outputs:  RUN/config.json, RUN/log.jsonl, RUN/checkpoints/last.safetensors (+ best), RUN/metrics.json
example:  kneeoa train --data cohort --backbone resnet3d --variant dual --epochs 2 --out runs/resnet3d_dual"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model (preset + overrides) into a run directory",
        description=DESCRIPTION)
    p.add_argument("--data", help="cohort root (OAI-ZIB-CM layout or a generic folder); not needed with --resume")
    p.add_argument("--labels", help="labels table for a generic folder (case id + KL columns)")
    p.add_argument("--backbone", choices=backbone_names(), help="network (required for a new run)")
    p.add_argument("--variant", choices=VARIANTS, help="supervision (required for a new run)")
    p.add_argument("--preset", default="quick", help="quick, paper or a YAML file (default: quick)")
    p.add_argument("--out", required=True, help="run directory")
    add_train_arguments(p.add_argument_group("overrides (default: the preset's value)"))
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN/tensorboard")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kneeoa.engine.train import train
    from kneeoa.errors import ConfigError

    if not args.resume and (args.backbone is None or args.variant is None or args.data is None):
        raise ConfigError("a new run needs --data, --backbone and --variant")
    result = train(args.data, args.backbone, args.variant, args.out, preset=args.preset,
                   overrides=overrides_from_args(args), resume=args.resume, overwrite=args.overwrite,
                   tensorboard=args.tensorboard, labels=args.labels)
    test = (result.get("metrics") or {}).get("test")
    if test:
        import sys

        print("test " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in test.items()),
              file=sys.stderr)
    return 0

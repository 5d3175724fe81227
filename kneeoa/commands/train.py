"""`kneeoa train`: train one backbone x variant on a cohort into a run directory (resumable, torchrun-ready)."""

from __future__ import annotations

import argparse

from kneeoa.contracts.catalog import backbone_names
from kneeoa.contracts.vocab import AMP_MODES, DEVICES, HEADS, M3T_PRETRAINED, REORIENT, VARIANTS

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
    g = p.add_argument_group("overrides (default: the preset's value)")
    g.add_argument("--epochs", type=int, help="training epochs")
    g.add_argument("--lr", type=float, help="AdamW learning rate")
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--batch-size", type=int, help="volumes per step (per process under torchrun)")
    g.add_argument("--input-size", type=int, nargs="+", metavar="N", help="D H W, or one N for a cube")
    g.add_argument("--width", type=int, help="base channel width")
    g.add_argument("--head", choices=HEADS, help="dual-head topology")
    g.add_argument("--lambda-oa", type=float, help="weight of the OA loss (dual)")
    g.add_argument("--seed", type=int, help="seed of weights, split order and augmentation")
    g.add_argument("--device", choices=DEVICES, help="auto = CUDA, then MPS, else CPU")
    g.add_argument("--workers", type=int, help="DataLoader worker processes")
    g.add_argument("--amp", choices=AMP_MODES, help="mixed precision on CUDA")
    g.add_argument("--channels-last", action="store_true", default=None, help="channels_last_3d memory format")
    g.add_argument("--no-cache", dest="cache", action="store_false", default=None,
                   help="decode every volume every epoch")
    g.add_argument("--calibration-fraction", type=float,
                   help="hold out this fraction of the training knees (whole subjects, KL-stratified) to calibrate "
                        "the probabilities, KL/OA sets and OOD flag at the end of training (e.g. 0.2; default 0)")
    g.add_argument("--cache-dir", help="shared folder for preprocessed tensors (default: RUN/cache)")
    g.add_argument("--reorient", choices=REORIENT,
                   help="input voxel order: ras (reorient first, default) or none (the file's own, as the paper)")
    g.add_argument("--m3t-pretrained", choices=M3T_PRETRAINED,
                   help="M3T's 2D ResNet-18 start (paper preset: imagenet, torchvision's IMAGENET1K_V1)")
    g.add_argument("--m3t-weights", metavar="FILE",
                   help="ImageNet ResNet-18 weights file (safetensors or torch state dict) for m3t_pretrained")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN/tensorboard")
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The options given on the command line (None = not given)."""
    from pathlib import Path

    size = args.input_size
    if size is not None and len(size) not in (1, 3):
        from kneeoa.errors import ConfigError

        raise ConfigError("--input-size takes one number (a cube) or three (D H W)")
    return {"epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay, "batch_size": args.batch_size,
            "input_shape": size, "width": args.width, "head": args.head, "lambda_oa": args.lambda_oa,
            "seed": args.seed, "device": args.device, "workers": args.workers, "amp": args.amp,
            "channels_last": args.channels_last, "cache": args.cache, "cache_dir": args.cache_dir,
            "m3t_pretrained": args.m3t_pretrained, "reorient": args.reorient,
            "m3t_weights": None if args.m3t_weights is None else str(Path(args.m3t_weights).resolve()),
            "calibration_fraction": args.calibration_fraction}


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

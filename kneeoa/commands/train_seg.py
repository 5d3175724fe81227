"""`kneeoa train-seg`: train a knee segmenter (femur, tibia, three cartilage plates) on a cohort's masks."""

from __future__ import annotations

import argparse

from kneeoa.contracts.segmentation import SEG_ARCHS
from kneeoa.contracts.vocab import AMP_MODES, DEVICES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-seg", help="train a segmenter (labels 0-5 as OAI-ZIB-CM) into a run directory",
        description="Train a MONAI segmentation network on the cases that have masks (OAI-ZIB-CM labelsTr/ or "
                    "a folder's masks/): Dice + CE loss, patches centred on the thin cartilage labels, "
                    "evaluation of the test split (Dice, HD95) with sliding windows. The run directory, --resume, "
                    "progress and checkpoints work as in `kneeoa train`; RUN/checkpoints/last.safetensors is the "
                    "segmenter for `kneeoa segment`.\n\n"
                    "inputs:   --data (a cohort root with masks), --preset and overrides\n"
                    "outputs:  the run directory --out (as `kneeoa train`: config, metrics, checkpoints)\n"
                    "example:  kneeoa train-seg --data phantom --preset quick --out runs/seg")
    p.add_argument("--data", help="cohort root with masks; not needed with --resume")
    p.add_argument("--preset", default="quick", help="quick (phantom, CPU, minutes), paper (OAI-ZIB-CM, GPU) or YAML")
    p.add_argument("--out", required=True, help="run directory")
    g = p.add_argument_group("overrides (default: the preset's value)")
    g.add_argument("--arch", choices=SEG_ARCHS, help="MONAI network")
    g.add_argument("--width", type=int, help="channels at full resolution")
    g.add_argument("--patch", type=int, nargs="+", metavar="N", help="patch size i j k (multiples of 8), or one N")
    g.add_argument("--epochs", type=int, help="training epochs")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--batch-size", type=int, help="patches per step")
    g.add_argument("--seed", type=int, help="seed of weights and patch sampling")
    g.add_argument("--device", choices=DEVICES, help="auto = CUDA, then MPS, else CPU")
    g.add_argument("--amp", choices=AMP_MODES, help="mixed precision on CUDA")
    g.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last complete epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from kneeoa.segmentation.train import train_segmenter

    overrides = {"arch": args.arch, "width": args.width, "patch": args.patch, "epochs": args.epochs, "lr": args.lr,
                 "batch_size": args.batch_size, "seed": args.seed, "device": args.device, "amp": args.amp,
                 "workers": args.workers}
    result = train_segmenter(args.data, args.out, args.preset, overrides, resume=args.resume,
                             overwrite=args.overwrite)
    test = (result.get("metrics") or {}).get("test")
    if test:
        print("test Dice " + " ".join(f"{k}={v['dice_mean']:.3f}" for k, v in test.items()), file=sys.stderr)
    print(result["checkpoint"])
    return 0

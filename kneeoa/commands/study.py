"""`kneeoa study`: train the 3x3 grid, predict, analyse, write report.html (resumable)."""

from __future__ import annotations

import argparse

from kneeoa.contracts.catalog import study_backbones
from kneeoa.contracts.vocab import DEVICES, VARIANTS

DESCRIPTION = """The whole protocol: train the 3 backbones x 3 variants, predict the test split, then statistics, latent
analysis, saliency and one report.html. Re-run the same command to resume: finished runs are kept, and
so are their compute times.

inputs:   --data (a cohort root in the OAI-ZIB-CM layout, e.g. a phantom cohort), --preset
outputs:  OUT/runs/, OUT/predictions/, OUT/stats/, OUT/latent/, OUT/saliency/, OUT/report.html,
          OUT/study.json
example:  kneeoa study --data cohort --out study --backbones resnet3d --epochs 2"""

def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="the whole protocol: 3 backbones x 3 variants -> stats, latent, saliency, report",
                       description=DESCRIPTION)
    p.add_argument("--data", required=True, help="cohort root (OAI-ZIB-CM layout, e.g. a phantom cohort)")
    p.add_argument("--out", required=True, help="study folder (re-run the same command to resume)")
    p.add_argument("--preset", default="quick", help="quick | paper | a YAML preset file")
    p.add_argument("--backbones", default=",".join(study_backbones()), help="comma-separated subset")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--device", choices=DEVICES, help="auto = CUDA, then MPS, else CPU (default: the preset's)")
    p.add_argument("--saliency-cases", type=int, default=4, help="test cases explained per model")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples")
    p.set_defaults(func=run)


def overrides_from(args: argparse.Namespace) -> dict:
    return {k: v for k, v in {"epochs": args.epochs, "device": args.device}.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    from kneeoa.study import run_study

    result = run_study(args.data, args.out, preset=args.preset, backbones=tuple(args.backbones.split(",")),
                       variants=tuple(args.variants.split(",")), overrides=overrides_from(args),
                       saliency_cases=args.saliency_cases, resamples=args.resamples)
    print(f"report: {result['report']}")
    return 0

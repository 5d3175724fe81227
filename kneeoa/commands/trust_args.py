"""The prediction-time trust options shared by `grade` and `score` (not a command itself)."""

from __future__ import annotations

import argparse
from typing import Any


def add_trust_arguments(p: argparse.ArgumentParser) -> None:
    """--alpha, --set-method, --class-conditional, --ood-alpha (used when the checkpoint is calibrated)."""
    from kneeoa.contracts.trust import CONFORMAL_METHODS, DEFAULT_ALPHA, DEFAULT_METHOD, DEFAULT_OOD_ALPHA

    g = p.add_argument_group("trust (calibrated checkpoints: `kneeoa calibrate` or `train --calibration-fraction`)")
    g.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"KL/OA sets hold the true grade for about 1 - alpha of knees (default {DEFAULT_ALPHA})")
    g.add_argument("--set-method", default=DEFAULT_METHOD, choices=CONFORMAL_METHODS,
                   help="ordinal = a range of grades (default); lac / aps need not be ranges")
    g.add_argument("--class-conditional", action="store_true",
                   help="one threshold per true grade (coverage per grade, larger sets)")
    g.add_argument("--ood-alpha", type=float, default=DEFAULT_OOD_ALPHA,
                   help=f"flag a volume when its OOD p-value is <= this (default {DEFAULT_OOD_ALPHA})")


def trust_options(args: argparse.Namespace) -> Any:
    from kneeoa.contracts.trust import TrustOptions

    return TrustOptions(alpha=args.alpha, method=args.set_method, class_conditional=args.class_conditional,
                        ood_alpha=args.ood_alpha)

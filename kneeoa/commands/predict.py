"""`kneeoa predict`: a checkpoint on a labelled split -> published per-subject CSV, metrics CSV, embeddings."""

from __future__ import annotations

import argparse

from kneeoa.contracts.vocab import DEVICES

DESCRIPTION = """Evaluate a checkpoint on a labelled split: per-subject predictions in the paper's format, a metrics
CSV and optionally the embeddings (train + the split) for the latent analysis.

inputs:   --checkpoint (.safetensors), --data (a cohort root; --labels for a generic folder)
outputs:  OUT/<name>_preds.csv, OUT/<name>_metrics.csv, with --embeddings OUT/<name>_embeddings.npz
example:  kneeoa predict --checkpoint Resources/demo_model.safetensors --data cohort --out preds"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="evaluate a checkpoint on a labelled split (CSV + metrics)",
                              description=DESCRIPTION)
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors)")
    p.add_argument("--data", required=True, help="cohort root")
    p.add_argument("--labels", help="labels table for a generic folder")
    p.add_argument("--split", default="test", help="split to predict (default: test)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--embeddings", action="store_true", help="also write <name>_embeddings.npz")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto = CUDA, then MPS, else CPU")
    p.add_argument("--batch-size", type=int, default=2, help="volumes per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--cache-dir", help="folder for preprocessed tensors (reused across models)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    from kneeoa.commands.trust_args import add_trust_arguments

    add_trust_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from kneeoa.commands.trust_args import trust_options
    from kneeoa.engine.predict import predict

    result = predict(args.checkpoint, args.data, args.out, split=args.split, embeddings=args.embeddings,
                     labels=args.labels, device=args.device, batch_size=args.batch_size, workers=args.workers,
                     cache_dir=args.cache_dir, overwrite=args.overwrite, trust=trust_options(args))
    metrics = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result["metrics"].items())
    trust = f"\n{result['trust']}" if result.get("trust") else ""
    print(f"{result['predictions']}{trust}\n{metrics}", file=sys.stderr)
    return 0

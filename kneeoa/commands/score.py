"""`kneeoa score`: batch-score a cohort folder into a CSV (resumable, shardable, bad volumes recorded)."""

from __future__ import annotations

import argparse

from kneeoa.contracts.vocab import DEVICES, SALIENCY_METHODS

DESCRIPTION = """Score every volume of a folder into one CSV row each: status, OA probability, KL probabilities, the
predicted and the hierarchy-consistent KL. Unreadable volumes become error rows and the job goes on.
Resumable (--resume), shardable (--shard, then `kneeoa merge`); under torchrun every rank scores its
share into the same table.

inputs:   FOLDER (NIfTI, NRRD, MHA files or DICOM series folders; a cohort root), --checkpoint
outputs:  --out scores table (.csv); with --saliency DIR, DIR/<case_id>_saliency.nii.gz
example:  kneeoa score cohort/imagesTs --checkpoint Resources/demo_model.safetensors --out scores.csv"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score", help="score every volume of a folder into a CSV (resumable, shardable)",
        description=DESCRIPTION)
    p.add_argument("folder", help="cohort folder (NIfTI, NRRD, MHA files or DICOM series folders)")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors)")
    p.add_argument("--out", required=True, help="scores table (.csv)")
    p.add_argument("--saliency", metavar="DIR", help="also write <case_id>_saliency.nii.gz maps here")
    p.add_argument("--segmenter", help="with --saliency: segment cases without a mask (<case_id>_seg.nii.gz) and "
                                       "append each map's cartilage overlap to DIR/saliency_overlap.csv (mask_source)")
    p.add_argument("--saliency-method", default=SALIENCY_METHODS[0],
                   choices=SALIENCY_METHODS, help="attribution method of the --saliency maps")
    p.add_argument("--target", default="auto", help="saliency target: auto, kl, oa or a KL grade 0-4")
    p.add_argument("--resume", action="store_true", help="skip cases already in the table")
    p.add_argument("--overwrite", action="store_true", help="replace an existing table")
    p.add_argument("--shard", metavar="I/N", help="score every N-th case starting at I (0-based), e.g. 0/4")
    p.add_argument("--workers", type=int, default=None,
                   help="loader processes decoding ahead of the model; -1: one decode thread instead (default: "
                        "planned from the cores this process may use and the first volume's decode and model times)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="volumes per forward pass (default: as many as half the free GPU memory holds, 1 on CPU)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto = CUDA, then MPS, else CPU")
    from kneeoa.commands.trust_args import add_trust_arguments

    add_trust_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from kneeoa.commands.trust_args import trust_options
    from kneeoa.engine.score import score_folder

    if args.segmenter and not args.saliency:
        from kneeoa.errors import ConfigError

        raise ConfigError("--segmenter goes with --saliency (the automatic masks are for the saliency overlap)")
    result = score_folder(args.folder, args.checkpoint, args.out, saliency_dir=args.saliency, resume=args.resume,
                          overwrite=args.overwrite, shard=args.shard, workers=args.workers,
                          batch_size=args.batch_size, device=args.device, saliency_method=args.saliency_method,
                          target=args.target, trust=trust_options(args), segmenter=args.segmenter)
    from kneeoa.progress import emit

    emit("result", task="score", **result)  # Slicer's background scoring reads the summary from this line
    print(f"{result['out_csv']}: {result['scored']} scored, {result['errors']} failed, "
          f"{result['skipped']} already done", file=sys.stderr)
    return 0

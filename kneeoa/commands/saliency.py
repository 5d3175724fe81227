"""`kneeoa saliency`: saliency NIfTI maps on the original grid for one image or a cohort split, plus overlap CSV."""

from __future__ import annotations

import argparse
import sys

from kneeoa.contracts.vocab import CARTILAGE_LABELS, SALIENCY_METHODS, SPLITS

DESCRIPTION = """Saliency maps for one image or a cohort split, on the original image grid (values in [0, 1]), and,
where cartilage masks exist, their overlap with the cartilage (mass@ROI, top-k@ROI, Dice@k, per
compartment).

inputs:   --checkpoint, --image (+ optional --mask) or --data (a cohort root with masks)
outputs:  OUT/<case_id>_saliency.nii.gz per case, OUT/saliency_overlap.csv (with a mean row)
example:  kneeoa saliency --checkpoint Resources/demo_model.safetensors --data cohort --limit 2 --out maps"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `kneeoa saliency`."""
    p = subparsers.add_parser(
        "saliency", help="saliency maps (NIfTI on the image grid) and their overlap with the cartilage mask",
        description=DESCRIPTION)
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="one image (NIfTI, NRRD, MHA or a DICOM series folder)")
    src.add_argument("--data", help="cohort root (OAI-ZIB-CM layout or a generic folder)")
    p.add_argument("--mask", help="cartilage mask for --image (labels as OAI-ZIB-CM)")
    p.add_argument("--segmenter", help="segmenter (.safetensors): cases without a mask are segmented and their "
                                       "overlap computed on the automatic mask (column mask_source)")
    p.add_argument("--split", default="test", choices=SPLITS, help="cohort split (default test)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default=SALIENCY_METHODS[0], choices=SALIENCY_METHODS,
                   help="smoothgrad = the paper's SmoothGrad of grad x noisy input (default); grad = its plain-gradient "
                        "SmoothGrad; smoothgrad_clean_input = mean gradient x clean input (KneeOA 0.1)")
    p.add_argument("--target", default="auto",
                   help="auto (argmax KL if the model has a KL head, else OA), kl, oa, a KL grade 0-4, or both "
                        "(Dual models: <case>_saliency_kl and _oa maps in one run, as the paper's export)")
    p.add_argument("--topk", default="1,5,10",
                   help="top-k fractions of the overlap table, percent of all voxels (default 1,5,10)")
    p.add_argument("--labels", default=",".join(map(str, CARTILAGE_LABELS)),
                   help="mask labels of the ROI (default 2,4,5 = all cartilage)")
    p.add_argument("--limit", type=int, default=None, help="at most N cases")
    p.add_argument("--n-samples", type=int, default=8, help="SmoothGrad noisy copies / IG steps (default 8)")
    p.add_argument("--noise-std", type=float, default=0.05, help="SmoothGrad noise std on the z-scored input")
    p.add_argument("--batch-size", type=int, default=None, help="copies per forward pass (default: all at once)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--overwrite", action="store_true", help="replace maps / overlap table already in --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Compute and write the maps; returns 1 when some case failed (the others are still written)."""
    from pathlib import Path

    from kneeoa.analysis.saliency_job import (
        SaliencyCase,
        check_saliency_outputs,
        parse_labels,
        parse_topk,
        run_saliency_cases,
    )
    from kneeoa.contracts.case_ids import case_id_from_name
    from kneeoa.engine.devices import resolve_device
    from kneeoa.errors import ConfigError, InputError
    from kneeoa.models.checkpoint import load_checkpoint
    from kneeoa.progress import emit, mode, one_line

    labels = parse_labels(args.labels)
    ks = parse_topk(args.topk)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.mask and not args.image:
        raise ConfigError("--mask goes with --image (a cohort brings its own masks)")
    if args.image:
        image = Path(args.image)
        if not image.exists():
            raise InputError("image not found", image)
        if args.mask and not Path(args.mask).is_file():
            raise InputError("mask file not found", args.mask)
        cases = [SaliencyCase(case_id_from_name(image), image, Path(args.mask) if args.mask else None)]
        # one file in, one clear error out: check image and mask before any model is loaded
        from kneeoa.analysis.saliency_job import _read_mask
        from kneeoa.data.volume import read_volume

        image_volume = read_volume(image)
        if args.mask:
            _read_mask(Path(args.mask), image_volume)
    else:
        from kneeoa.data.cohort import load_cohort

        cohort = load_cohort(args.data)
        cases = [SaliencyCase(c.case_id, Path(c.image), None if c.mask is None else Path(c.mask), c.kl)
                 for c in cohort.split(args.split, graded_only=False)]
        if not cases:
            raise InputError(f"no cases in split {args.split!r}", args.data)
    cases = cases[: args.limit] if args.limit else cases
    check_saliency_outputs(args.out, cases, args.overwrite, both=args.target == "both")  # before the model loads
    target = int(args.target) if args.target.strip().isdigit() else args.target
    model, card = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    input_shape = (card.get("preprocessing") or {}).get("input_shape")
    result = run_saliency_cases(
        model, cases, args.out, method=args.method, target=target, labels=labels,
        input_shape=tuple(input_shape) if input_shape else None, n_samples=args.n_samples,
        noise_std=args.noise_std, batch_size=args.batch_size, ks=ks, segmenter=args.segmenter, overwrite=args.overwrite)
    emit("result", maps={k: str(v) for k, v in result["maps"].items()},
         overlap_csv=None if result["overlap_csv"] is None else str(result["overlap_csv"]),
         failures=result["failures"])
    say = sys.stderr if mode() == "json" else sys.stdout  # stdout carries only JSON lines in json mode
    print(f"wrote {len(result['maps'])} saliency map(s) to {args.out}", file=say)
    if result["overlap_csv"] is not None:
        print(f"overlap table: {result['overlap_csv']}", file=say)
    if result["failures"]:
        for case_id, message in result["failures"].items():
            print(one_line(f"kneeoa saliency: {case_id}: {message}"), file=sys.stderr)
        return 1
    return 0



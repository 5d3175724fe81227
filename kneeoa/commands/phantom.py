"""`kneeoa phantom`: write a synthetic knee cohort in the OAI-ZIB-CM layout and print its summary."""

from __future__ import annotations

import argparse

DESCRIPTION = """Write a synthetic knee MRI cohort in the OAI-ZIB-CM layout: a procedural knee phantom whose latent OA
severity drives the findings, with a noisy recorded KL grade. Same arguments -> byte-identical files.

inputs:   none
outputs:  OUT_DIR/imagesTr, labelsTr, imagesTs, labelsTs (NIfTI), subInfo_train.xlsx, subInfo_test.xlsx,
          kneeSideInfo.csv (+ preview.png with --preview); a summary on stdout
example:  kneeoa phantom cohort --train 20 --test 10 --shape 32 32 32 --seed 0"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `kneeoa phantom`."""
    p = subparsers.add_parser(
        "phantom", help="generate a synthetic knee MRI cohort (OAI-ZIB-CM layout)",
        description=DESCRIPTION)
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created; must not hold other cases)")
    p.add_argument("--train", type=int, default=120, help="training cases (default 120)")
    p.add_argument("--test", type=int, default=40, help="test cases, numbered after the training ones (default 40)")
    p.add_argument("--shape", type=int, nargs=3, default=[48, 48, 48], metavar=("D", "H", "W"),
                   help="model-space grid D H W (NIfTI array is H W D); default 48 48 48")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--preview", action="store_true", help="also save OUT_DIR/preview.png (sagittal slices per KL)")
    p.add_argument("--bilateral", type=float, default=0.0, metavar="SHARE",
                   help="probability that two consecutive cases are one subject's left and right knee (same "
                        "SubjectID, correlated severity), as in OAI; default 0 = one knee per subject")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the cohort and print its summary."""
    import json

    from kneeoa.data.phantom.cohort import generate_cohort
    from kneeoa.progress import emit

    summary = generate_cohort(args.out_dir, args.train, args.test, shape=tuple(args.shape), seed=args.seed,
                              preview=args.preview, workers=args.workers,
                              bilateral=args.bilateral)
    emit("result", task="phantom", **summary)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    """Human-readable summary lines."""
    lines = [f"phantom cohort: {s['out_dir']}  ({s['n_train']} train + {s['n_test']} test, seed {s['seed']}, "
             f"grid D,H,W = {tuple(s['shape_dhw'])}, voxel {s['spacing_mm'][0]:.2f} mm, "
             f"{s['workers']} worker(s), {s['seconds']:.1f} s)"]
    for split in ("train", "test"):
        lines.append(f"  {split:5s} recorded KL 0-4: {s['kl_counts'][split]}   true KL 0-4: {s['true_kl_counts'][split]}")
    if s.get("bilateral"):
        lines.append(f"  {s['n_subjects']} subjects, {s['n_bilateral_subjects']} with both knees (bilateral "
                     f"share {s['bilateral']})")
    ungraded = s["ungraded"]
    lines.append(f"  ungraded (blank KLGrade): {len(ungraded)}" + (f"  {', '.join(ungraded)}" if ungraded else ""))
    lines.append(f"  recorded vs true KL: agreement {s['agreement']:.3f}, Cohen's kappa {s['kappa_unweighted']:.3f} "
                 f"(linear-weighted {s['kappa_linear']:.3f}, quadratic {s['kappa_quadratic']:.3f}); "
                 f"reader moves a grade with p = {s['reader_flip_prob']}")
    if s.get("preview"):
        lines.append(f"  preview: {s['preview']}")
    return "\n".join(lines)

"""`kneeoa evaluate-seg`: Dice and HD95 per label per case of label maps against reference masks."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate-seg", help="Dice and HD95 (mm) per label per case against reference masks (MONAI metrics)",
        description="Pairs the label maps in PRED (e.g. the output folder of `kneeoa segment`) with the "
                    "reference masks by case id and writes one row per case and label (columns case_id, label, "
                    "label_name, dice, hd95_mm, ...); prints mean, SD and range per label.\n\n"
                    "inputs:   PRED folder of label maps, --reference masks (a folder or a cohort root)\n"
                    "outputs:  --out metrics table (.csv), <out>.summary.json beside it; a per-label summary "
                    "on stderr\n"
                    "example:  kneeoa evaluate-seg segs/ --reference phantom/labelsTs --out seg_metrics.csv")
    p.add_argument("pred", help="folder of predicted label maps (<case_id>.nii.gz)")
    p.add_argument("--reference", required=True, help="folder of reference masks, or a cohort root with masks")
    p.add_argument("--out", required=True, help="metrics table (.csv)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing table and its summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from kneeoa.contracts.segmentation import SEG_METRIC_COLUMNS
    from kneeoa.data.tables import write_table
    from kneeoa.errors import ConfigError
    from kneeoa.segmentation.folder import evaluate_folder
    from kneeoa.utils import strict_json
    from kneeoa.utils.atomic import atomic_write_text
    from kneeoa.utils.outputs import check_outputs

    out = Path(args.out)
    if out.suffix.lower() != ".csv":
        raise ConfigError("the metrics table must be a .csv file", out)
    summary_json = out.with_suffix(".summary.json")
    check_outputs([out, summary_json], [args.pred, args.reference], args.overwrite, what="the metrics table")
    rows, summary = evaluate_folder(args.pred, args.reference)
    write_table(out, rows, SEG_METRIC_COLUMNS)  # atomic; ids never live formulas
    atomic_write_text(summary_json, strict_json.dumps(summary, indent=1) + "\n")
    for name, s in summary.items():
        print(f"{name:<26} Dice {s['dice_mean']:.3f} +- {s['dice_sd']:.3f} (range {s['dice_min']:.3f}-"
              f"{s['dice_max']:.3f}), HD95 median {s['hd95_median_mm']:.2f} mm, n={s['n']}", file=sys.stderr)
    return 0

"""`kneeoa demo`: the embedded default — a phantom cohort, the quick study on it, and its report."""

from __future__ import annotations

import argparse

from kneeoa.contracts.catalog import study_backbones

DEMO_CALIBRATION_FRACTION = 0.2  # held out of each demo model's training knees for the trust layer

DEFAULTS = {"train": 120, "test": 40, "shape": (48, 48, 48), "seed": 0}


DESCRIPTION = """The embedded default: a phantom cohort, the quick 3x3 study on it (3 backbones x Single-OA, Single-KL,
Dual), its statistics, latent analysis and saliency, a segmentation section from the bundled demo
segmenter (about 35 s), and one HTML report. Re-running resumes: finished
models are not retrained. About 5 minutes on 2 idle cores; numbers depend on the machine and --threads.

inputs:   none (the phantom is generated into OUT/phantom)
outputs:  OUT/phantom/ (cohort, preview.png), OUT/study/ (runs, predictions, stats, latent, saliency,
          report.html)
example:  kneeoa demo --out demo_run"""

def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="phantom cohort -> quick study -> report.html (minutes on a laptop CPU)",
                       description=DESCRIPTION)
    p.add_argument("--out", default="demo_run", help="demo folder (re-run to resume; default: demo_run)")
    p.add_argument("--train", type=int, default=DEFAULTS["train"], help="phantom training cases")
    p.add_argument("--test", type=int, default=DEFAULTS["test"], help="phantom test cases")
    p.add_argument("--shape", type=int, nargs=3, default=DEFAULTS["shape"], metavar=("D", "H", "W"),
                   help="phantom grid D H W")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="phantom seed")
    p.add_argument("--backbones", default=",".join(study_backbones()), help="comma-separated subset of the backbones")
    p.add_argument("--epochs", type=int, help="override the quick preset's epochs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from kneeoa.contracts.vocab import VARIANTS
    from kneeoa.data.phantom import generate_cohort
    from kneeoa.segmentation.evaluation import bundled_segmenter
    from kneeoa.study import run_study

    t0 = time.perf_counter()
    out = Path(args.out)
    data = out / "phantom"
    if not (data / "subInfo_test.xlsx").is_file():
        generate_cohort(data, args.train, args.test, shape=tuple(args.shape), seed=args.seed, preview=True)
    # every demo model is calibrated on a fifth of its training knees, so the report has its trust section
    overrides = {"calibration_fraction": DEMO_CALIBRATION_FRACTION, **({"epochs": args.epochs} if args.epochs else {})}
    result = run_study(data, out / "study", preset="quick", backbones=tuple(args.backbones.split(",")),
                       variants=VARIANTS, overrides=overrides, segmenter=bundled_segmenter())
    minutes = (time.perf_counter() - t0) / 60
    print(f"\nKneeOA demo finished in {minutes:.1f} min.\n  phantom cohort: {data}\n"
          f"  study folder:   {out / 'study'}\n  report:         {Path(result['report']).resolve()}\n"
          "Open the report in a browser.")
    return 0

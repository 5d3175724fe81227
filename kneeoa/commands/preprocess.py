"""`kneeoa preprocess`: the paper's offline step (N4, resample, z-score) on a cohort, written in the same layout."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "preprocess", help="offline N4 bias correction, resampling and z-score of a cohort (the paper's step)",
        description="Reads the cohort at ROOT (OAI-ZIB-CM layout or a generic folder) and writes every image, "
                    "in this order N4-corrected (--n4), resampled to a voxel grid (--resample I J K, nibabel "
                    "order, same physical extent; masks nearest) and z-scored (--zscore), to the same relative "
                    "path under OUT, with masks and subject tables: OUT is a cohort in the same layout. Cases run "
                    "in parallel, outputs are atomic and a re-run skips finished cases (resumable); settings are "
                    "recorded in OUT/preprocess.json.\n\n"
                    "inputs:   ROOT, a cohort folder (OAI-ZIB-CM layout or a generic folder)\n"
                    "outputs:  OUT, the same cohort preprocessed (same layout, masks and tables), "
                    "OUT/preprocess.json\n"
                    "example:  kneeoa preprocess --n4 --zscore --resample 256 256 160 OAIZIB-CM/ OAIZIB-CM-n4/"
                    "   (the paper's volumes)")
    p.add_argument("root", metavar="ROOT", help="input cohort folder")
    p.add_argument("out", metavar="OUT", help="output cohort folder (created; outside ROOT)")
    p.add_argument("--n4", action="store_true", help="N4 bias-field correction (SimpleITK)")
    p.add_argument("--zscore", action="store_true", help="z-score each image (mean 0, std 1)")
    p.add_argument("--resample", nargs=3, type=int, metavar=("I", "J", "K"), default=None,
                   help="resample to this many voxels per axis (the paper: 256 256 160)")
    p.add_argument("--n4-shrink", type=int, default=4, help="fit N4 on the image shrunk by this factor (default 4)")
    p.add_argument("--n4-iterations", default="50,50,30",
                   help="N4 iterations per fitting level, comma-separated (default 50,50,30)")
    p.add_argument("--n4-convergence", type=float, default=0.001, help="N4 convergence threshold (default 0.001)")
    p.add_argument("--n4-control-points", type=int, default=4,
                   help="N4 B-spline control points per axis (default 4)")
    p.add_argument("--workers", type=int, default=1, help="cases processed in parallel (default 1)")
    p.add_argument("--overwrite", action="store_true", help="redo every case of an earlier run in OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from kneeoa.data.offline import OfflineSettings, preprocess_cohort
    from kneeoa.errors import ConfigError

    try:
        iterations = tuple(int(v) for v in args.n4_iterations.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--n4-iterations must be comma-separated integers, got {args.n4_iterations!r}") from None
    if not (args.n4 or args.zscore or args.resample):
        raise ConfigError("nothing to do: choose at least one of --n4, --zscore, --resample")
    bad = [(name, v) for name, v in (("--n4-shrink", args.n4_shrink), ("--workers", args.workers),
                                     ("--n4-control-points", args.n4_control_points)) if v < 1]
    if bad or not iterations or min(iterations) < 1 or (args.resample and min(args.resample) < 1):
        raise ConfigError(f"sizes, counts and iterations must be positive ({bad or args.resample or iterations})")
    settings = OfflineSettings(n4=args.n4, zscore=args.zscore, size=tuple(args.resample) if args.resample else None,
                               n4_shrink=args.n4_shrink, n4_iterations=iterations,
                               n4_convergence=args.n4_convergence, n4_control_points=args.n4_control_points)
    result = preprocess_cohort(args.root, args.out, settings, workers=args.workers, overwrite=args.overwrite)
    print(f"{result['written']} case(s) written, {result['skipped']} already done -> {result['out']}",
          file=sys.stderr)
    for image, message in result["failures"].items():
        print(f"kneeoa preprocess: {image}: {message}", file=sys.stderr)
    return 1 if result["failures"] else 0

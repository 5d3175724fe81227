"""`kneeoa stats`: the Dual-vs-Single statistics (McNemar, paired bootstrap, BH) over nine prediction CSVs."""

from __future__ import annotations

import argparse

DESCRIPTION = """The Dual-vs-Single paired statistics: for each backbone, Dual against Single-OA on OA accuracy and AUC
and against Single-KL on the KL metrics (18 tests for 3 backbones): McNemar for OA accuracy, paired
bootstrap otherwise, Benjamini-Hochberg over the family. Needs, per backbone, the dual file and at least
one single file.

inputs:   PREDS_DIR with <backbone>_<variant>_preds.csv (variant single_oa, single_kl, dual), as written
          by `kneeoa predict`
outputs:  --out CSV (one row per test), <out>_no_fdr.csv (the rows before the FDR step) and
          <out>_protocol.json next to it; optional --plot forest plot and --bars bar chart (PNG)
example:  kneeoa stats study/predictions --out stats.csv --plot forest.png"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats", help="Dual vs Single paired statistics over <backbone>_<variant>_preds.csv files",
        description=DESCRIPTION)
    p.add_argument("preds_dir", metavar="PREDS_DIR", help="folder with the prediction CSVs")
    p.add_argument("--out", required=True, help="output CSV (one row per test)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples B (default 10000)")
    p.add_argument("--seed", type=int, default=42, help="seed of the one generator shared by all tests (default 42)")
    p.add_argument("--plot", metavar="PNG", help="also write a forest plot (delta with 95%% CI per test)")
    p.add_argument("--bars", metavar="PNG", help="also write a bar chart of the deltas")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from kneeoa.analysis.compare import compare_dual_vs_single, write_stats_csv
    from kneeoa.errors import ConfigError, InputError
    from kneeoa.progress import emit
    from kneeoa.report.paper_figures import write_stats_extras
    from kneeoa.utils import locks

    if args.resamples < 1:
        raise ConfigError(f"--resamples must be positive, got {args.resamples}")
    _check_outputs(args)
    start = time.perf_counter()
    # one writer per table: two runs into one --out would leave one's table beside the other's protocol
    with locks.exclusive(locks.lock_path_for(args.out), args.out, "the statistics table"):
        _check_outputs(args)  # again: another run may have written them meanwhile
        result = compare_dual_vs_single(args.preds_dir, n_resamples=args.resamples, seed=args.seed)
        if not result.rows:
            raise InputError(f"no Dual-vs-Single test can run: {_missing_pairs(result.files)}", args.preds_dir)
        out = write_stats_csv(args.out, result.rows)
        write_stats_extras(args.out, result.rows, args.resamples, args.seed)  # <out>_no_fdr.csv, _protocol.json
        figures = _figures(args, result.rows)
    for line in result.skipped:
        print(f"skipped {line}")
    for row in result.rows:
        mark = "*" if row["sig_fdr_0.05"] else " "
        print(f"{row['backbone']:>9} {row['task']} {row['metric']:<5} single {row['single']:.3f} dual {row['dual']:.3f} "
              f"delta {row['delta']:+.3f} [{row['ci_lo']:+.3f}, {row['ci_hi']:+.3f}] p {row['p_value']:.4f} "
              f"q {row['q_value_BH']:.4f}{mark}")
    for row in result.rows:
        if row["n_valid_resamples"] < args.resamples:
            # e.g. a KL grade missing from a resample: macro AUC undefined there (sklearn refuses)
            print(f"note: {row['backbone']} {row['task']} {row['metric']}: metric defined on "
                  f"{row['n_valid_resamples']} of {args.resamples} resamples; CI and p use those")
    seconds = time.perf_counter() - start
    print(f"{len(result.rows)} tests, B={args.resamples}, {seconds:.1f} s -> {out}")
    emit("result", task="stats", out=str(out), n_tests=len(result.rows), skipped=result.skipped,
         figures=figures, seconds=round(seconds, 3))
    return 0


def _figures(args: argparse.Namespace, rows: list[dict]) -> dict[str, str]:
    """The optional --plot forest plot and --bars bar chart; {kind: path}."""
    figures: dict[str, str] = {}
    if args.plot or args.bars:
        from kneeoa.analysis.plots import delta_bar_chart, forest_plot, save_figure

        if args.plot:
            figures["forest"] = str(save_figure(forest_plot(rows), args.plot))
        if args.bars:
            figures["bars"] = str(save_figure(delta_bar_chart(rows), args.bars))
    return figures


def _missing_pairs(files: dict) -> str:
    """What each backbone has and lacks, e.g. 'resnet3d has dual but no single_oa or single_kl predictions'."""
    found: dict[str, list[str]] = {}
    for backbone, variant in sorted(files):
        found.setdefault(backbone, []).append(variant)
    parts = []
    for backbone, variants in found.items():
        if "dual" not in variants:
            parts.append(f"{backbone} has {', '.join(variants)} but no dual predictions ({backbone}_dual_preds.csv)")
        else:
            parts.append(f"{backbone} has dual but no single_oa or single_kl predictions "
                         f"({backbone}_single_oa_preds.csv / {backbone}_single_kl_preds.csv)")
    return "; ".join(parts) + " - each test pairs a dual file with a single file of the same backbone"


def _check_outputs(args: argparse.Namespace) -> None:
    """Outputs never replace an input prediction CSV; existing outputs only with --overwrite."""

    from kneeoa.analysis.compare import find_prediction_files
    from kneeoa.report.paper_figures import stats_extra_paths
    from kneeoa.utils.outputs import check_outputs

    outputs = [args.out, args.plot, args.bars, *stats_extra_paths(args.out).values()]
    check_outputs(outputs, find_prediction_files(args.preds_dir).values(), args.overwrite)

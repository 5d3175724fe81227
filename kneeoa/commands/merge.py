"""`kneeoa merge`: join shard score tables (each case once, natural case-id order)."""

from __future__ import annotations

import argparse

DESCRIPTION = """Join the shard tables of `kneeoa score --shard i/n` into one scores table: each case once (an ok row beats an
error row), rows in natural case-id order.

inputs:   PART.csv tables written by `kneeoa score`
outputs:  OUT.csv, the merged table (a summary line on stderr)
example:  kneeoa merge scores.csv scores_0.csv scores_1.csv"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("merge", help="join shard score tables into one CSV",
                              description=DESCRIPTION)
    p.add_argument("out", help="merged table (.csv)")
    p.add_argument("parts", nargs="+", help="shard tables written by `kneeoa score --shard`")
    p.add_argument("--overwrite", action="store_true", help="replace an existing merged table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from kneeoa.engine.merge import merge_tables

    result = merge_tables(args.out, args.parts, overwrite=args.overwrite)
    print(f"{result['out_csv']}: {result['rows']} cases ({result['duplicates']} duplicates dropped, "
          f"{result['errors']} failed)", file=sys.stderr)
    return 0

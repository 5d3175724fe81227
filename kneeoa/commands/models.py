"""`kneeoa models`: backbones x variants with parameter counts and embedding widths."""

from __future__ import annotations

import argparse

DESCRIPTION = """List every backbone x variant (Dual twice: chained and parallel heads) with its parameter count and
embedding width, built on the meta device (no memory, no weights).

inputs:   none (optionally the input shape and width to size them for)
outputs:  a table on stdout (JSON lines with --json)
example:  kneeoa models --input-shape 32 32 32 --width 8"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list backbones x variants with parameter counts",
                              description=DESCRIPTION)
    p.add_argument("--input-shape", nargs=3, type=int, metavar=("D", "H", "W"), default=None,
                   help="model input size (default: the paper's, 160 256 256; M3T 128^3). M3T needs a cube: "
                        "for a non-cube shape its row uses N = D")
    p.add_argument("--width", type=int, default=None, help="base width for every backbone (default: paper widths)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.set_defaults(func=run)


def rows(input_shape: list[int] | None = None, width: int | None = None) -> list[dict]:
    """One row per backbone x variant (Dual twice: chained and parallel), built on the meta device."""
    from kneeoa.contracts.catalog import BACKBONES
    from kneeoa.contracts.vocab import HEADS, VARIANTS
    from kneeoa.models.registry import ModelSpec, describe

    out = []
    for name, entry in BACKBONES.items():
        shape = input_shape
        if shape is not None and entry.cube:
            shape = [shape[0]] * 3
        for variant, head in [(v, HEADS[0]) for v in VARIANTS] + [("dual", h) for h in HEADS[1:]]:
            out.append(describe(ModelSpec(name, variant, head, input_shape=shape, width=width)))
    return out


def run(args: argparse.Namespace) -> int:
    import json

    table = rows(args.input_shape, args.width)
    if args.json:
        for row in table:
            print(json.dumps(row))
        return 0
    header = ["backbone", "variant", "head", "input (D,H,W)", "width", "params", "embedding"]
    lines = [[r["backbone"], r["variant"], r["head"], "x".join(map(str, r["input_shape"])), str(r["width"]),
              f"{r['params']:,}", str(r["embedding_dim"])] for r in table]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    right = {4, 5, 6}
    for line in [header, ["-" * w for w in widths], *lines]:
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))))
    return 0

"""The `kneeoa` command. Each subcommand lives in `kneeoa/commands/<name>.py` and exposes
`add_parser(subparsers)` which registers itself with `set_defaults(func=run)`; `run(args) -> int`.
Command modules import only argparse at module level, so `kneeoa --help` is instant."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from kneeoa import __version__
from kneeoa.errors import KneeOAError

# order = order in `kneeoa --help`
COMMANDS = [
    "models",
    "phantom",
    "preprocess",
    "train",
    "predict",
    "score",
    "merge",
    "grade",
    "import_paper_checkpoint",
    "stats",
    "latent",
    "saliency",
    "train_seg",
    "segment",
    "evaluate_seg",
    "study",
    "demo",
    "wheelhouse",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kneeoa", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"kneeoa {__version__}")
    parser.add_argument("--progress", choices=["bar", "json", "none"], default=None,
                        help="progress display (default: bar on a terminal); json = machine-readable lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"kneeoa.commands.{name}").add_parser(sub)
    return parser


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one plain line for users (no source file and line of the library)."""
    return f"kneeoa: warning: {message}\n"


_OUT_OF_MEMORY = ("kneeoa {command}: error: out of memory: the job needs more memory than this machine has "
                  "(or than its limit allows)")


def _is_allocation_error(err: RuntimeError) -> bool:
    """torch's CPU allocator reports a failed allocation as RuntimeError, not MemoryError."""
    text = str(err)
    return "can't allocate memory" in text or "not enough memory" in text or "std::bad_alloc" in text


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.progress:
        os.environ["KNEEOA_PROGRESS"] = args.progress
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KneeOAError as err:
        print(f"kneeoa {args.command}: error: {err}", file=sys.stderr)
        return 1
    except MemoryError:
        print(_OUT_OF_MEMORY.format(command=args.command), file=sys.stderr)
        return 1
    except RuntimeError as err:
        if not _is_allocation_error(err):
            raise
        print(_OUT_OF_MEMORY.format(command=args.command), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kneeoa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

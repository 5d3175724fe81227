"""The `kneeoa` command. Each subcommand lives in `kneeoa/commands/<name>.py` and exposes
`add_parser(subparsers)` which registers itself with `set_defaults(func=run)`; `run(args) -> int`.
Command modules import only argparse at module level, so `kneeoa --help` is instant (tested: no torch).

Every subcommand's help says what it does, its inputs, its outputs and one example (`inputs:`,
`outputs:`, `example:` lines in its description; Testing/tests/test_cli_help.py checks every command
listed here). Every command that computes gets `--threads N` from here (kneeoa/threads.py).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings

from kneeoa import __version__
from kneeoa.contracts.catalog import PLUGINS_ENV, load_plugins
from kneeoa.errors import KneeOAError
from kneeoa.progress import MODE_ENV, one_line
from kneeoa.progress import MODES as PROGRESS_MODES
from kneeoa.progress import mode as progress_mode
from kneeoa.threads import configure_threads

# modules in kneeoa/commands/, in `kneeoa --help` order (a module's command may use dashes: import-paper-checkpoint)
COMMANDS = [
    "models",
    "phantom",
    "preprocess",
    "train",
    "predict",
    "score",
    "merge",
    "grade",
    "calibrate",
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
# commands that only read and write tables or list names: no thread pools to size
NO_THREADS = {"models", "merge", "wheelhouse"}
# long jobs say how many threads they use even when no one watches a terminal (a log then tells why it was slow);
# short ones only on a terminal, so a script's stderr keeps just the result or the one error line
LONG_COMMANDS = {"train", "study", "demo"}

DESCRIPTION = """KneeOA: knee osteoarthritis from 3D MRI - OA (yes/no) and Kellgren-Lawrence grade (0-4).

Train the three backbones (ResNet3D, M3T, nnMamba) with Single-OA, Single-KL or Dual-head supervision,
evaluate and compare them (paired statistics, latent geometry, saliency over the cartilage), grade or
batch-score volumes, and write one HTML report. Runs on a laptop CPU (the phantom demo) or GPU servers."""

EPILOG = """examples:
  kneeoa demo                                  phantom cohort -> quick 3x3 study -> demo_run/study/report.html
  kneeoa phantom cohort --train 20 --test 10   a synthetic cohort in the OAI-ZIB-CM layout
  kneeoa grade knee.nii.gz --checkpoint Resources/demo_model.safetensors --result-json knee.json
  kneeoa COMMAND --help                        what a command does, reads and writes, with an example

Every computing command takes --threads N (default: half the CPU cores; printed when it starts)."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keep the descriptions' line breaks; add '(default: X)' to an option's help unless it says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """The one `--threads` option every computing command shares."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch/numpy (default: $KNEEOA_THREADS, $OMP_NUM_THREADS, else half "
                             "the cores, at least 1: a busy machine then slows a job down by its share instead of "
                             "stalling it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kneeoa", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"kneeoa {__version__}")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default=None,
                        help="progress display (default: bar on a terminal; off a terminal, lines for demo, study "
                             "and train, else none); json = machine-readable lines; lines = one line per step")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        before = set(sub.choices)
        importlib.import_module(f"kneeoa.commands.{module}").add_parser(sub)
        for name in [n for n in sub.choices if n not in before]:  # e.g. import-paper-checkpoint (+ aliases)
            command = sub.choices[name]
            command.formatter_class = HelpFormatter
            if name not in NO_THREADS and "--threads" not in command._option_string_actions:
                add_threads_option(command)
    return parser


def command_names() -> list[str]:
    """Every subcommand as typed on the command line, in `kneeoa --help` order."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(action.choices)


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as one plain line for users (no source file and line of the library)."""
    return f"kneeoa: warning: {one_line(message)}\n"


_OS_HINTS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
             errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "the file name is too long",
             errno.EFBIG: "the file is larger than this system allows (a file size limit, or the disk is full)"}


def describe_os_error(err: OSError) -> str:
    """`<file>: <what happened> (<strerror>)` for an OSError raised by the environment."""
    where = err.filename if err.filename is not None else "(file unknown)"
    hint = _OS_HINTS.get(err.errno or -1)
    detail = err.strerror or str(err)
    return f"{where}: {hint} ({detail})" if hint else f"{where}: {detail}"


_OUT_OF_MEMORY = ("kneeoa {command}: error: out of memory: the job needs more memory than this machine has "
                  "(or than its limit allows)")


def _is_allocation_error(err: RuntimeError) -> bool:
    """torch's CPU allocator reports a failed allocation as RuntimeError, not MemoryError."""
    text = str(err)
    return "can't allocate memory" in text or "not enough memory" in text or "std::bad_alloc" in text


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _format_warning
    try:  # backbones added from outside (README "Contributing"): registered before the parser lists them
        load_plugins()
    except Exception as err:  # a plugin that fails to import: one line, not a traceback
        print(f"kneeoa: error: cannot import a {PLUGINS_ENV} module: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.progress:
        os.environ[MODE_ENV] = args.progress
    elif not os.environ.get(MODE_ENV) and progress_mode() == "none" and args.command in LONG_COMMANDS:
        os.environ[MODE_ENV] = "lines"  # a long job off a terminal (make demo > log) still says where it is
        try:
            return _run(parser, args)
        finally:
            os.environ.pop(MODE_ENV, None)  # main() called in-process (tests, Slicer's Python) leaves no trace
    return _run(parser, args)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if "threads" in vars(args):
            # before the command imports torch/numpy: they size their pools when they load
            configure_threads(args.threads, announce=args.command in LONG_COMMANDS or progress_mode() == "bar")
        return int(args.func(args) or 0)
    except KneeOAError as err:
        print(f"kneeoa {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:
        # the environment, not the input: read-only or full disk, a name too long, permission denied
        print(f"kneeoa {args.command}: error: {one_line(describe_os_error(err))}", file=sys.stderr)
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

"""`kneeoa wheelhouse`: download the wheels KneeOA needs inside 3D Slicer, for an offline install."""

from __future__ import annotations

import argparse

EXAMPLE = "example: kneeoa wheelhouse kneeoa-wheels --platform windows   (then copy the folder to the offline site)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from kneeoa.slicer.wheelhouse import PLATFORMS, SLICER_PYTHON

    p = subparsers.add_parser(
        "wheelhouse", help="download KneeOA's wheels for an offline Slicer install",
        description="On a machine with internet: resolve KneeOA's Python dependencies for a target Slicer (its "
                    "Python version and platform) and download their wheels into OUT, with a manifest "
                    "(kneeoa-wheelhouse.json, sha256 of each wheel). torch is left out: it comes from Slicer's "
                    "PyTorch extension. In Slicer, answer the dependency prompt with 'Install from a folder...' "
                    "and pick OUT.\n\n"
                    "inputs:   the target Slicer's Python version and platform (and an index or wheel folder)\n"
                    "outputs:  OUT/*.whl and OUT/kneeoa-wheelhouse.json (sha256 of each wheel)",
        epilog=EXAMPLE)
    p.add_argument("out", help="folder to write the wheels and kneeoa-wheelhouse.json into")
    p.add_argument("--python-version", default=SLICER_PYTHON, help="the target Slicer's Python (5.10/5.12: 3.12)")
    p.add_argument("--platform", default="linux", choices=sorted(PLATFORMS), help="the target Slicer's platform")
    p.add_argument("--index-url", default=None, help="package index to use instead of PyPI (a site mirror)")
    p.add_argument("--find-links", default=None, help="also look for wheels in this folder or URL")
    p.add_argument("--no-index", action="store_true", help="use only --find-links, no index")
    p.add_argument("--requirement", action="append", default=None, metavar="REQ",
                   help="download these requirements instead of KneeOA's own (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from kneeoa.errors import InputError
    from kneeoa.slicer.wheelhouse import build

    index_args = []
    if args.index_url:
        index_args += ["--index-url", args.index_url]
    if args.find_links:
        index_args += ["--find-links", args.find_links]
    if args.no_index:
        index_args += ["--no-index"]
    try:
        manifest = build(args.out, args.requirement, args.python_version, args.platform, index_args)
    except RuntimeError as err:
        raise InputError(str(err).replace("\n", " | "), args.out) from None
    print(f"{args.out}: {len(manifest['wheels'])} wheels for Python {manifest['python']} on {manifest['platform']} "
          f"(torch excluded: install the PyTorch extension)", file=sys.stderr)
    return 0

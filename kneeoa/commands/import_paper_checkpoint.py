"""`kneeoa import-paper-checkpoint`: the paper's .pth state dict -> a KneeOA checkpoint giving the same outputs."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import-paper-checkpoint", help="convert a checkpoint saved by the paper's training scripts",
        description="Reads a .pth saved by the paper's code (torch.save(model.state_dict()) of ResNet3DCls, M3T or "
                    "nnMambaEncoder, DualHeadModel for Dual) with torch.load(weights_only=True), recognises the "
                    "backbone, variant and widths, and writes a KneeOA .safetensors checkpoint whose outputs equal "
                    "the paper model's. Imported M3T models keep the paper code's attention and squaring "
                    "(paper_code_quirks).\n\n"
                    "inputs:   SRC, the paper's .pth state dict\n"
                    "outputs:  DST, a KneeOA checkpoint (.safetensors with a model card)\n"
                    "example:  kneeoa import-paper-checkpoint resnet3d_dualhead_final.pth resnet3d_dual.safetensors")
    p.add_argument("src", help="the paper's .pth file")
    p.add_argument("dst", help="KneeOA checkpoint to write (.safetensors)")
    p.add_argument("--input-shape", nargs=3, type=int, metavar=("D", "H", "W"), default=None,
                   help="model input (default: the paper's, 160 256 256; M3T: its cube from the weights)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from kneeoa.models.paper_import import import_paper_checkpoint
    from kneeoa.utils.outputs import check_outputs

    check_outputs([args.dst], [args.src], args.overwrite)
    shape = tuple(args.input_shape) if args.input_shape else None
    dst, spec = import_paper_checkpoint(args.src, args.dst, input_shape=shape)
    print(f"{dst}: {spec['backbone']} {spec['variant']} width {spec['width']} input {spec['input_shape']}",
          file=sys.stderr)
    return 0

"""`kneeoa segment`: label maps (0-5 as OAI-ZIB-CM) and cartilage thickness for scans without a mask."""

from __future__ import annotations

import argparse

from kneeoa.contracts.segmentation import KNEE_SIDES
from kneeoa.contracts.vocab import DEVICES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment", help="segment femur, tibia and cartilage of an image or a folder (+ thickness)",
        description="Write a label map on the image's own grid and affine (sliding windows, Gaussian blending) "
                    "and the cartilage thickness per compartment (mm). IMAGE: --out is the label map "
                    "(.nii.gz). FOLDER: --out is a folder receiving <case_id>.nii.gz and segmentations.csv "
                    "(one row per case; resumable, shardable).\n\n"
                    "inputs:   INPUT (an image, a DICOM series folder or a cohort folder), --checkpoint (a segmenter)\n"
                    "outputs:  --out label map (.nii.gz), or a folder of <case_id>.nii.gz + segmentations.csv\n"
                    "example:  kneeoa segment scans/ --checkpoint Resources/demo_seg_model.safetensors --out segs/")
    p.add_argument("input", help="image file, DICOM series folder, or a cohort folder")
    p.add_argument("--checkpoint", required=True, help="segmenter (.safetensors from `kneeoa train-seg`)")
    p.add_argument("--out", required=True, help="label map file (one image) or output folder (folder)")
    p.add_argument("--resume", action="store_true", help="folder: skip cases already in segmentations.csv")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--shard", metavar="I/N", help="folder: segment every N-th case starting at I")
    p.add_argument("--knee-side", choices=KNEE_SIDES,
                   help="which knee (one image, or every image of a folder); decides which tibial plate is medial "
                        "from its position. Default: the cohort's kneeSideInfo.csv when there is one, else the "
                        "network's own medial/lateral labels")
    p.add_argument("--result-json", metavar="FILE", help="one image: also write its row (thickness, time, card) as JSON")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto = CUDA, then MPS, else CPU")
    p.set_defaults(func=run)


def _is_single(path: str) -> bool:
    from pathlib import Path

    from kneeoa.data.folder import _is_dicom_folder

    p = Path(path)
    return p.is_file() or (p.is_dir() and _is_dicom_folder(p))


def _all_sides(args: argparse.Namespace) -> dict | None:
    """--knee-side for every case of the folder, or None (= the cohort's own table)."""
    if args.knee_side is None:
        return None
    from kneeoa.contracts.case_ids import case_id_from_name
    from kneeoa.engine.score import list_cases

    return {case_id_from_name(cid): args.knee_side for cid, _ in list_cases(args.input)}


def run(args: argparse.Namespace) -> int:
    import sys

    from kneeoa.contracts.segmentation import thickness_columns
    from kneeoa.segmentation.folder import segment_file, segment_folder

    if _is_single(args.input):
        row = segment_file(args.input, args.checkpoint, args.out, device=args.device, overwrite=args.overwrite,
                           result_json=args.result_json, knee_side=args.knee_side)
        thick = " ".join(f"{c.removesuffix('_mm')}={row[c]:.2f}" for c in thickness_columns())
        print(f"{row['seg_path']}: {row['seconds']:.1f} s; thickness mm {thick}", file=sys.stderr)
        return 0
    result = segment_folder(args.input, args.checkpoint, args.out, resume=args.resume, overwrite=args.overwrite,
                            shard=args.shard, device=args.device, knee_sides=_all_sides(args))
    print(f"{result['table']}: {result['segmented']} segmented, {result['errors']} failed, "
          f"{result['skipped']} already done", file=sys.stderr)
    return 0

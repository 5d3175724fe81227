"""`kneeoa grade`: one volume -> OA/KL probabilities (+ saliency NIfTI, cartilage overlap) as a JSON result.

This is what the KneeOAGrading Slicer module runs in a background process with `--progress json`:
progress lines on stdout, then a `result` event, and the same payload written to --result-json.
"""

from __future__ import annotations

import argparse

from kneeoa.contracts.segmentation import KNEE_SIDES
from kneeoa.contracts.vocab import DEVICES, SALIENCY_METHODS

DESCRIPTION = """Grade one knee MRI volume with a checkpoint: OA probability, KL probabilities, the hierarchy-
consistent decision, optionally a saliency map and its overlap with a cartilage mask. This is what the
KneeOAGrading Slicer module runs in a background process (with --progress json).

inputs:   IMAGE (NIfTI, NRRD, MHA or a DICOM series folder), --checkpoint, optional --mask
outputs:  --result-json (the result as JSON), optional --saliency-out (.nii.gz on the image grid)
example:  kneeoa grade knee_0000.nii.gz --checkpoint Resources/demo_model.safetensors --result-json knee.json"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("grade", help="grade one volume (probabilities, saliency, overlap) -> JSON",
                              description=DESCRIPTION)
    p.add_argument("image", help="image (NIfTI, NRRD, MHA or a DICOM series folder)")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors)")
    p.add_argument("--mask", help="cartilage mask on the image grid (OAI-ZIB-CM labels) -> overlap metrics")
    p.add_argument("--segmenter", help="segmenter (.safetensors from `kneeoa train-seg`): without --mask, segment the "
                                       "image and use that automatic mask (result: mask_source, thickness)")
    p.add_argument("--knee-side", choices=KNEE_SIDES, help="with --segmenter: which knee (medial/lateral plates)")
    p.add_argument("--segmentation-out", help="with --segmenter: write the automatic label map here (.nii.gz)")
    p.add_argument("--saliency-out", help="write the saliency map here (.nii.gz, image grid)")
    p.add_argument("--saliency-method", default=SALIENCY_METHODS[0], choices=SALIENCY_METHODS,
                   help="attribution method")
    p.add_argument("--target", default="auto", help="auto, kl, oa or a KL grade 0-4")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto = CUDA, then MPS, else CPU")
    p.add_argument("--result-json", required=True, help="result file (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --result-json / --saliency-out")
    from kneeoa.commands.trust_args import add_trust_arguments

    add_trust_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kneeoa.commands.trust_args import trust_options
    from kneeoa.engine.grade import grade_volume
    from kneeoa.progress import Progress, emit
    from kneeoa.utils import strict_json
    from kneeoa.utils.atomic import atomic_write_text
    from kneeoa.utils.outputs import check_outputs

    result_path = Path(args.result_json)
    check_outputs([result_path, args.saliency_out, args.segmentation_out],
                  [args.image, args.mask, args.checkpoint, args.segmenter], args.overwrite)
    auto = args.segmenter is not None and args.mask is None
    has_mask = bool(args.mask) or auto
    steps = 3 + bool(args.saliency_out or has_mask) + has_mask + auto
    with Progress("grade", total=steps, unit="step") as bar:
        def step(message: str) -> None:
            bar.update(1, stage=message)

        result = grade_volume(args.image, args.checkpoint, mask_path=args.mask, saliency_path=args.saliency_out,
                              saliency_method=args.saliency_method, target=args.target, device=args.device,
                              step=step, trust=trust_options(args), segmenter=args.segmenter,
                              knee_side=args.knee_side, segmentation_out=args.segmentation_out, overwrite=True)
    atomic_write_text(result_path, strict_json.dumps(result, indent=2) + "\n")
    emit("result", **result)
    return 0

"""Grade one volume: the engine behind `kneeoa grade`, `score_volume` and the KneeOAGrading Slicer module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from kneeoa.contracts.trust import TRUST_KEY, TrustOptions
from kneeoa.errors import JobError
from kneeoa.utils.outputs import check_outputs
from kneeoa.utils.strict_json import finite_or_none


def grade_volume(image_path: str | Path, checkpoint: str | Path, mask_path: str | Path | None = None,
                 saliency_path: str | Path | None = None, saliency_method: str = "smoothgrad",
                 target: str = "auto", device: str = "auto",
                 step: Callable[[str], None] | None = None, trust: TrustOptions | None = None,
                 segmenter: str | Path | None = None, knee_side: str | None = None,
                 segmentation_out: str | Path | None = None, overwrite: bool = False) -> dict:
    """Probabilities + decisions for one volume; saliency written when asked; overlap when a mask is given.
    Existing saliency/segmentation outputs are replaced only with `overwrite` (`check_outputs`).

    Keys: kl_probs (list[5]|None), oa_prob, oa_prob_from_kl, pred_kl, pred_oa, consistent_kl, heads_agree,
    saliency_path, saliency_target, overlap, card, image_path, device, and `trust` (calibrated probabilities,
    the KL/OA sets, OOD score/p-value/flag, acquisition warnings; None for an uncalibrated checkpoint); with a
    mask (given, or made by `segmenter` when none is given): mask_source ('reference'/'automatic') and the
    cartilage thickness per compartment.
    """
    from kneeoa.data.preprocess import preprocess_volume
    from kneeoa.data.volume import read_volume, write_nifti
    from kneeoa.engine.devices import oom_guard, resolve_device
    from kneeoa.engine.inference import (
        NONFINITE_OUTPUT,
        batch_outputs,
        finite_rows,
        input_shape_of,
        load_model,
        predictions,
        reorient_of,
    )

    say = step or (lambda _msg: None)
    check_outputs([saliency_path, segmentation_out], [image_path, mask_path, checkpoint, segmenter], overwrite)
    say("loading model")
    dev = resolve_device(device)
    model, card = load_model(checkpoint, dev)
    shape = input_shape_of(model, card)
    say("reading image")
    image = read_volume(image_path)
    from kneeoa.segmentation.auto import AUTOMATIC, MaskSource

    if mask_path is None and segmenter is not None:
        say("segmenting")
    mask, mask_source = MaskSource(segmenter, dev).mask_for(image, mask_path, knee_side=knee_side)
    if mask_source == AUTOMATIC and segmentation_out is not None:
        write_nifti(segmentation_out, mask, image.affine, is_label=True)
    from kneeoa.trust.predict import load_trust_predictor

    trusted = load_trust_predictor(checkpoint, card, trust)
    warnings_, features = trusted.inspect(image.array, image.affine) if trusted is not None else ([], None)
    say("predicting")
    from kneeoa.engine.feed import model_dtype

    # on the model's device: on CUDA the z-score and resize run on the GPU (kneeoa.data.resample)
    x = preprocess_volume(image, shape, device=dev, dtype=model_dtype(model), reorient=reorient_of(model))[None]
    with oom_guard(dev, "grading"):
        out = batch_outputs(model, x)
    if not finite_rows(out)[0]:
        raise JobError(f"{NONFINITE_OUTPUT} (checkpoint {checkpoint})", image_path)
    result: dict[str, Any] = {"image_path": str(image_path), **predictions(out)[0].to_result(),
                              "card": card, "device": str(dev)}
    result["mask_source"], result["thickness"] = mask_source, None
    if mask is not None:
        from kneeoa.segmentation.thickness import compartment_thickness

        result["thickness"] = compartment_thickness(mask, image.spacing_mm)
    result[TRUST_KEY] = trusted(out["kl_probs"], out["oa_prob"], out["embedding"], [warnings_],
                                features[None])[0] if trusted else None
    if saliency_path is not None or mask is not None:
        from kneeoa.analysis.saliency import explain
        from kneeoa.engine.memory import saliency_batch_for

        say(f"saliency ({saliency_method})")
        batch = saliency_batch_for(dev, card)  # fitted to the free GPU memory before it can run out
        result["saliency_batch"] = batch
        with oom_guard(dev, "saliency"):
            smap = explain(model, image, method=saliency_method, target=target, input_shape=shape,
                           batch_size=batch, inputs=x)  # the input the prediction used: preprocessed once
        result["saliency_target"] = {"head": smap.head, "index": int(smap.index)}
        if saliency_path is not None:
            write_nifti(saliency_path, smap.volume.array, smap.volume.affine)
            result["saliency_path"] = str(saliency_path)
        if mask is not None:
            from kneeoa.analysis.overlap import saliency_overlap

            say("cartilage overlap")
            result["overlap"] = saliency_overlap(smap.volume.array, mask, source=mask_path)
    return finite_or_none(result)  # numpy values -> plain Python, NaN/inf -> None (strict JSON)

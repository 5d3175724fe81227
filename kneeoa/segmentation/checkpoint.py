"""Segmenter checkpoints: the engine's safetensors + model-card format (no pickle), with card kind "segmenter".

The card says everything inference needs: the network (arch, width), labels, training spacing (null =
the image's own), patch size and sliding-window overlap; plus training data and test metrics.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from kneeoa.contracts.segmentation import SEG_CARD_KIND, SEGMENT_TITLES
from kneeoa.contracts.vocab import LABELS
from kneeoa.errors import CheckpointError, ConfigError


def segmenter_card(cfg: dict, training_data: str = "", metrics: dict | None = None) -> dict:
    """The card of a segmenter trained with config `cfg`."""
    from kneeoa import __version__

    return {
        "kind": SEG_CARD_KIND,
        "spec": {"arch": cfg["arch"], "width": int(cfg["width"]), "in_channels": 1, "out_channels": len(LABELS)},
        "labels": {str(k): v for k, v in LABELS.items()},
        "titles": {str(k): v for k, v in SEGMENT_TITLES.items()},
        # the spacing every scan is resampled to: the preset's, else the training images' median (nnU-Net's rule)
        "preprocessing": {"spacing_mm": cfg.get("model_spacing_mm", cfg["spacing_mm"]), "zscore": "per volume", "axis_order": "NIfTI (i, j, k)",
                          "resample": "trilinear image / probabilities, back to the image grid before argmax"},
        "patch": list(cfg["patch"]),
        "sliding_window": {"overlap": float(cfg["sw_overlap"]), "mode": "gaussian",
                           "batch_size": int(cfg["sw_batch_size"])},
        "training_data": training_data,
        "training": {k: cfg[k] for k in ("preset", "epochs", "lr", "batch_size", "samples_per_volume",
                                          "class_ratios", "seed", "amp")},
        "metrics": metrics or {},
        "kneeoa_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_segmenter(path: str | Path, model: Any, card: dict) -> Path:
    """Weights + card, atomically (same layout as grading checkpoints, so `read_card` reads both)."""
    from safetensors.torch import save_file

    from kneeoa.contracts.checkpoint_meta import CARD_KEY
    from kneeoa.utils import strict_json
    from kneeoa.utils.atomic import atomic_path

    try:
        text = strict_json.dumps(card)  # an HD95 of inf (a label never found) becomes null, not bare Infinity
    except (TypeError, ValueError) as err:
        raise ConfigError(f"the segmenter card is not JSON-serialisable: {err}", path) from None
    # clone: DynUNet's state dict names some weights twice (its skip-layer tree shares modules), and
    # safetensors refuses tensors that share memory
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={CARD_KEY: text, "format": "pt"})
    return path


def is_segmenter(card: dict) -> bool:
    return card.get("kind") == SEG_CARD_KIND


def read_segmenter_card(path: str | Path) -> dict:
    """The card, or CheckpointError when the file is a grading model (or no KneeOA checkpoint at all)."""
    from kneeoa.contracts.checkpoint_meta import read_card

    card = read_card(path)
    if not is_segmenter(card):
        raise CheckpointError("this is a grading checkpoint, not a segmenter (train one with `kneeoa train-seg`)",
                              path)
    return card


def load_segmenter(path: str | Path, device: Any = "cpu") -> tuple[Any, dict]:
    """(network in eval mode on `device`, card); weights loaded strictly (the grading models' loader: a
    corrupt file or mismatching keys/shapes are a CheckpointError naming them)."""
    from kneeoa.models.checkpoint import load_weights
    from kneeoa.segmentation.model import build_segmenter

    path = Path(path)
    card = read_segmenter_card(path)
    model = load_weights(build_segmenter(card["spec"]["arch"], card["spec"]["width"]), path)
    return model.to(device).eval(), card

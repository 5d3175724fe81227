"""Every enumerated name in KneeOA, defined once (standard library only)."""

from __future__ import annotations

# --- supervision variants and heads (SPEC 2) -------------------------------------------------------------
VARIANTS = ("single-oa", "single-kl", "dual")  # CLI/config spelling
HEADS = ("chained", "parallel")  # dual-head topology: chained = the paper's (OA head on the KL logits)
KL_HEADS = ("softmax", "corn")  # KL head: plain softmax or the ordinal CORN head (ours)
VARIANT_LABELS = {"single-oa": "Single-OA", "single-kl": "Single-KL", "dual": "Dual"}
# the output heads a variant's model has (not the dual topology above): "kl" = the 5-way KL head, "oa" = an
# OA head (a Single-KL model's OA probability is p2+p3+p4 of its KL head)
VARIANT_HEADS = {"single-oa": ("oa",), "single-kl": ("kl",), "dual": ("kl", "oa")}


def has_kl_head(variant: str | None) -> bool:
    """Whether a model of this variant (CLI spelling) has a KL head; False for an unknown variant."""
    return "kl" in VARIANT_HEADS.get(variant or "", ())


def has_oa_head(variant: str | None) -> bool:
    """Whether a model of this variant (CLI spelling) has an OA head; False for an unknown variant."""
    return "oa" in VARIANT_HEADS.get(variant or "", ())


def variant_tag(variant: str) -> str:
    """'single-oa' -> 'single_oa': the spelling of file and model names (`<backbone>_<variant>_preds.csv`)."""
    return variant.replace("-", "_")


def variant_from_tag(tag: str) -> str:
    """'single_oa' -> 'single-oa' (inverse of `variant_tag`); ValueError for an unknown tag."""
    variant = tag.replace("_", "-")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {tag!r} (known: {', '.join(VARIANTS)})")
    return variant


VARIANT_TAGS = tuple(variant_tag(v) for v in VARIANTS)


def model_name(backbone: str, variant: str) -> str:
    """'resnet3d', 'single-kl' -> 'resnet3d_single_kl': the name runs, predictions and latent tables use.

    Hyphens in the backbone become underscores too ('resnet3d-monai' -> 'resnet3d_monai_dual')."""
    return f"{backbone.replace('-', '_')}_{variant_tag(variant)}"


# --- cohorts ---------------------------------------------------------------------------------------------
SPLITS = ("train", "test", "unlabelled")  # the split of a cohort case

def split_model_name(name: str) -> tuple[str, str]:
    """'resnet3d_monai_single_kl' -> ('resnet3d_monai', 'single_kl'): inverse of `model_name` (tags as written);
    ValueError when the name does not end in a variant tag."""
    for tag in sorted(VARIANT_TAGS, key=len, reverse=True):
        if name.endswith("_" + tag) and len(name) > len(tag) + 1:
            return name[: -len(tag) - 1], tag
    raise ValueError(f"{name!r} is not <backbone>_<variant> (variant one of {', '.join(VARIANT_TAGS)})")


# --- execution ------------------------------------------------------------------------------------------
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("none", "bf16", "fp16")
PRESETS = ("quick", "paper")  # the bundled presets (a .yaml path is accepted too)
# how M3T's 2D ResNet-18 starts: random (none) or torchvision's ImageNet weights (imagenet, the paper's code)
M3T_PRETRAINED = ("none", "imagenet")
# the model's voxel order: "ras" = reoriented to RAS first (KneeOA), "none" = the file's own voxel order as
# nibabel reads it (the paper's code: get_fdata() then permute(2, 0, 1)); equal for RAS-stored files
REORIENT = ("ras", "none")

# --- saliency (SPEC 6) ----------------------------------------------------------------------------------
# smoothgrad = the paper's SmoothGrad of grad x (noisy) input; grad = SmoothGrad of the plain gradient (the
# paper's "grad" mode); smoothgrad_clean_input = averaged gradient x clean input (KneeOA 0.1)
SALIENCY_METHODS = ("smoothgrad", "grad", "smoothgrad_clean_input", "integrated_gradients", "saliency", "gradcam",
                    "occlusion")
# SmoothGrad-family method -> what each noisy copy's gradient is multiplied by before averaging
SMOOTHGRAD_PRODUCTS = {"smoothgrad": "noisy", "grad": "none", "smoothgrad_clean_input": "clean"}
SALIENCY_NONE = "none"  # "no saliency map" where a front end offers the choice
SALIENCY_TARGETS = ("auto", "kl", "oa")  # auto = the KL head when the model has one, else OA
SALIENCY_BOTH = "both"  # saliency jobs on a Dual model: the KL-target and the OA-target map in one run

# --- OAI-ZIB-CM mask labels (SPEC 3) --------------------------------------------------------------------
LABELS = {0: "background", 1: "femur", 2: "femoral_cartilage", 3: "tibia", 4: "medial_tibial_cartilage",
          5: "lateral_tibial_cartilage"}
LABEL_OF = {name: value for value, name in LABELS.items()}
MASK_LABELS = tuple(LABELS)  # every value a mask may hold
CARTILAGE_LABELS = (2, 4, 5)  # default overlap ROI (the paper's code used (2, 4): no lateral tibial)
# cartilage compartments for the per-compartment overlap and thickness: name -> mask labels
COMPARTMENTS = {"femoral": (2,), "medial_tibial": (4,), "lateral_tibial": (5,)}
COMPARTMENT_NAMES = {"femoral": "femoral cartilage", "medial_tibial": "medial tibial cartilage",
                     "lateral_tibial": "lateral tibial cartilage"}

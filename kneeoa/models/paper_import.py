"""Convert the paper's `.pth` state dicts (jukieCheung/coarse2fine-oa-mri) into KneeOA models.

The paper's scripts save `torch.save(model.state_dict())` of ResNet3DCls (MedicalNet), M3T or
nnMambaEncoder, wrapped in `DualHeadModel` (keys `backbone.*` + `binary_head.*`) for the Dual variant.
Files are read by `kneeoa.models.state_files.read_state_dict` (`torch.load(weights_only=True)`: tensors
and plain containers only, no code runs).
Backbone, variant and widths are recognised from the keys and shapes; every tensor is renamed (and for
M3T's plane embeddings stacked) onto the KneeOA model, which is then loaded strictly, so a file that
does not fit is refused with the keys that differ.

Imported M3T models set `paper_code_quirks` (features squared, attention scaled after the softmax) and
every import sets `reorient: none` (the paper's loader fed nibabel's raw voxel order, permuted to
(k, i, j)): the imported model gives the paper model's outputs on the same files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from kneeoa.errors import CheckpointError
from kneeoa.models.state_files import read_state_dict


def detect_backbone(state: dict[str, torch.Tensor]) -> str:
    """'resnet3d' | 'm3t' | 'nnmamba' from the key names, else CheckpointError."""
    keys = {k.removeprefix("backbone.") for k in state}
    if "mamba_layer_stem.mamba.A_log" in keys:
        return "nnmamba"
    if "1.CNN_2D.conv1.weight" in keys:
        return "m3t"
    if "layer4.0.conv1.weight" in keys and "fc.weight" in keys:
        return "resnet3d"
    raise CheckpointError("not one of the paper's models (ResNet3DCls, M3T, nnMambaEncoder): "
                          f"keys start {sorted(keys)[:4]}")


_HEAD_KEY = {"resnet3d": "fc", "m3t": "4.linear", "nnmamba": "mlp.3"}


def _m3t_key(key: str) -> str | None:
    rules = [(r"^0\.conv1\.", "cnn3d.0."), (r"^0\.bn1\.", "cnn3d.1."), (r"^0\.conv2\.", "cnn3d.3."),
             (r"^0\.bn2\.", "cnn3d.4."), (r"^1\.CNN_2D\.", "cnn2d."), (r"^1\.non_linear_proj\.", "proj."),
             (r"^2\.cls_token$", "cls_token"), (r"^2\.sep_token$", "sep_token"),
             (r"^3\.(\d+)\.0\.fn\.0\.", r"blocks.\1.norm1."), (r"^3\.(\d+)\.0\.fn\.1\.qkv\.", r"blocks.\1.attn.qkv."),
             (r"^3\.(\d+)\.0\.fn\.1\.projection\.", r"blocks.\1.attn.proj."),
             (r"^3\.(\d+)\.1\.fn\.0\.", r"blocks.\1.norm2."), (r"^3\.(\d+)\.1\.fn\.1\.", r"blocks.\1.mlp.")]
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    return None


def _backbone_key(backbone: str, key: str) -> str | None:
    if backbone == "m3t":
        return _m3t_key(key)
    if backbone == "nnmamba":
        return re.sub(r"^in_conv\.conv\.", "in_conv.", key)
    return key


def convert_paper_state(state: dict[str, torch.Tensor], input_shape: tuple[int, int, int] | None = None,
                        ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(ModelSpec dict, KneeOA state dict) for a paper state dict; `input_shape` None = the paper's."""
    backbone = detect_backbone(state)
    dual = "binary_head.weight" in state
    net = {k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("binary_head.")}
    head = _HEAD_KEY[backbone]
    if f"{head}.weight" not in net:
        raise CheckpointError(f"the {backbone} state dict has no classification layer {head}")
    n_out = int(net[f"{head}.weight"].shape[0])
    if dual and n_out != 5:
        raise CheckpointError(f"a Dual model needs 5 KL logits before binary_head, found {n_out}")
    if not dual and n_out not in (1, 5):
        raise CheckpointError(f"expected 1 (Single-OA) or 5 (Single-KL) outputs, found {n_out}")
    variant = "dual" if dual else ("single-kl" if n_out == 5 else "single-oa")
    out: dict[str, torch.Tensor] = {}
    options: dict[str, Any] = {}
    if backbone == "m3t":
        width = int(net["1.CNN_2D.conv1.weight"].shape[0])
        c3d, d = int(net["0.conv1.weight"].shape[0]), int(net["2.cls_token"].shape[-1])
        cube = (int(net["2.positions"].shape[0]) - 4) // 3
        options = {"paper_code_quirks": True, "depth": len({k.split(".")[1] for k in net if k.startswith("3.")})}
        if c3d != max(1, width // 4):
            options["c3d"] = c3d
        if d != 2 * width:
            options["d_model"] = d
        input_shape = (cube, cube, cube)
        out["backbone.plane_embed"] = torch.cat([net.pop(f"2.{p}_plane") for p in ("coronal", "sagittal", "axial")])
        out["backbone.pos_embed"] = net.pop("2.positions")[None]
    elif backbone == "nnmamba":
        width = int(net["in_conv.conv.0.weight"].shape[0])
    else:
        width = int(net["conv1.weight"].shape[0])
    kl_or_oa = "heads.oa_head" if variant == "single-oa" else "heads.kl_head"
    unknown = []
    for key, value in net.items():
        if key.startswith(f"{head}."):
            out[f"{kl_or_oa}.{key[len(head) + 1:]}"] = value
            continue
        mapped = _backbone_key(backbone, key)
        if mapped is None:
            unknown.append(key)
        else:
            out[f"backbone.{mapped}"] = value
    if unknown:
        raise CheckpointError(f"unexpected keys for the paper's {backbone}: {', '.join(unknown[:6])}")
    if dual:
        out["heads.oa_head.weight"] = state["binary_head.weight"]
        out["heads.oa_head.bias"] = state["binary_head.bias"]
    spec = {"backbone": backbone, "variant": variant, "head": "chained",
            "input_shape": list(input_shape) if input_shape else None, "width": width, "options": options,
            "reorient": "none"}  # the paper's loader: nibabel's voxel order, permute(2, 0, 1)
    return spec, out


def import_paper_checkpoint(src: str | Path, dst: str | Path, input_shape: tuple[int, int, int] | None = None,
                            ) -> tuple[Path, dict[str, Any]]:
    """Read a paper `.pth`, build the matching KneeOA model, load it strictly and save a KneeOA checkpoint."""
    from kneeoa.models.checkpoint import save_checkpoint
    from kneeoa.models.registry import ModelSpec, build_model

    spec_dict, state = convert_paper_state(read_state_dict(src, "paper checkpoint"), input_shape)
    spec = ModelSpec.from_dict(spec_dict)
    model = build_model(spec)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    bad = [k for k in set(state) & set(expected) if state[k].shape != expected[k].shape]
    if missing or unexpected or bad:
        raise CheckpointError(f"converted weights do not fit {spec.backbone}/{spec.variant}: missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]}, shape mismatch {sorted(bad)[:4]}", src)
    model.load_state_dict(state, strict=True)
    card = {"training_data": f"imported from the paper's checkpoint {Path(src).name}",
            "source": {"paper_checkpoint": str(Path(src).resolve()), "paper_code": "jukieCheung/coarse2fine-oa-mri"}}
    return save_checkpoint(dst, model.eval(), card), spec.to_dict()

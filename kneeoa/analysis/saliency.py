"""Saliency maps on the original image grid: the paper's SmoothGrad x input (batched) and captum methods.

The paper (SPEC.md section 6, `InputSaliency3D` in its code): 8 noisy copies x_i of the z-scored input
(noise std 0.05); each copy's gradient of the target logit is multiplied by *that noisy copy*, the
products are averaged, |.|, min-max to [0, 1], then trilinear resampling back to the original NIfTI grid,
saved with the image affine. Methods of that family (`SMOOTHGRAD_PRODUCTS`):
- `smoothgrad`: mean_i(grad_i * x_i), the paper's "grad*input" (default);
- `grad`: mean_i(grad_i), the paper's "grad" mode (SmoothGrad of the plain gradient);
- `smoothgrad_clean_input`: mean_i(grad_i) * x, KneeOA's earlier product (differs from the paper's by
  mean_i(grad_i * noise_i): up to ~0.01 on the 0-1 scale on the demo model, more on sharper models).
The paper's code ran the 8 copies one by one; here they go through the model as one batch (or a few
when `batch_size` is smaller). In eval mode every sample is independent of the others, so the map is
the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from kneeoa.contracts.vocab import SALIENCY_METHODS, SALIENCY_TARGETS, SMOOTHGRAD_PRODUCTS
from kneeoa.errors import ConfigError, InputError

if TYPE_CHECKING:
    from kneeoa.data.volume import Volume


class SaliencyMap(NamedTuple):
    """A saliency Volume in [0, 1] on the image grid and the logit it explains (head 'kl'|'oa', index)."""

    volume: Volume
    head: str
    index: int


def compute_saliency(model: torch.nn.Module, volume: Volume, method: str = "smoothgrad",
                     target: str | int = "auto", input_shape: tuple[int, int, int] | None = None,
                     n_samples: int = 8, noise_std: float = 0.05, batch_size: int | None = None,
                     seed: int = 0) -> Volume:
    """Saliency of `target` for `volume`, as a Volume in [0, 1] on the image's own grid and affine."""
    return explain(model, volume, method, target, input_shape, n_samples, noise_std, batch_size, seed).volume


def explain(model: torch.nn.Module, volume: Volume, method: str = "smoothgrad", target: str | int = "auto",
            input_shape: tuple[int, int, int] | None = None, n_samples: int = 8, noise_std: float = 0.05,
            batch_size: int | None = None, seed: int = 0, inputs: torch.Tensor | None = None) -> SaliencyMap:
    """Like `compute_saliency`, also saying which logit was explained (what 'auto' resolved to).

    `inputs`: the model input already made from `volume` (1, 1, D, H, W) on the model's device, when the
    caller has it (grading predicts first), so the volume is not preprocessed a second time."""
    from kneeoa.analysis.saliency_methods import captum_attribution
    from kneeoa.data.preprocess import preprocess_volume
    from kneeoa.data.volume import Volume
    from kneeoa.engine.inference import reorient_of
    from kneeoa.models.wrappers import ScalarTarget

    check_options(method, target, n_samples, noise_std, batch_size)
    _check_volume(volume)
    shape = tuple(int(s) for s in (input_shape or model.spec.input_shape))
    device = _model_device(model)
    was_training = model.training
    model.eval()  # BatchNorm running stats, dropout off: the samples of a batch stay independent
    try:
        x = inputs if inputs is not None else \
            preprocess_volume(volume, shape, device=device, reorient=reorient_of(model))[None]  # on the device
        head, index = resolve_target(model, x, target)
        forward = ScalarTarget(model, head=head)
        if method in SMOOTHGRAD_PRODUCTS:
            raw = smoothgrad_x_input(forward, x, index, n_samples, noise_std, batch_size, seed,
                                     product=SMOOTHGRAD_PRODUCTS[method])
        else:
            raw = captum_attribution(method, model, forward, x, index, n_samples, batch_size)
    finally:
        model.train(was_training)
    array_ijk = model_to_image_grid(normalise_01(raw.detach()), volume, reorient_of(model))
    return SaliencyMap(Volume(array_ijk, np.asarray(volume.affine, dtype=np.float64), path=None), head, index)


def check_options(method: str, target: str | int, n_samples: int, noise_std: float,
                  batch_size: int | None) -> None:
    """Raise ConfigError for an unknown method/target or a non-positive sample count, noise or batch size."""
    if method not in SALIENCY_METHODS:
        raise ConfigError(f"unknown saliency method {method!r}; choose one of {', '.join(SALIENCY_METHODS)}")
    if not _is_kl_class(target) and target not in SALIENCY_TARGETS:
        raise ConfigError(f"unknown saliency target {target!r}; use auto, kl, oa or a KL grade 0-4")
    if int(n_samples) < 1:
        raise ConfigError(f"n_samples must be at least 1, got {n_samples}")
    if not float(noise_std) >= 0:
        raise ConfigError(f"noise_std must be >= 0, got {noise_std}")
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")


def resolve_target(model: torch.nn.Module, x: torch.Tensor, target: str | int) -> tuple[str, int]:
    """(head, logit index) for `target` on input `x` (1,1,D,H,W): 'auto' = argmax KL if the model has KL logits, else OA."""
    with torch.no_grad():
        out = model(x)
    if target == "auto":
        target = "kl" if out.kl_logits is not None else "oa"
    if _is_kl_class(target):
        grade = int(target)
        if not 0 <= grade <= 4:
            raise ConfigError(f"KL target must be a grade 0-4, got {grade}")
        if out.kl_logits is None:
            raise ConfigError(f"target KL grade {grade} needs a model with a KL head; this one predicts OA only")
        return "kl", grade
    if target == "kl":
        if out.kl_logits is None:
            raise ConfigError("target 'kl' needs a model with a KL head; this one predicts OA only (use 'oa')")
        return "kl", int(out.kl_logits[0].argmax())
    if out.oa_logits is None:
        raise ConfigError("target 'oa' needs a model with an OA head; this one predicts KL only (use 'kl')")
    # the paper: logit[0] of a 1-logit OA head, logit[1] (OA present) of a 2-logit head
    return "oa", int(out.oa_logits.shape[1]) - 1


def smoothgrad_noise(x: torch.Tensor, n_samples: int, noise_std: float, seed: int = 0) -> torch.Tensor:
    """The (n_samples, C, D, H, W) Gaussian noise for SmoothGrad, drawn on the CPU so every device gets the same."""
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((int(n_samples), *x.shape[1:]), generator=gen, dtype=torch.float32) * float(noise_std)
    return noise.to(device=x.device, dtype=x.dtype)


def _product(grad: torch.Tensor, noisy: torch.Tensor, product: str) -> torch.Tensor:
    """A sample's gradient times its noisy input ('noisy', the paper's), as is ('none'), or summed for 'clean'."""
    return grad * noisy.detach() if product == "noisy" else grad


def _finish(total: torch.Tensor, x: torch.Tensor, n_samples: int, product: str) -> torch.Tensor:
    mean = total / int(n_samples)
    return (mean * x[0] if product == "clean" else mean).abs()[0]


def smoothgrad_x_input(forward: Any, x: torch.Tensor, index: int, n_samples: int = 8, noise_std: float = 0.05,
                       batch_size: int | None = None, seed: int = 0, product: str = "noisy") -> torch.Tensor:
    """|mean over noisy copies x_i of grad_i * x_i| (the paper's), as (D, H, W); copies run as batches.

    `product`: 'noisy' = grad_i * x_i (the paper's), 'none' = grad_i alone, 'clean' = mean(grad_i) * x.
    """
    if product not in ("noisy", "none", "clean"):
        raise ConfigError(f"unknown SmoothGrad product {product!r}")
    noise = smoothgrad_noise(x, n_samples, noise_std, seed)
    step = int(batch_size or n_samples)
    total = torch.zeros_like(x[0])
    for start in range(0, int(n_samples), step):
        noisy = (x + noise[start:start + step]).detach().requires_grad_(True)
        # samples are independent in eval mode, so the gradient of the summed logits is each sample's gradient
        logits = forward(noisy)[:, index]
        (grad,) = torch.autograd.grad(logits.sum(), noisy)
        total += _product(grad, noisy, product).sum(dim=0)
    return _finish(total, x, n_samples, product)


def smoothgrad_sequential(forward: Any, x: torch.Tensor, index: int, n_samples: int = 8,
                          noise_std: float = 0.05, seed: int = 0, product: str = "noisy") -> torch.Tensor:
    """Reference: the paper's one-copy-at-a-time loop (same noise as `smoothgrad_x_input`), for tests and benchmarks."""
    noise = smoothgrad_noise(x, n_samples, noise_std, seed)
    total = torch.zeros_like(x[0])
    for i in range(int(n_samples)):
        noisy = (x + noise[i:i + 1]).detach().requires_grad_(True)
        logit = forward(noisy)[0, index]
        (grad,) = torch.autograd.grad(logit, noisy)
        total += _product(grad, noisy, product)[0]
    return _finish(total, x, n_samples, product)


def normalise_01(saliency: torch.Tensor) -> torch.Tensor:
    """|saliency| min-max scaled to [0, 1]; a constant map becomes all zeros (nothing stands out)."""
    s = saliency.abs().to(torch.float32)
    lo, hi = s.min(), s.max()
    if not torch.isfinite(hi) or float(hi - lo) <= 1e-12:
        return torch.zeros_like(s)
    return (s - lo) / (hi - lo)


def model_to_image_grid(saliency_dhw: torch.Tensor, volume: Volume, reorient: str = "ras") -> np.ndarray:
    """A model-space (D,H,W) map -> the image's own (i,j,k) grid: undo resize, permutation and RAS reorientation."""
    from kneeoa.data.preprocess import model_map_to_volume

    out = model_map_to_volume(saliency_dhw.detach(), volume, reorient)  # resampled on the model's device
    # trilinear weights are convex, so [0, 1] holds up to rounding; clip that rounding away
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def _is_kl_class(target: Any) -> bool:
    if isinstance(target, bool):
        return False
    if isinstance(target, (int, np.integer)):
        return True
    return isinstance(target, str) and target.strip().lstrip("-").isdigit()


def _check_volume(volume: Volume) -> None:
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise InputError(f"saliency needs a 3-D image, got shape {array.shape}", volume.path)
    if not np.isfinite(array).all():
        raise InputError("image contains NaN or infinite values", volume.path)


def _model_device(model: torch.nn.Module) -> torch.device:
    for param in model.parameters():
        return param.device
    return torch.device("cpu")

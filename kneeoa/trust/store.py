"""Trust statistics inside a checkpoint: tensors under the `trust.` prefix, a `trust` block in the card.

Temperatures, the conformal calibration knees' raw probabilities and labels, and the OOD mean, precision
and held-out distances are tensors (exact float64, no JSON round trip); the card's `trust` block says what
they were fitted on and holds the small acquisition envelope. Model loading skips the `trust.` tensors.
Keeping the calibration knees' probabilities (not a q) lets grading use any alpha and method.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts import trust as names
from kneeoa.contracts.vocab import has_oa_head
from kneeoa.trust.calibration import Temperatures
from kneeoa.trust.ood import OODModel


@dataclass
class TrustStats:
    """Everything grading needs to report calibrated probabilities, sets and an OOD flag."""

    temperatures: Temperatures
    has_oa_head: bool
    cal_kl_probs: np.ndarray | None  # (n, 5) raw, of the conformal calibration knees
    cal_oa_prob: np.ndarray  # (n,) raw
    cal_kl: np.ndarray  # (n,) recorded KL grades
    ood: OODModel | None = None
    image_ood: OODModel | None = None  # Mahalanobis on kneeoa.trust.envelope.image_features
    envelope: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # the card block (what it was fitted on)

    def tensors(self) -> dict[str, Any]:
        import torch

        def t(a: np.ndarray, dtype: Any = torch.float64) -> Any:
            return torch.as_tensor(np.ascontiguousarray(a)).to(dtype)

        out = {names.T_TEMPERATURE: t(np.array([self.temperatures.kl, self.temperatures.oa])),
               names.T_CAL_OA_PROB: t(self.cal_oa_prob), names.T_CAL_KL: t(self.cal_kl, torch.int64)}
        if self.cal_kl_probs is not None:
            out[names.T_CAL_KL_PROBS] = t(self.cal_kl_probs)
        if self.ood is not None:
            out.update({names.T_OOD_MEAN: t(self.ood.mean), names.T_OOD_PRECISION: t(self.ood.precision),
                        names.T_OOD_HELDOUT: t(self.ood.heldout)})
        if self.image_ood is not None:
            out.update({names.T_IMG_MEAN: t(self.image_ood.mean), names.T_IMG_PRECISION: t(self.image_ood.precision),
                        names.T_IMG_HELDOUT: t(self.image_ood.heldout)})
        return out

    def card_block(self) -> dict[str, Any]:
        return {**self.info, "temperature": {"kl": self.temperatures.kl, "oa": self.temperatures.oa},
                "n_conformal": int(len(self.cal_kl)), "envelope": self.envelope,
                "ood": None if self.ood is None else {"embedding_dim": int(len(self.ood.mean)),
                                                      "n_heldout": int(len(self.ood.heldout)),
                                                      **self.info.get("ood", {})}}


def read_trust(path: str | Path, card: dict | None = None) -> TrustStats | None:
    """The trust statistics of a checkpoint, None when it was never calibrated."""
    from safetensors import safe_open

    from kneeoa.models.checkpoint import read_card

    card = read_card(path) if card is None else card
    block = card.get(names.TRUST_KEY)
    if not block:
        return None
    with safe_open(str(path), framework="np") as fh:
        keys = set(fh.keys())

        def get(key: str) -> np.ndarray | None:
            return fh.get_tensor(key) if key in keys else None

        temps = get(names.T_TEMPERATURE)
        mean, precision, heldout = get(names.T_OOD_MEAN), get(names.T_OOD_PRECISION), get(names.T_OOD_HELDOUT)
        img = [get(names.T_IMG_MEAN), get(names.T_IMG_PRECISION), get(names.T_IMG_HELDOUT)]
        stats = TrustStats(
            temperatures=Temperatures(kl=float(temps[0]), oa=float(temps[1])) if temps is not None else Temperatures(),
            has_oa_head=has_oa_head((card.get("spec") or {}).get("variant")), cal_kl_probs=get(names.T_CAL_KL_PROBS),
            cal_oa_prob=get(names.T_CAL_OA_PROB), cal_kl=get(names.T_CAL_KL),
            ood=None if mean is None else OODModel(mean=mean, precision=precision, heldout=heldout),
            image_ood=None if img[0] is None else OODModel(mean=img[0], precision=img[1], heldout=img[2]),
            envelope=block.get("envelope") or {},
            info={k: v for k, v in block.items() if k not in ("temperature", "envelope", "ood", "n_conformal")})
    return stats


def write_trusted_checkpoint(source: str | Path, out: str | Path, stats: TrustStats,
                             card_extra: dict | None = None) -> Path:
    """A NEW checkpoint: the source's weights and card plus the trust tensors and card block (atomic)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from kneeoa.models.checkpoint import CARD_KEY, read_card
    from kneeoa.utils.atomic import atomic_path

    card = read_card(source)
    with safe_open(str(source), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if not k.startswith(names.TENSOR_PREFIX)}
    tensors.update(stats.tensors())
    card = {**card, **(card_extra or {}), names.TRUST_KEY: stats.card_block()}
    out = Path(out)
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={CARD_KEY: json.dumps(card), "format": "pt"})
    return out

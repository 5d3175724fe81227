"""`Prediction`: what a model says about one knee, and its three written forms (standard library only).

  to_result()       the JSON of `kneeoa grade --result-json` (what the Slicer module stores and reads)
  to_pred_row()     the model columns of the published per-subject predictions CSV (`kneeoa predict`)
  to_score_row()    the model columns of the scores table (`kneeoa score`)

Decisions (pred_oa, pred_kl, consistent_kl, heads_agree) are computed once, batched, by
`kneeoa.engine.inference.decisions`; `kneeoa.engine.inference.predictions()` turns a batch into
`Prediction`s. Values are plain Python (float, int, bool), so every writer formats them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kneeoa.contracts.schemas import PRED_KL_PROB_COLUMNS, SCORE_KL_PROB_COLUMNS


@dataclass(frozen=True)
class Prediction:
    """One knee. KL fields are None for a model without a KL head (Single-OA)."""

    oa_prob: float  # P(OA): the OA head, or p2 + p3 + p4 for Single-KL
    pred_oa: int  # 1 iff oa_prob >= 0.5
    kl_probs: tuple[float, ...] | None = None  # P(KL = 0..4)
    oa_prob_from_kl: float | None = None  # p2 + p3 + p4 of the KL head
    pred_kl: int | None = None  # argmax of kl_probs
    consistent_kl: int | None = None  # the most likely grade on the OA head's side of KL 2
    heads_agree: bool | None = None  # OA from pred_kl == pred_oa
    embedding: tuple[float, ...] | None = None
    saliency_path: str | None = None
    saliency_target: dict[str, Any] | None = None  # {"head": "kl"|"oa", "index": int}
    overlap: dict[str, Any] | None = None  # kneeoa.analysis.overlap metrics

    @property
    def has_kl(self) -> bool:
        return self.kl_probs is not None

    def to_result(self) -> dict[str, Any]:
        """The grade-result JSON keys (embedding left out: it is large and nothing reads it there)."""
        return {"kl_probs": None if self.kl_probs is None else list(self.kl_probs), "oa_prob": self.oa_prob,
                "oa_prob_from_kl": self.oa_prob_from_kl, "pred_kl": self.pred_kl, "pred_oa": self.pred_oa,
                "consistent_kl": self.consistent_kl, "heads_agree": self.heads_agree,
                "saliency_path": self.saliency_path, "saliency_target": self.saliency_target,
                "overlap": self.overlap}

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> Prediction:
        """Read a grade-result JSON back (missing keys: None; unknown keys such as `card` are ignored)."""
        probs = result.get("kl_probs")
        oa_prob = result.get("oa_prob")
        return cls(oa_prob=float("nan") if oa_prob is None else float(oa_prob),
                   pred_oa=result.get("pred_oa"), kl_probs=None if probs is None else tuple(probs),
                   oa_prob_from_kl=result.get("oa_prob_from_kl"), pred_kl=result.get("pred_kl"),
                   consistent_kl=result.get("consistent_kl"), heads_agree=result.get("heads_agree"),
                   saliency_path=result.get("saliency_path"), saliency_target=result.get("saliency_target"),
                   overlap=result.get("overlap"))

    def to_pred_row(self) -> dict[str, Any]:
        """prob_oa, pred_oa (+ pred_kl, prob_oa_from_kl, prob_kl_0..4 with a KL head) of the predictions CSV."""
        row: dict[str, Any] = {"prob_oa": self.oa_prob, "pred_oa": self.pred_oa}
        if self.kl_probs is not None:
            row["pred_kl"] = self.pred_kl
            row["prob_oa_from_kl"] = self.oa_prob_from_kl
            row.update(zip(PRED_KL_PROB_COLUMNS, self.kl_probs))
        return row

    def to_score_row(self) -> dict[str, Any]:
        """oa_prob, pred_oa (+ kl_prob_0..4, pred_kl, consistent_kl, heads_agree) of the scores table."""
        row: dict[str, Any] = {"oa_prob": self.oa_prob, "pred_oa": self.pred_oa}
        if self.kl_probs is not None:
            row.update(zip(SCORE_KL_PROB_COLUMNS, self.kl_probs))
            row.update(pred_kl=self.pred_kl, consistent_kl=self.consistent_kl, heads_agree=self.heads_agree)
        return row

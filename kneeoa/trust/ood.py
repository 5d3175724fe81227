"""Out-of-distribution score: Mahalanobis distance of an embedding to the training knees, with a p-value.

The training embeddings give a mean and a Ledoit-Wolf shrinkage covariance (scikit-learn; Lee et al. 2018
use the Mahalanobis distance on network features). A knee's score is its distance; its conformal p-value
is (1 + #{held-out in-distribution knees at least as far}) / (m + 1), so flagging at p <= alpha flags at
most a fraction alpha of new in-distribution knees on average (exchangeability, as for the sets). The
arrays are stored as tensors in the checkpoint (kneeoa.trust.store).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kneeoa.contracts.trust import DEFAULT_OOD_ALPHA


@dataclass(frozen=True)
class OODModel:
    mean: np.ndarray  # (E,)
    precision: np.ndarray  # (E, E)
    heldout: np.ndarray  # (m,) distances of in-distribution knees the fit did not see

    def distance(self, embedding: np.ndarray) -> np.ndarray:
        """(n, E) or (E,) -> (n,) Mahalanobis distances."""
        x = np.atleast_2d(np.asarray(embedding, dtype=np.float64)) - self.mean[None, :]
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", x, self.precision, x), 0.0))

    def p_value(self, distance: np.ndarray) -> np.ndarray:
        """Conformal p-value of each distance against the held-out distances (1 when none are stored)."""
        return conformal_p_value(distance, self.heldout)

    def flag(self, distance: np.ndarray, alpha: float = DEFAULT_OOD_ALPHA) -> np.ndarray:
        return self.p_value(distance) <= float(alpha)


def conformal_p_value(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(1 + #{reference scores >= score}) / (m + 1) per score: 1 when the reference is empty."""
    d = np.atleast_1d(np.asarray(scores, dtype=np.float64))
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    if len(ref) == 0:
        return np.ones_like(d)
    at_least = len(ref) - np.searchsorted(ref, d, side="left")
    return (1.0 + at_least) / (len(ref) + 1.0)


def fit_ood(train_embeddings: np.ndarray, heldout_embeddings: np.ndarray | None = None) -> OODModel:
    """Mean + Ledoit-Wolf precision of the training embeddings; held-out distances for the p-values.

    Without held-out knees the training knees' own distances are the reference: those are smaller than new
    knees' distances, so the p-values are too small and flags more frequent than alpha (the card says so).
    """
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train_embeddings, dtype=np.float64)
    lw = LedoitWolf().fit(train)
    model = OODModel(mean=lw.location_.copy(), precision=lw.precision_.copy(), heldout=np.zeros(0))
    ref = train if heldout_embeddings is None or len(heldout_embeddings) == 0 else heldout_embeddings
    return OODModel(mean=model.mean, precision=model.precision, heldout=model.distance(ref))  # in knee order


def combined_score(distances: list[np.ndarray], dims: list[int]) -> np.ndarray:
    """One score from several detectors: the largest distance in units of sqrt(dimension) (the typical
    Mahalanobis distance of a d-dimensional in-distribution point). The scale does not depend on any data,
    so the p-value of the combined score against the same knees' combined scores stays a conformal one."""
    return np.max([np.asarray(d, dtype=np.float64) / np.sqrt(k) for d, k in zip(distances, dims)], axis=0)

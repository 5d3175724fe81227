"""MAPIE as the split-conformal reference: an adapter that lets it conformalize probabilities the network
already produced (used by benchmarks/bench_trust.py and Testing/tests/test_trust_core.py)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class Probabilities(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose features are already its probabilities (the network ran before)."""

    def fit(self, X, y=None):
        self.classes_ = np.arange(X.shape[1])
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X):
        return np.asarray(X)

    def predict(self, X):
        return np.asarray(X).argmax(1)

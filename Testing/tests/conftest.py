"""Shared fixtures. Keep each fixture small and named for what it provides."""

import os

# Two cores on CI: tests run single-threaded torch unless told otherwise (predictable and no oversubscription).
os.environ.setdefault("OMP_NUM_THREADS", "1")

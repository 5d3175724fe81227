"""Shared fixtures. Keep each fixture small and named for what it provides."""

import os

# Two cores on CI: tests run single-threaded torch unless told otherwise (predictable and no oversubscription).
os.environ.setdefault("OMP_NUM_THREADS", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory):
    """A tiny phantom cohort (OAI-ZIB-CM layout): 12 train + 6 test knees of 24^3 voxels, seed 0. Read-only."""
    from kneeoa.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("phantom") / "cohort"
    generate_cohort(root, 12, 6, shape=(24, 24, 24), seed=0)
    return root

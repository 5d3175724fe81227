"""Fuzz `read_volume` with random and mutated bytes: nothing but a KneeOAError may escape."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kneeoa.data.volume import Volume, read_volume, write_volume
from kneeoa.errors import KneeOAError

FORMATS = [".nii", ".nii.gz", ".nrrd", ".mha"]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> tuple:
    """Valid small files of every format, to mutate; and a scratch folder."""
    folder = tmp_path_factory.mktemp("fuzz")
    vol = Volume(np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32), np.eye(4))
    return folder, {s: write_volume(folder / f"seed{s}", vol).read_bytes() for s in FORMATS}


mutation = st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(suffix=st.sampled_from(FORMATS), random_bytes=st.none() | st.binary(max_size=600),
       flips=st.lists(mutation, max_size=6), keep=st.floats(0, 1))
def test_read_volume_raises_only_kneeoa_errors(seeds, suffix, random_bytes, flips, keep):
    folder, originals = seeds
    data = bytearray(originals[suffix] if random_bytes is None else random_bytes)
    for where, value in flips:
        if data:
            data[int(where * len(data))] = value
    if keep < 0.3:  # a third of the cases are also truncated
        data = data[: int(keep / 0.3 * len(data))]
    path = folder / f"mutant{suffix}"
    path.write_bytes(bytes(data))
    try:
        vol = read_volume(path)
    except KneeOAError as err:
        assert str(path) in str(err)
    else:
        assert vol.array.ndim == 3 and np.isfinite(vol.array).all()

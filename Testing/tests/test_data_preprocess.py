"""Preprocessing: model-space axes, RAS orientation, z-score, resize, N4, the tensor cache and the Dataset."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from test_data_helpers import oblique_affine, ramp

from kneeoa.data.cache import PreprocessCache
from kneeoa.data.cohort import Case
from kneeoa.data.dataset import CohortDataset
from kneeoa.data.offline import n4_zscore
from kneeoa.data.preprocess import (
    from_model_space,
    model_map_to_volume,
    preprocess_volume,
    to_model_space,
    zscore,
)
from kneeoa.data.volume import Volume, read_volume, write_nifti


def population_z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean()) / a.std()


@pytest.mark.parametrize("kind", [np.asarray, torch.as_tensor])
def test_model_space_is_k_i_j_and_round_trips(kind):
    a = kind(ramp((2, 3, 4)))
    m = to_model_space(a)
    assert tuple(m.shape) == (4, 2, 3)
    assert float(m[3, 1, 2]) == float(a[1, 2, 3])
    assert np.array_equal(np.asarray(from_model_space(m)), np.asarray(a))
    assert tuple(to_model_space(kind(ramp((2, 3, 4)))[None, None]).shape) == (1, 1, 4, 2, 3)


def test_preprocess_gives_zscored_float32_in_model_space():
    vol = Volume(ramp((6, 7, 8)) ** 1.5, np.eye(4))
    x = preprocess_volume(vol, (8, 6, 7))  # no resize needed: exact permutation of the z-scored array
    assert x.shape == (1, 8, 6, 7) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0].numpy(), to_model_space(population_z(vol.array)), atol=1e-5)


def test_preprocess_resizes_to_input_shape():
    x = preprocess_volume(Volume(ramp((6, 7, 8)), np.eye(4)), (16, 12, 10))
    assert x.shape == (1, 16, 12, 10)
    assert abs(float(x.mean())) < 0.1 and 0.8 < float(x.std()) < 1.2


def test_flipped_storage_of_the_same_knee_gives_the_same_tensor():
    a = ramp((6, 7, 8))
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = 5.0  # voxel i=5 of the flipped copy sits where voxel 0 of the original is
    x_ras = preprocess_volume(Volume(a, np.eye(4)), (8, 6, 7))
    x_las = preprocess_volume(Volume(a[::-1].copy(), flipped), (8, 6, 7))
    torch.testing.assert_close(x_ras, x_las)


def test_zscore_floor_keeps_constant_input_finite():
    z = zscore(torch.full((1, 4, 4, 4), 7.0))
    assert torch.isfinite(z).all() and float(z.abs().max()) == 0.0


def test_spacing_resamples_before_resize():
    from kneeoa.data.preprocess import _oriented

    vol = Volume(ramp((16, 16, 8)), np.diag([1.0, 1.0, 2.0, 1.0]))
    assert tuple(_oriented(vol, (2.0, 2.0, 2.0)).shape) == (1, 8, 8, 8)
    assert preprocess_volume(vol, (8, 8, 8), spacing_mm=(2.0, 2.0, 2.0)).shape == (1, 8, 8, 8)


@pytest.mark.parametrize("angle", [0.3, 2.0])  # 2.0 rad makes the closest RAS axes a permutation
def test_model_map_goes_back_to_the_original_grid(angle):
    vol = Volume(ramp((6, 7, 8)), oblique_affine(angle=angle))
    import nibabel.orientations as nio

    to_ras = nio.ornt_transform(nio.io_orientation(vol.affine), nio.axcodes2ornt("RAS"))
    i, j, k = nio.apply_orientation(vol.array, to_ras).shape
    x = preprocess_volume(vol, (k, i, j))
    np.testing.assert_allclose(model_map_to_volume(x[0].numpy(), vol), population_z(vol.array), atol=1e-5)


def test_n4_zscore_keeps_grid_and_reduces_a_bias_field(tmp_path):
    rng = np.random.default_rng(0)
    i = np.linspace(0, 1, 24)[:, None, None]
    tissue = np.full((24, 24, 24), 100.0)
    tissue[:, :, :4] = 5.0  # a dark background strip for the Otsu mask
    biased = tissue * (1.0 + 0.8 * i) + rng.normal(0, 1, tissue.shape)
    src = write_nifti(tmp_path / "raw.nii.gz", biased, oblique_affine())
    out = read_volume(n4_zscore(src, tmp_path / "n4.nii.gz", shrink=2))
    np.testing.assert_allclose(out.affine, read_volume(src).affine, atol=1e-6)
    assert out.shape == (24, 24, 24)
    assert abs(float(out.array.mean())) < 1e-3 and abs(float(out.array.std()) - 1) < 1e-3
    assert bias_trend(biased) > 0.4 and abs(bias_trend(out.array)) < 0.1  # measured: 0.52 -> 0.03


def bias_trend(a: np.ndarray) -> float:
    """Foreground intensity rise along i, relative to the tissue/background contrast (0 = no bias)."""
    fg, bg = a[:, :, 6:], a[:, :, :4]
    return float((fg[-4:].mean() - fg[:4].mean()) / (fg.mean() - bg.mean()))


def tiny_cases(folder, n=3):
    rng = np.random.default_rng(0)
    cases = []
    for c in range(n):
        path = write_nifti(folder / f"k{c}.nii.gz", rng.normal(size=(6, 7, 8)), np.eye(4))
        cases.append(Case(f"k{c}", path, None, None if c == 2 else c, "train"))
    return cases


def test_cache_hit_never_decodes_the_source_again(tmp_path):
    case = tiny_cases(tmp_path)[0]
    cache = PreprocessCache(tmp_path / "cache", (8, 6, 7))
    first = cache.load(case.image)
    assert (cache.hits, cache.misses) == (0, 1)
    # garbage of the same size with the same mtime: same key, and any decode would now fail
    st = case.image.stat()
    case.image.write_bytes(b"\0" * st.st_size)
    os.utime(case.image, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = PreprocessCache(tmp_path / "cache", (8, 6, 7))
    torch.testing.assert_close(again.load(case.image), first)
    assert (again.hits, again.misses) == (1, 0)


def test_cache_key_changes_with_source_and_settings(tmp_path):
    case = tiny_cases(tmp_path)[0]
    cache = PreprocessCache(tmp_path / "cache", (8, 6, 7))
    key = cache.key(case.image)
    assert PreprocessCache(tmp_path / "cache", (8, 6, 8)).key(case.image) != key
    assert PreprocessCache(tmp_path / "cache", (8, 6, 7), spacing_mm=(1, 1, 1)).key(case.image) != key
    write_nifti(case.image, np.random.default_rng(5).normal(size=(6, 7, 8)), np.eye(4))
    os.utime(case.image, ns=(1, 1))
    assert cache.key(case.image) != key


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    case = tiny_cases(tmp_path)[0]
    cache = PreprocessCache(tmp_path / "cache", (8, 6, 7))
    good = cache.load(case.image)
    cache.entry(case.image).write_bytes(b"\x93NUMPY garbage")
    torch.testing.assert_close(cache.load(case.image), good)
    assert cache.misses == 2 and cache.get(case.image) is not None


def test_float16_cache_returns_float32_close_to_exact(tmp_path):
    case = tiny_cases(tmp_path)[0]
    half = PreprocessCache(tmp_path / "c16", (8, 6, 7), dtype="float16")
    half.load(case.image)
    cached = half.get(case.image)
    assert cached.dtype == torch.float32
    torch.testing.assert_close(cached, preprocess_volume(read_volume(case.image), (8, 6, 7)), atol=5e-3, rtol=0)
    assert np.load(half.entry(case.image)).dtype == np.float16


def test_dataset_items_and_memory_cache(tmp_path):
    ds = CohortDataset(tiny_cases(tmp_path), (8, 6, 7), cache_dir=tmp_path / "cache", memory=True)
    item = ds[1]
    assert item["image"].shape == (1, 8, 6, 7) and item["image"].dtype == torch.float32
    assert (item["kl"], item["oa"], item["case_id"], item["index"]) == (1, 0, "k1", 1)
    assert (ds[2]["kl"], ds[2]["oa"]) == (-1, -1)
    ds[1]
    assert (ds.cache.hits, ds.cache.misses) == (0, 2)  # the repeat came from RAM


def test_dataset_works_with_dataloader_workers(tmp_path):
    cases = tiny_cases(tmp_path)
    ds = CohortDataset(cases, (8, 6, 7), cache_dir=tmp_path / "cache")
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert [tuple(b["image"].shape) for b in batches] == [(2, 1, 8, 6, 7), (1, 1, 8, 6, 7)]
    # the workers filled the disk cache: a fresh dataset in this process decodes nothing
    fresh = CohortDataset(cases, (8, 6, 7), cache_dir=tmp_path / "cache")
    [fresh[i] for i in range(len(fresh))]
    assert (fresh.cache.hits, fresh.cache.misses) == (3, 0)


def _papers_loader(array, size):
    """The paper's OAIZIBDataset._load_nii: z-score, permute [H,W,D] -> [D,H,W], trilinear resize."""
    import torch.nn.functional as F

    data = array.astype(np.float32)
    data = (data - data.mean()) / max(float(data.std()), 1e-6)
    vol = torch.from_numpy(data).permute(2, 0, 1)[None, None]
    return F.interpolate(vol, size=size, mode="trilinear", align_corners=False)[0]


def test_reorient_none_feeds_the_files_voxel_order_as_the_paper(tmp_path):
    rng = np.random.default_rng(3)
    array = rng.normal(100, 20, (20, 28, 18)).astype(np.float32)
    flipped = np.diag([-0.8, 0.9, -1.1, 1.0])  # L, P, I axes: RAS reorientation flips all three
    vol = read_volume(write_nifti(tmp_path / "lpi.nii.gz", array, flipped))
    paper = _papers_loader(vol.array, (12, 14, 10))
    ours_none = preprocess_volume(vol, (12, 14, 10), reorient="none")
    np.testing.assert_allclose(ours_none.numpy(), paper.numpy(), atol=1e-5)
    assert not np.allclose(preprocess_volume(vol, (12, 14, 10)).numpy(), paper.numpy(), atol=1e-3)
    ras = read_volume(write_nifti(tmp_path / "ras.nii.gz", array, np.diag([0.8, 0.9, 1.1, 1.0])))
    np.testing.assert_allclose(preprocess_volume(ras, (12, 14, 10)).numpy(), paper.numpy(), atol=1e-5)
    # and back: a model-space map lands on the voxels it came from
    k, i, j = 18, 20, 28
    x = preprocess_volume(vol, (k, i, j), reorient="none")[0]
    np.testing.assert_allclose(model_map_to_volume(x, vol, reorient="none"), population_z(vol.array), atol=1e-5)

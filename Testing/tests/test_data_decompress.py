"""Bounded gzip decoding: every backend gives gzip's bytes; a bomb, a truncated or a non-gzip file is one
InputError naming the file; NIfTI read through it equals nibabel's own reader."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from test_data_helpers import oblique_affine, ramp

from kneeoa.data.decompress import (
    BACKENDS,
    available_backends,
    decompress_gzip,
    decompress_gzip_bytes,
    default_backend,
)
from kneeoa.data.volume import read_volume, write_nifti
from kneeoa.errors import InputError

PAYLOAD = bytes(range(256)) * 4000 + b"knee" * 10000  # ~1 MB, compressible but not trivially


@pytest.fixture(params=available_backends())
def backend(request):
    return request.param


def test_zlib_is_always_there_and_the_fastest_installed_is_the_default():
    assert "zlib" in available_backends()
    assert default_backend() == available_backends()[0]
    assert list(available_backends()) == [b for b in BACKENDS if b in available_backends()]


def test_every_backend_inflates_what_gzip_wrote(tmp_path, backend):
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(PAYLOAD, compresslevel=6))
    assert decompress_gzip(path, len(PAYLOAD), backend=backend) == PAYLOAD


def test_concatenated_members_and_zero_padding_are_read_whole(tmp_path, backend):
    path = tmp_path / "multi.gz"
    path.write_bytes(gzip.compress(PAYLOAD[:1000]) + gzip.compress(PAYLOAD[1000:]) + b"\0" * 16)
    assert decompress_gzip(path, len(PAYLOAD), backend=backend) == PAYLOAD


def test_a_gzip_bomb_stops_at_the_budget_naming_the_file(tmp_path, backend):
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(b"\0" * (64 * 2**20), compresslevel=9))  # 64 MiB of zeros in ~64 KB
    assert path.stat().st_size < 2**20
    with pytest.raises(InputError, match="more than 1.0 MiB") as info:
        decompress_gzip(path, 2**20, backend=backend)
    assert info.value.path == path


def test_the_budget_counts_every_member(tmp_path, backend):
    path = tmp_path / "two.gz"
    path.write_bytes(gzip.compress(b"a" * 600) + gzip.compress(b"b" * 600))
    assert len(decompress_gzip(path, 1200, backend=backend)) == 1200
    with pytest.raises(InputError, match="more than 1199 bytes"):
        decompress_gzip(path, 1199, backend=backend)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[: len(d) // 2], "truncated or corrupt gzip.*ends early"),
    (lambda d: b"PK\x03\x04" + d[4:], "not gzip-compressed"),
    (lambda d: d[:20] + bytes(b ^ 0xFF for b in d[20:60]) + d[60:], "truncated or corrupt gzip"),
    (lambda d: d + b"garbage!", "trailing garbage"),
])
def test_damaged_files_are_one_input_error(tmp_path, backend, damage, message):
    path = tmp_path / "bad.gz"
    path.write_bytes(damage(gzip.compress(PAYLOAD)))
    with pytest.raises(InputError, match=message) as info:
        decompress_gzip(path, 10 * len(PAYLOAD), backend=backend)
    assert info.value.path == path


def test_bytes_in_memory_and_an_unknown_backend():
    data = gzip.compress(PAYLOAD)
    assert decompress_gzip_bytes(data, len(PAYLOAD)) == PAYLOAD
    with pytest.raises(ValueError, match="unknown gzip backend"):
        decompress_gzip_bytes(data, len(PAYLOAD), backend="brotli")


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz"])
def test_read_volume_equals_nibabel_on_the_same_file(tmp_path, name):
    import nibabel as nib

    path = write_nifti(tmp_path / name, ramp() * 3.5 - 7, oblique_affine())
    vol = read_volume(path)
    ref = nib.load(str(path), mmap=False)
    np.testing.assert_array_equal(vol.array, np.asarray(ref.dataobj, dtype=np.float32))
    np.testing.assert_array_equal(vol.affine, ref.affine)
    assert not isinstance(vol.array, np.memmap) and not isinstance(vol.array.base, np.memmap)


def test_scaled_int16_nifti_is_read_with_its_slope_and_intercept(tmp_path):
    import nibabel as nib

    data = (np.arange(24 * 20 * 16).reshape(24, 20, 16) % 700).astype(np.int16)
    img = nib.Nifti1Image(data, oblique_affine())
    img.header.set_slope_inter(0.5, -10.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(img, str(path))
    np.testing.assert_allclose(read_volume(path).array, data * 0.5 - 10.0)


NIFTI_VARIANTS = [  # (what, dtype, slope/inter or None, NIfTI-2, header extension, vox_offset left 0)
    ("int16", np.int16, None, False, False, True), ("int16 scaled", np.int16, (0.5, -10.0), False, False, False),
    ("uint8 scaled", np.uint8, (2.0, 1.0), False, True, False), ("big-endian int16", ">i2", None, False, False, False),
    ("float32", np.float32, None, False, True, False), ("float64", np.float64, (3.0, 0.0), False, False, False),
    ("int32 nifti2", np.int32, (0.25, 0.0), True, False, False), ("uint16 nifti2", np.uint16, None, True, True, False),
]


@pytest.mark.parametrize("what,dtype,scaling,nifti2,extension,zero_offset", NIFTI_VARIANTS,
                         ids=[v[0] for v in NIFTI_VARIANTS])
def test_nifti_gz_voxels_equal_nibabels_for_every_layout(tmp_path, what, dtype, scaling, nifti2, extension,
                                                         zero_offset):
    """The .nii.gz fast path (a view of the inflated bytes + nibabel's read scaling) gives nib.load's voxels."""
    import nibabel as nib

    data = (np.arange(20 * 18 * 14).reshape(20, 18, 14) % 200 + 3).astype(dtype)
    img = (nib.Nifti2Image if nifti2 else nib.Nifti1Image)(data, oblique_affine())
    if scaling:
        img.header.set_slope_inter(*scaling)
    if extension:
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"knee " * 7))
    raw = bytearray(img.to_bytes())
    if zero_offset:  # some writers leave vox_offset 0 in a single file: nibabel reads from 352
        raw[108:112] = np.float32(0).tobytes()
    path = tmp_path / "v.nii.gz"
    path.write_bytes(gzip.compress(bytes(raw)))
    ref = np.asarray(nib.load(str(path)).dataobj)
    stored = read_volume(path, stored_dtype=True).array
    as_float = read_volume(path).array
    np.testing.assert_array_equal(as_float, ref.astype(np.float32))
    np.testing.assert_array_equal(stored.astype(np.float64), ref.astype(np.float64))
    for array in (stored, as_float):
        assert array.flags.writeable and array.flags.f_contiguous  # a copy when needed, in NIfTI's order


def test_a_nifti_that_inflates_past_its_declared_size_is_refused(tmp_path):
    # a valid header for a 24^3 float image followed by 3 MiB more than it declares
    path = write_nifti(tmp_path / "a.nii", ramp(), oblique_affine())
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(path.read_bytes() + b"\0" * (3 * 2**20)))
    with pytest.raises(InputError, match="more than") as info:
        read_volume(bomb)
    assert info.value.path == bomb

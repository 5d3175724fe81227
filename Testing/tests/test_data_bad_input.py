"""Bad volumes: each gives one InputError naming the file and the problem, never a library traceback."""

from __future__ import annotations

import gzip
import re
import struct

import numpy as np
import pytest

from kneeoa.data.volume import Volume, read_volume, write_nifti, write_volume
from kneeoa.errors import InputError


def good_image(shape=(8, 8, 8)) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def save_raw_nifti(path, array) -> None:
    """nibabel directly, so arrays our writer refuses (2D, 4D, NaN) can still be put on disk."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def assert_input_error(path, match, **kwargs) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        read_volume(path, **kwargs)
    assert info.value.path == path
    assert str(path) in str(info.value)
    return info.value


def test_missing_file(tmp_path):
    assert_input_error(tmp_path / "nope.nii.gz", "not found")


@pytest.mark.parametrize("name", ["scan.png", "scan.txt", "scan"])
def test_unsupported_suffix(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x89PNG....")
    assert_input_error(tmp_path / name, "unsupported file type")


def test_empty_file(tmp_path):
    (tmp_path / "e.nii.gz").write_bytes(b"")
    assert_input_error(tmp_path / "e.nii.gz", "empty file")


def test_nii_gz_that_is_not_gzip(tmp_path):
    path = tmp_path / "plain.nii.gz"
    path.write_bytes(write_nifti(tmp_path / "x.nii", good_image(), np.eye(4)).read_bytes())
    assert_input_error(path, "wrong magic bytes")


def test_wrong_nifti_magic(tmp_path):
    data = bytearray(write_nifti(tmp_path / "x.nii", good_image(), np.eye(4)).read_bytes())
    data[344:348] = b"abcd"
    (tmp_path / "bad.nii").write_bytes(bytes(data))
    assert_input_error(tmp_path / "bad.nii", "not a NIfTI-1 file")


def test_random_bytes_with_nifti_suffix(tmp_path):
    (tmp_path / "noise.nii").write_bytes(np.random.default_rng(1).bytes(1000))
    assert_input_error(tmp_path / "noise.nii", "not a NIfTI file")


def test_truncated_gz(tmp_path):
    data = write_nifti(tmp_path / "x.nii.gz", good_image((16, 16, 16)), np.eye(4)).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    assert_input_error(tmp_path / "cut.nii.gz", "truncated or corrupt")


def test_truncated_uncompressed_nifti(tmp_path):
    data = write_nifti(tmp_path / "x.nii", good_image(), np.eye(4)).read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:-100])
    assert_input_error(tmp_path / "cut.nii", "truncated")


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_huge_declared_dims_in_tiny_file(tmp_path, name):
    data = bytearray(write_nifti(tmp_path / "x.nii", good_image(), np.eye(4)).read_bytes())
    data[40:56] = struct.pack("<8h", 3, 30000, 30000, 30000, 1, 1, 1, 1)
    raw = bytes(data)
    (tmp_path / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    assert_input_error(tmp_path / name, "implausibly large")


def test_declared_dims_larger_than_gz_can_hold(tmp_path):
    data = bytearray(write_nifti(tmp_path / "x.nii", good_image(), np.eye(4)).read_bytes())
    data[40:56] = struct.pack("<8h", 3, 512, 512, 512, 1, 1, 1, 1)  # 512 MiB of float32 in a ~2 kB file
    (tmp_path / "big.nii.gz").write_bytes(gzip.compress(bytes(data)))
    assert_input_error(tmp_path / "big.nii.gz", "cannot hold them")


def test_2d_image(tmp_path):
    save_raw_nifti(tmp_path / "flat.nii.gz", good_image((8, 8, 1))[..., 0])
    assert_input_error(tmp_path / "flat.nii.gz", "2D image")


def test_single_slice_volume(tmp_path):
    save_raw_nifti(tmp_path / "slice.nii.gz", good_image((8, 1, 8)))
    assert_input_error(tmp_path / "slice.nii.gz", "single slice")


def test_4d_image(tmp_path):
    save_raw_nifti(tmp_path / "fmri.nii.gz", good_image((8, 8, 8, 3)))
    assert_input_error(tmp_path / "fmri.nii.gz", r"4D image of shape \(8, 8, 8, 3\)")


def test_zero_size_image(tmp_path):
    save_raw_nifti(tmp_path / "empty.nii", np.zeros((8, 0, 8), np.float32))
    assert_input_error(tmp_path / "empty.nii", "empty image")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_image(tmp_path, bad):
    array = good_image()
    array[2, 3, 4] = bad
    save_raw_nifti(tmp_path / "nan.nii.gz", array)
    assert_input_error(tmp_path / "nan.nii.gz", "1 NaN/Inf voxels")


def test_constant_image_is_rejected_but_constant_mask_is_not(tmp_path):
    path = write_nifti(tmp_path / "c.nii.gz", np.full((8, 8, 8), 3.0), np.eye(4))
    assert_input_error(path, "constant image")
    assert read_volume(path, is_label=True).array.max() == 3


def test_mask_with_non_integer_values(tmp_path):
    path = write_nifti(tmp_path / "m.nii.gz", good_image(), np.eye(4))
    assert_input_error(path, "non-integer values", is_label=True)


NRRD_HEAD = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nendian: little\nencoding: gzip\n\n"


def test_nrrd_with_unknown_type(tmp_path):
    (tmp_path / "x.nrrd").write_bytes(NRRD_HEAD.replace(b"float", b"banana") + b"\0" * 64)
    assert_input_error(tmp_path / "x.nrrd", "unsupported NRRD type 'banana'")


def test_nrrd_with_corrupt_compressed_data(tmp_path):
    (tmp_path / "x.nrrd").write_bytes(NRRD_HEAD + b"\x1f\x8b" + b"\0" * 64)
    assert_input_error(tmp_path / "x.nrrd", "cannot read image")


def test_mha_holding_nrrd_bytes_is_not_read_as_nrrd(tmp_path):
    write_volume(tmp_path / "x.nrrd", Volume(good_image(), np.eye(4)))
    (tmp_path / "x.mha").write_bytes((tmp_path / "x.nrrd").read_bytes())
    assert_input_error(tmp_path / "x.mha", "not a MetaImage header")


@pytest.mark.parametrize("field, value, match", [
    ("NDims", "99999999999", "out of range"),  # this header crashed ITK with a segfault before our checks
    ("NDims", "7", "7 dimensions"),
    ("DimSize", "6 5", "DimSize has 2 values, expected 3"),
    ("ElementSpacing", "1 0 1", "positive"),
    ("TransformMatrix", "1 0 0 0 1 0 0 0 nan", "finite"),
    ("ElementType", "MET_BANANA", "unknown MetaImage ElementType"),
    ("ElementDataFile", "LIST", "multi-file"),
])
def test_mangled_metaimage_header(tmp_path, field, value, match):
    import SimpleITK as sitk

    path = tmp_path / "x.mha"
    sitk.WriteImage(sitk.GetImageFromArray(good_image((4, 5, 6))), str(path), useCompression=False)
    data = re.sub(rf"{field} = [^\n]*".encode(), f"{field} = {value}".encode(), path.read_bytes(), count=1)
    path.write_bytes(data)
    assert_input_error(path, match)


def test_2d_nrrd(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(good_image((8, 8, 1))[..., 0]), str(tmp_path / "x.nrrd"))
    assert_input_error(tmp_path / "x.nrrd", "2D image")


def test_truncated_mha(tmp_path):
    path = tmp_path / "x.mha"
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(good_image((16, 16, 16))), str(path), useCompression=False)
    path.write_bytes(path.read_bytes()[:-500])
    assert_input_error(path, "cannot read image|truncated: header declares")


def test_mhd_with_missing_data_file(tmp_path):
    path = tmp_path / "x.mhd"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_FLOAT\n"
                    "ElementDataFile = x.raw\n")
    assert_input_error(path, "missing")


def test_rgb_nrrd_is_not_a_scalar_volume(tmp_path):
    import SimpleITK as sitk

    rgb = sitk.GetImageFromArray(np.zeros((8, 8, 8, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    assert_input_error(tmp_path / "rgb.nrrd", "components per voxel")


def test_constant_nrrd_also_rejected(tmp_path):
    path = write_volume(tmp_path / "c.nrrd", Volume(np.ones((8, 8, 8), np.float32), np.eye(4)))
    assert_input_error(path, "constant image")

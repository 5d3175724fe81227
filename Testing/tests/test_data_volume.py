"""Volume I/O: round trips keep the (i, j, k) array and the ijk->RAS affine, for every format."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from test_data_helpers import oblique_affine, ramp, write_dicom_series

from kneeoa.data.volume import (
    Volume,
    check_labels,
    check_same_grid,
    read_volume,
    write_nifti,
    write_volume,
)
from kneeoa.errors import InputError


@pytest.mark.parametrize("name", ["img.nii", "img.nii.gz", "img.nrrd", "img.mha"])
def test_round_trip_keeps_array_and_oblique_affine(tmp_path, name):
    vol = Volume(ramp(), oblique_affine())
    path = write_volume(tmp_path / name, vol)
    back = read_volume(path)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing_mm, (0.5, 0.7, 1.2), atol=1e-6)
    assert back.path == path


def test_itk_and_nibabel_agree_on_the_same_nifti(tmp_path):
    # SimpleITK reads NIfTI too: its LPS geometry converted by us must equal nibabel's RAS affine.
    import SimpleITK as sitk

    from kneeoa.data.volume import _itk_to_array_affine

    path = write_nifti(tmp_path / "a.nii.gz", ramp(), oblique_affine())
    array, affine = _itk_to_array_affine(sitk.ReadImage(str(path)))
    np.testing.assert_allclose(affine, read_volume(path).affine, atol=1e-5)
    np.testing.assert_array_equal(array, read_volume(path).array)


def test_dicom_series_folder_reads_with_ras_affine(tmp_path):
    vol = Volume(ramp((6, 7, 5)), oblique_affine(spacing=(0.5, 0.7, 1.5)))
    write_dicom_series(tmp_path / "dcm", vol, "1.2.3.4.5.1")
    back = read_volume(tmp_path / "dcm")
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)


def test_dicom_folder_with_two_series_lists_uids_and_accepts_a_choice(tmp_path):
    vol = Volume(ramp((6, 7, 5)), oblique_affine())
    write_dicom_series(tmp_path / "dcm", vol, "1.2.3.4.5.1")
    write_dicom_series(tmp_path / "dcm", Volume(vol.array * 2, vol.affine), "1.2.3.4.5.2")
    with pytest.raises(InputError, match=r"2 DICOM series.*1\.2\.3\.4\.5\.1.*1\.2\.3\.4\.5\.2|"
                                         r"2 DICOM series.*1\.2\.3\.4\.5\.2.*1\.2\.3\.4\.5\.1"):
        read_volume(tmp_path / "dcm")
    chosen = read_volume(tmp_path / "dcm", series_uid="1.2.3.4.5.2")
    np.testing.assert_array_equal(chosen.array, vol.array * 2)


def test_folder_without_dicom_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_volume(tmp_path / "empty")


def test_write_nifti_is_byte_deterministic(tmp_path):
    a = write_nifti(tmp_path / "a.nii.gz", ramp(), oblique_affine())
    first = hashlib.sha256(a.read_bytes()).hexdigest()
    b = write_nifti(tmp_path / "b.nii.gz", ramp(), oblique_affine())
    again = write_nifti(tmp_path / "a.nii.gz", ramp(), oblique_affine())
    assert hashlib.sha256(b.read_bytes()).hexdigest() == first
    assert hashlib.sha256(again.read_bytes()).hexdigest() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "b.nii.gz"]  # no temp files left


def test_labels_are_written_uint8_and_read_as_integers(tmp_path):
    labels = (np.arange(6 * 7 * 8).reshape(6, 7, 8) % 6).astype(np.int64)
    path = write_nifti(tmp_path / "m.nii.gz", labels, np.eye(4), is_label=True)
    import nibabel as nib

    assert nib.load(str(path)).get_data_dtype() == np.uint8
    back = read_volume(path, is_label=True)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, labels)


def test_float_label_map_with_whole_numbers_reads_as_integers(tmp_path):
    labels = (np.arange(6 * 7 * 8).reshape(6, 7, 8) % 3).astype(np.float32)
    path = write_nifti(tmp_path / "m.nii.gz", labels, np.eye(4))  # stored as float32 image
    back = read_volume(path, is_label=True)
    assert back.array.dtype.kind in "ui"
    np.testing.assert_array_equal(back.array, labels.astype(int))


def test_trailing_singleton_fourth_dim_is_squeezed(tmp_path):
    import nibabel as nib

    path = tmp_path / "t.nii"
    nib.save(nib.Nifti1Image(ramp()[..., None], oblique_affine()), str(path))
    back = read_volume(path)
    assert back.array.shape == (6, 7, 8)


def test_check_same_grid_accepts_same_and_names_mask_on_mismatch(tmp_path):
    image = Volume(ramp(), oblique_affine(), tmp_path / "img.nii.gz")
    check_same_grid(image, Volume(np.zeros((6, 7, 8), np.uint8), oblique_affine(), tmp_path / "m.nii.gz"))
    with pytest.raises(InputError, match=r"m\.nii\.gz.*grid \(6, 7, 9\)"):
        check_same_grid(image, Volume(np.zeros((6, 7, 9), np.uint8), oblique_affine(), tmp_path / "m.nii.gz"))
    shifted = oblique_affine(origin=(10.0, -20.0, 31.0))
    with pytest.raises(InputError, match="affine differs"):
        check_same_grid(image, Volume(np.zeros((6, 7, 8), np.uint8), shifted, tmp_path / "m.nii.gz"))


def test_check_labels_lists_unexpected_values(tmp_path):
    mask = Volume(np.array([0, 1, 2, 7, 9] * 4, np.uint8).reshape(2, 2, 5), np.eye(4), tmp_path / "m.nii.gz")
    check_labels(mask, range(10))
    with pytest.raises(InputError, match=r"m\.nii\.gz: unexpected label values \[7, 9\]"):
        check_labels(mask, (0, 1, 2, 3, 4, 5))


def test_importing_kneeoa_data_needs_only_the_standard_library():
    import subprocess
    import sys

    code = ("import sys, kneeoa, kneeoa.data; heavy = {'numpy', 'torch', 'nibabel', 'SimpleITK', 'monai'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_constant_map_reads_when_allowed(tmp_path):
    """An all-zero saliency map is a valid derived map, though no MRI is flat."""
    import numpy as np
    import pytest

    from kneeoa.data.volume import read_volume, write_nifti
    from kneeoa.errors import InputError

    path = write_nifti(tmp_path / "zeros.nii.gz", np.zeros((4, 5, 6), np.float32), np.eye(4))
    with pytest.raises(InputError, match="constant image"):
        read_volume(path)
    assert read_volume(path, allow_constant=True).array.max() == 0

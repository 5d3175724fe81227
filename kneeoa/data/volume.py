"""Volume I/O: one axis order everywhere.

A `Volume` holds `array` in NIfTI voxel order (i, j, k) and `affine`, the 4x4 ijk->RAS matrix in mm.
NIfTI is read with nibabel (affine as stored); NRRD, MHA/MHD and DICOM series with SimpleITK, whose
LPS direction/origin is converted to RAS and whose (k, j, i) array is transposed to (i, j, k).
Every problem with a file becomes an `InputError(problem, path)`.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kneeoa.contracts.case_ids import (  # noqa: F401  (re-exported: the one definition is in contracts)
    ITK_SUFFIXES,
    NIFTI_SUFFIXES,
    VOLUME_SUFFIXES,
    volume_stem,
    volume_suffix,
)
from kneeoa.data import headers as _headers
from kneeoa.errors import InputError
from kneeoa.utils.atomic import atomic_path

# ITK's physical space is LPS; ours (NIfTI, Slicer) is RAS: flip the first two axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A 3D array in (i, j, k) voxel order with its ijk->RAS affine (mm)."""

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in mm (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (i, j, k)."""
        return tuple(int(s) for s in self.array.shape)


def read_volume(path: str | Path, is_label: bool = False, series_uid: str | None = None,
                allow_constant: bool = False, stored_dtype: bool = False) -> Volume:
    """Read a NIfTI/NRRD/MHA/MHD file or a DICOM series folder: float32 image or integer label map.

    A constant image is refused (no MRI is flat) unless `allow_constant`, which derived maps need: an
    all-zero saliency map is a valid answer ("nothing stands out"). `stored_dtype` keeps an image's voxels
    in the file's numeric type (int16 for most MRI: half the bytes to move) for a device that casts them.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if not path.is_file() and not path.is_dir():
        # a named pipe would block the reader forever, a device could stream without end
        raise InputError("not a regular file (a named pipe, socket or device?)", path)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", path)
    try:
        array, affine = _read_any(path, series_uid)
    except MemoryError:
        raise InputError("not enough memory to read this volume", path) from None
    return Volume(_checked_array(array, path, is_label, allow_constant, stored_dtype), _checked_affine(affine, path),
                  path)


def _read_any(path: Path, series_uid: str | None) -> tuple[np.ndarray, np.ndarray]:
    if path.is_dir():
        array, affine = _read_dicom_series(path, series_uid)
    else:
        suffix = volume_suffix(path)
        if suffix in NIFTI_SUFFIXES:
            array, affine = _read_nifti(path, suffix)
        elif suffix in ITK_SUFFIXES:
            array, affine = _read_itk_file(path)
        else:
            raise InputError(
                f"unsupported file type {''.join(path.suffixes) or '(no suffix)'}; expected one of "
                f"{', '.join(VOLUME_SUFFIXES)} or a DICOM series folder", path)
    return array, affine


def _read_nifti(path: Path, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    declared = _headers.check_nifti_header(path, gz=suffix == ".nii.gz")
    try:
        img, array = _load_nifti(path, suffix, declared)
        affine = np.asarray(img.affine, dtype=float)
        if array is None:
            with np.errstate(over="ignore", invalid="ignore"):  # an overflowing scl_slope is reported later
                array = np.asarray(img.dataobj)
        if isinstance(array, np.memmap) or isinstance(array.base, np.memmap):
            # the Volume must not keep the file open: one copy, no extra read() buffer
            array = np.array(array)
    except InputError:
        raise
    except Exception as err:  # nibabel/gzip/numpy raise many types for corrupt data
        raise InputError(f"cannot read NIfTI (truncated or corrupt): {type(err).__name__}: {err}", path) from None
    return array, affine


# Bytes allowed past the data the header declares (trailing padding some writers leave); a bound, not a need.
NIFTI_TRAILING_SLACK = 2**20


def _load_nifti(path: Path, suffix: str, declared_bytes: int):
    """(nibabel image, its voxels or None): the data decoded exactly as `nib.load` would, but faster.

    `.nii` is memory-mapped (array None: the caller reads `img.dataobj` and copies out of the map).
    `.nii.gz` is inflated in one bounded call by the fastest gzip backend (kneeoa.data.decompress: ISA-L
    ~2.4x zlib); nibabel parses the header from memory and the voxels are a view of the inflated bytes with
    nibabel's own read scaling (`_scaled_view`). nibabel's `dataobj` would copy them into a fresh buffer
    first: 20 ms of a 0.2 s decode for a 384x384x160 int16 knee (measured, bench_datapath).
    """
    import nibabel as nib

    if suffix != ".nii.gz":
        return nib.load(str(path), mmap="r"), None
    from kneeoa.data.decompress import decompress_gzip

    raw = decompress_gzip(path, declared_bytes + NIFTI_TRAILING_SLACK)
    if len(raw) < declared_bytes:
        raise InputError(f"truncated NIfTI: {len(raw)} bytes inflated, the header declares {declared_bytes}", path)
    is_nifti2 = raw[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")  # sizeof_hdr 540, either endian
    klass = nib.Nifti2Image if is_nifti2 else nib.Nifti1Image
    img = klass.from_bytes(raw)
    return img, _scaled_view(raw, img.dataobj)


def _scaled_view(raw: bytes, proxy) -> np.ndarray:
    """The voxels of an in-memory NIfTI as nibabel's ArrayProxy `proxy` gives them (same dtype and values,
    tested): a read-only view of `raw` at the proxy's offset (nibabel's, which fixes a 0 `vox_offset` to 352),
    dtype, shape and order, then nibabel's `apply_read_scaling` with its slope and intercept, as
    `ArrayProxy._get_scaled` does."""
    from nibabel.volumeutils import apply_read_scaling

    shape = tuple(int(n) for n in proxy.shape)
    count = int(np.prod(shape, dtype=np.int64))
    unscaled = np.frombuffer(raw, dtype=proxy.dtype, count=count, offset=int(proxy.offset))
    slope, inter = np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing scl_slope is reported later
        return apply_read_scaling(unscaled.reshape(shape, order=proxy.order), slope, inter)


def _itk_to_array_affine(image) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image -> (array (i, j, k), ijk->RAS affine)."""
    import SimpleITK as sitk

    if image.GetDimension() == 4 and image.GetSize()[3] == 1:  # trailing singleton (e.g. time) axis
        image = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    if image.GetDimension() != 3:
        raise ValueError(f"{image.GetDimension()}D image of size {tuple(image.GetSize())}, expected a 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{image.GetNumberOfComponentsPerPixel()} components per voxel (vector image)")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    array_kji = sitk.GetArrayFromImage(image)
    return np.ascontiguousarray(array_kji.transpose(2, 1, 0)), LPS_TO_RAS @ lps


def _read_itk_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    _headers.check_itk_header(path)
    try:
        image = sitk.ReadImage(str(path), imageIO=_headers.itk_image_io(path))
        return _itk_to_array_affine(image)
    except Exception as err:  # ITK raises RuntimeError with a C++ trace; keep only the gist
        raise InputError(f"cannot read image: {_short(err)}", path) from None


def list_dicom_series(folder: str | Path) -> list[str]:
    """Series instance UIDs of the DICOM files directly inside `folder`."""
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def _read_dicom_series(folder: Path, series_uid: str | None) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    try:
        uids = list_dicom_series(folder)
    except Exception as err:
        raise InputError(f"cannot scan folder for DICOM: {_short(err)}", folder) from None
    if not uids:
        raise InputError("folder holds no DICOM series (and is not a volume file)", folder)
    if series_uid is None:
        if len(uids) > 1:
            raise InputError(f"folder holds {len(uids)} DICOM series ({', '.join(uids)}); move each series into "
                             "its own folder (or pass series_uid= in Python)", folder)
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InputError(f"DICOM series {series_uid} not in folder (found {', '.join(uids)})", folder)
    try:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        image = reader.Execute()
        if image.GetDimension() == 2 or (image.GetDimension() == 3 and image.GetSize()[2] == 1):
            raise ValueError("a single slice (2D image), expected a 3D volume")
        return _itk_to_array_affine(image)
    except Exception as err:
        raise InputError(f"cannot read DICOM series {series_uid}: {_short(err)}", folder) from None


def _short(err: Exception) -> str:
    """The gist of a library error (ITK's are multi-line C++ traces)."""
    if isinstance(err, RuntimeError):
        return _headers.itk_error(err)
    return f"{type(err).__name__}: {err}"[:300]


def _checked_array(array: np.ndarray, path: Path, is_label: bool, allow_constant: bool = False,
                   stored_dtype: bool = False) -> np.ndarray:
    """Squeeze trailing singleton dims, reject non-3D/empty/NaN/constant data, set the dtype."""
    if array.dtype.fields is not None or array.dtype.kind not in "biuf":
        raise InputError(f"unsupported voxel type {array.dtype} (expected a scalar image)", path)
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        kind = "2D" if array.ndim <= 2 else f"{array.ndim}D"
        raise InputError(f"{kind} image of shape {tuple(array.shape)}, expected a 3D volume", path)
    if 0 in array.shape:
        raise InputError(f"empty image of shape {tuple(array.shape)}", path)
    if 1 in array.shape:
        raise InputError(f"a single slice of shape {tuple(array.shape)} (2D), expected a 3D volume", path)
    if is_label:
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise InputError(f"label map holds {int((~np.isfinite(array)).sum())} NaN/Inf voxels", path)
        return _writable(_as_label_array(array, path))
    source = array.dtype
    # `stored_dtype`: integers (which cannot overflow float32) and float32 stay as stored; the device casts
    keep = stored_dtype and ((source.kind in "iu" and source.itemsize <= 8) or source == np.float32)
    if not keep:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as one clear line
            array = np.asarray(array, dtype=np.float32)
    # checked AFTER the float32 cast (and nibabel's scl_slope scaling, which makes the dtype float): a float64
    # 1e300 or an int16 image scaled by 1e38 is finite on disk but inf here. Integer voxels cannot overflow
    # float32 (int64 max ~9.2e18), so only float data pays for the check, once, as before.
    if source.kind == "f" and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"image holds {bad} NaN/Inf voxels after conversion to float32 (header scaling "
                         "included)", path)
    if not allow_constant and float(array.max()) == float(array.min()):
        raise InputError(f"constant image (every voxel is {float(array.min()):g})", path)
    return _writable(array)


def _writable(array: np.ndarray) -> np.ndarray:
    """A `.nii.gz` read leaves a read-only view of the inflated bytes when no cast copied it: callers may write."""
    return array if array.flags.writeable else array.copy(order="K")  # keeps NIfTI's Fortran order


def _as_label_array(array: np.ndarray, path: Path) -> np.ndarray:
    """Integer label map: values must be whole numbers; smallest fitting integer type (uint8 usually)."""
    if array.dtype.kind == "f":
        rounded = np.rint(array)
        if not np.allclose(array, rounded, atol=1e-3):
            raise InputError("label map holds non-integer values (is this an image, not a mask?)", path)
        array = rounded
    lo, hi = float(array.min()), float(array.max())
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.asarray(array, dtype=dtype)
    raise InputError(f"label values {lo:g}..{hi:g} out of range", path)


SHEAR_TOLERANCE_DEG = 0.1  # float32 sforms are orthogonal to ~1e-5 degrees; real shear is degrees


def _checked_affine(affine: np.ndarray, path: Path) -> np.ndarray:
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError("image orientation (affine) is missing or not finite", path)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError("image orientation (affine) is singular (zero voxel size?)", path)
    shear = shear_degrees(affine)
    if shear > SHEAR_TOLERANCE_DEG:
        import warnings

        from kneeoa.errors import DataWarning

        warnings.warn(f"{path}: the affine is sheared (voxel axes {shear:.2f} degrees from perpendicular); KneeOA "
                      "uses the axis directions and voxel sizes only, so the shear is ignored (resample the image "
                      "to an orthogonal grid if it matters)", DataWarning, stacklevel=3)
    return affine


def shear_degrees(affine: np.ndarray) -> float:
    """The largest deviation from 90 degrees between two voxel axes of `affine` (0 for a rotation/scaling)."""
    axes = np.asarray(affine, dtype=float)[:3, :3]
    unit = axes / np.linalg.norm(axes, axis=0)
    cosines = np.abs(unit.T @ unit)[np.triu_indices(3, 1)]
    return float(np.degrees(np.arcsin(np.clip(cosines.max(), 0.0, 1.0))))


def write_nifti(path: str | Path, array_ijk: np.ndarray, affine: np.ndarray, is_label: bool = False) -> Path:
    """Write a 3D array (i, j, k) with its ijk->RAS affine as NIfTI, atomically and byte-deterministically.

    Labels are stored as uint8, images as float32. `.nii.gz` is gzip-compressed with mtime 0 and no
    file name in the gzip header, so the same array and affine always give the same bytes.
    """
    import nibabel as nib

    path = Path(path)
    if volume_suffix(path) not in NIFTI_SUFFIXES:
        raise ValueError(f"write_nifti needs a .nii or .nii.gz path, got {path.name}")
    array = np.asarray(array_ijk)
    if array.ndim != 3:
        raise ValueError(f"write_nifti needs a 3D array, got shape {array.shape}")
    if is_label:
        if array.dtype.kind == "f" and not np.array_equal(array, np.rint(array)):
            raise ValueError("label array holds non-integer values")
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError("label values must fit uint8 (0..255)")
        array = array.astype(np.uint8)
    else:
        array = array.astype(np.float32)
    affine = np.asarray(affine, dtype=float)
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)  # scanner space in both forms so every reader agrees
    img.set_sform(affine, code=1)
    if is_label:
        img.header.set_intent("label")
    data = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=1, mtime=0)  # nibabel's level: 6 costs ~10x the time for ~10 % less
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_volume(path: str | Path, volume: Volume, is_label: bool = False) -> Path:
    """Write a Volume as NIfTI (nibabel) or NRRD/MHA (SimpleITK, RAS affine converted to LPS), atomically."""
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return write_nifti(path, volume.array, volume.affine, is_label=is_label)
    if suffix not in (".nrrd", ".mha"):
        raise ValueError(f"write_volume writes .nii, .nii.gz, .nrrd or .mha, not {path.name}")
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(to_sitk(volume, is_label=is_label), str(tmp), useCompression=True)
    return path


def to_sitk(volume: Volume, is_label: bool = False):
    """A SimpleITK image (LPS physical space) for a Volume (RAS)."""
    import SimpleITK as sitk

    array = np.asarray(volume.array, dtype=np.uint8 if is_label else np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = LPS_TO_RAS @ np.asarray(volume.affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    image.SetOrigin([float(v) for v in lps[:3, 3]])
    return image


def check_same_grid(image: Volume, mask: Volume, atol_mm: float = 1e-3) -> None:
    """InputError (naming the mask) unless the mask has the image's shape and affine (within atol_mm)."""
    if tuple(image.array.shape) != tuple(mask.array.shape):
        raise InputError(f"mask grid {tuple(mask.array.shape)} does not match its image "
                         f"{tuple(image.array.shape)} ({image.path})", mask.path)
    diff = float(np.abs(np.asarray(image.affine) - np.asarray(mask.affine)).max())
    if diff > atol_mm:
        raise InputError(f"mask affine differs from its image's by up to {diff:.4g} mm "
                         f"(another grid or orientation; image {image.path})", mask.path)


def check_labels(mask: Volume, allowed: tuple[int, ...] | list[int] | set[int]) -> None:
    """InputError (naming the mask) if it holds label values outside `allowed`."""
    values = np.unique(np.asarray(mask.array))
    unexpected = sorted(int(v) for v in values if int(v) not in set(allowed))
    if unexpected:
        raise InputError(f"unexpected label values {unexpected} (allowed: {sorted(set(allowed))})", mask.path)

"""Header sanity checks run before a library decodes voxel data.

They turn wrong magic bytes, truncated files and "huge declared dims in a tiny file" into an
`InputError` up front, so a corrupt header never makes a reader allocate gigabytes or fail deep
inside nibabel/ITK.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

from kneeoa.errors import InputError

# 1024^3 voxels: ~45x a 384x384x160 knee MRI; anything bigger is a corrupt header, not a knee.
MAX_VOXELS = 2**30
# Byte budget of one volume in memory: the decoded data plus its float32 working copy. 4 GiB is ~20x a
# 384x384x160 int16 knee MRI (47 MB raw + 94 MB float32), so no real knee is refused, while a small file
# whose header claims more fails here, before anything is allocated. KNEEOA_MAX_VOLUME_BYTES overrides it.
DEFAULT_MAX_VOLUME_BYTES = 2**32
# NIfTI datatype code -> bits per voxel (nifti1.h); bitpix must agree, or the header lies about the data size
NIFTI_DATATYPE_BITS = {2: 8, 4: 16, 8: 32, 16: 32, 32: 64, 64: 64, 128: 24, 256: 8, 512: 16, 768: 32, 1024: 64,
                       1280: 64, 1536: 128, 1792: 128, 2048: 256, 2304: 32}
# DEFLATE cannot compress better than ~1032:1, so a compressed file declaring more raw bytes is corrupt.
MAX_DEFLATE_RATIO = 1100
NIFTI2_MAGIC = b"n+2\0\r\n\x1a\n"


def _read_head(path: Path, n: int, gz: bool) -> bytes:
    try:
        if gz:
            with open(path, "rb") as fh:
                if fh.read(2) != b"\x1f\x8b":
                    raise InputError("not gzip-compressed (wrong magic bytes for .gz)", path)
            with gzip.open(path, "rb") as fh:
                return fh.read(n)
        with open(path, "rb") as fh:
            return fh.read(n)
    except InputError:
        raise
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(f"cannot decompress (truncated or corrupt gzip): {err}", path) from None


def check_nifti_header(path: Path, gz: bool) -> int:
    """Validate a NIfTI-1/2 header: size field, magic, dims, and that the file can hold the data.

    Returns the bytes the header declares (voxel offset + data): the decoder's inflate budget."""
    head = _read_head(path, 540, gz)
    if len(head) < 348:
        raise InputError(f"truncated NIfTI: {len(head)} header bytes, expected at least 348", path)
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        raise InputError("not a NIfTI file (wrong header size field / magic bytes)", path)
    if sizeof_hdr == 540 and len(head) < 540:
        raise InputError(f"truncated NIfTI-2: {len(head)} header bytes, expected 540", path)
    # the fields come from nibabel's own header classes (endianness, NIfTI-1/2 layouts); `check=False`: a
    # corrupt header is ours to report below, in one line, before nibabel would allocate its data
    import nibabel as nib

    header = (nib.Nifti1Header if sizeof_hdr == 348 else nib.Nifti2Header)(
        head[:sizeof_hdr], endianness=endian, check=False)
    magic = header["magic"].tobytes()
    if sizeof_hdr == 348 and magic == b"ni1\0":
        raise InputError("NIfTI header of a .hdr/.img pair; convert to a single .nii/.nii.gz file", path)
    if sizeof_hdr == 348 and magic != b"n+1\0":
        raise InputError(f"not a NIfTI-1 file (magic {magic!r})", path)
    if sizeof_hdr == 540:  # nibabel splits NIfTI-2's 8-byte magic into `magic` (4 bytes) and `eol_check`
        magic += header["eol_check"].tobytes()
    if sizeof_hdr == 540 and magic != NIFTI2_MAGIC:
        raise InputError(f"not a NIfTI-2 file (magic {magic!r})", path)
    dims = [int(d) for d in header["dim"]]
    datatype, bitpix, vox_offset = int(header["datatype"]), int(header["bitpix"]), float(header["vox_offset"])
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        raise InputError(f"NIfTI header declares {ndim} dimensions (corrupt header)", path)
    shape = dims[1 : ndim + 1]
    if any(d < 0 for d in shape):
        raise InputError(f"NIfTI header declares negative dimensions {tuple(shape)}", path)
    if 0 in shape:
        raise InputError(f"empty image of shape {tuple(shape)}", path)
    if bitpix <= 0 or bitpix % 8 or not (0 <= vox_offset < 2**40):
        raise InputError(f"corrupt NIfTI header (bitpix {bitpix}, vox_offset {vox_offset})", path)
    if NIFTI_DATATYPE_BITS.get(datatype) != bitpix:
        # the reader sizes its buffer from the datatype, our budget from bitpix: they must be the same bytes
        raise InputError(f"corrupt NIfTI header: datatype {datatype} does not match bitpix {bitpix}", path)
    return _check_size(path, tuple(shape), bitpix // 8, int(vox_offset), path.stat().st_size, compressed=gz)


def _check_size(path: Path, shape: tuple[int, ...], bytes_per_voxel: int, offset: int, available: int,
                compressed: bool) -> int:
    n_voxels = 1
    for d in shape:
        n_voxels *= int(d)
    if n_voxels > MAX_VOXELS:
        raise InputError(f"header declares {n_voxels} voxels {tuple(shape)}: implausibly large "
                         "(corrupt header?)", path)
    budget = max_volume_bytes()
    in_memory = n_voxels * (bytes_per_voxel + 4)  # the decoded data and its float32 copy
    if in_memory > budget:
        raise InputError(f"header declares {tuple(shape)} voxels of {bytes_per_voxel} bytes: {in_memory} bytes in "
                         f"memory, over the {budget}-byte budget for one volume (KNEEOA_MAX_VOLUME_BYTES)", path)
    need = offset + n_voxels * bytes_per_voxel
    if compressed and need > available * MAX_DEFLATE_RATIO:
        raise InputError(f"header declares {need} bytes of data but the {available}-byte compressed file "
                         "cannot hold them (truncated or corrupt)", path)
    if not compressed and need > available:
        raise InputError(f"truncated: header declares {need} bytes, file has {available}", path)
    return need


def max_volume_bytes() -> int:
    """The byte budget for one volume in memory (KNEEOA_MAX_VOLUME_BYTES, else 4 GiB)."""
    import os

    try:
        return int(os.environ.get("KNEEOA_MAX_VOLUME_BYTES", DEFAULT_MAX_VOLUME_BYTES))
    except ValueError:
        return DEFAULT_MAX_VOLUME_BYTES


_DATA_FILE = {".mhd": re.compile(rb"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.M),
              ".nhdr": re.compile(rb"^\s*data ?file\s*:\s*(.+?)\s*$", re.M | re.I)}


def _data_bytes(path: Path) -> int:
    """Bytes available to hold voxel data: the file itself, or the data file a detached header names."""
    suffix = path.suffix.lower()
    total = path.stat().st_size
    pattern = _DATA_FILE.get(suffix)
    if pattern is None:
        return total
    with open(path, "rb") as fh:
        match = pattern.search(fh.read(65536))
    if not match or match.group(1).upper() in (b"LOCAL", b"LIST"):
        return total
    name = match.group(1).decode("utf-8", "replace").split()[0]
    data_file = path.parent / name
    if not data_file.is_file():
        raise InputError(f"data file {name!r} named in the header is missing", path)
    return data_file.stat().st_size


def itk_error(err: Exception) -> str:
    """The useful part of a (multi-line, C++-flavoured) ITK error: the ERROR line and the innermost cause."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    at = next((n for n, ln in enumerate(lines) if "ERROR" in ln), None)
    if at is None:
        return (lines[-1] if lines else type(err).__name__)[:300]
    text = re.sub(r"^(?:\w+::ERROR|ITK ERROR):\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", lines[at])
    if at + 1 < len(lines):
        text += " " + re.sub(r"^\[\w+\]\s*", "", lines[-1])
    return text[:300]


def itk_image_io(path: Path) -> str:
    """The ITK reader for a suffix: never let ITK probe formats (a .mha holding NRRD bytes stays an error)."""
    return "MetaImageIO" if path.suffix.lower() in (".mha", ".mhd") else "NrrdImageIO"


def check_itk_header(path: Path) -> None:
    """Validate an NRRD/MHA/MHD header with ITK: readable, 3D (or 4D with one volume), plausible size."""
    import SimpleITK as sitk

    from kneeoa.data import text_headers

    if path.suffix.lower() in (".mha", ".mhd"):
        compressed = text_headers.check_metaimage(path)
    else:
        compressed = text_headers.check_nrrd(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(itk_image_io(path))
    try:
        reader.ReadImageInformation()
    except Exception as err:
        raise InputError(f"not a readable image header: {itk_error(err)}", path) from None
    size = tuple(int(s) for s in reader.GetSize())
    dim = len(size)
    if dim == 4 and size[3] == 1:
        dim = 3
    if dim != 3:
        raise InputError(f"{dim}D image of size {size}, expected a 3D volume", path)
    n_comp = int(reader.GetNumberOfComponents())
    if n_comp != 1:
        raise InputError(f"{n_comp} components per voxel (vector/RGB image), expected a scalar volume", path)
    bits = re.match(r"(\d+)-bit", sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    bytes_per_voxel = max(1, int(bits.group(1)) // 8) if bits else 8
    # raw data must be all there (a raw file claiming a gigabyte is refused before ITK allocates it); gzip
    # NRRD and CompressedData MetaImages get the deflate bound, and the byte budget caps both
    _check_size(path, size, bytes_per_voxel, 0, _data_bytes(path), compressed=compressed)


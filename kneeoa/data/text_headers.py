"""Strict checks of MetaImage (.mha/.mhd) and NRRD (.nrrd/.nhdr) text headers, in Python.

Why: ITK's readers trust their headers; fuzzing showed a mangled MetaImage header (`NDims = 9999...`)
crashes the whole process with a segmentation fault inside ITK, which no `try` can catch. So a
header must pass these checks before ITK sees the file, and ITK is then told which reader to use
(otherwise it probes every format and a `.mha` holding NRRD bytes goes to the NRRD reader).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from kneeoa.errors import InputError

MAX_HEADER_BYTES = 65536
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_PRINTABLE = re.compile(r"^[\x20-\x7e\t]*$")
MET_TYPES = {"MET_CHAR", "MET_UCHAR", "MET_SHORT", "MET_USHORT", "MET_INT", "MET_UINT", "MET_LONG",
             "MET_ULONG", "MET_LONG_LONG", "MET_ULONG_LONG", "MET_FLOAT", "MET_DOUBLE"}
NRRD_TYPES = {"signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t", "short", "short int",
              "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
              "unsigned short int", "uint16", "uint16_t", "int", "signed int", "int32", "int32_t", "uint",
              "unsigned int", "uint32", "uint32_t", "longlong", "long long", "long long int", "signed long long",
              "signed long long int", "int64", "int64_t", "ulonglong", "unsigned long long",
              "unsigned long long int", "uint64", "uint64_t", "float", "double"}
NRRD_ENCODINGS = {"raw", "txt", "text", "ascii", "hex", "gz", "gzip", "bz2", "bzip2"}
MAX_DIMS = 4


def _head_lines(path: Path, what: str) -> list[str]:
    with open(path, "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES)
    lines = []
    for raw in head.split(b"\n"):
        try:
            line = raw.decode("ascii").rstrip("\r")
        except UnicodeDecodeError:
            break  # binary data starts (or garbage): the caller checks what it needs was seen
        if not _PRINTABLE.match(line):
            break
        lines.append(line)
    if not lines:
        raise InputError(f"not a {what} file (no text header)", path)
    return lines


def _ints(value: str, n: int | None, key: str, path: Path, minimum: int = 1) -> list[int]:
    parts = value.split()
    if n is not None and len(parts) != n:
        raise InputError(f"header field {key} has {len(parts)} values, expected {n}", path)
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"header field {key} = {value!r} is not a list of whole numbers", path) from None
    if any(v < minimum or v >= 2**31 for v in numbers):
        raise InputError(f"header field {key} = {value!r} out of range", path)
    return numbers


def _floats(value: str, n: int, key: str, path: Path, positive: bool = False) -> None:
    parts = value.replace("(", " ").replace(")", " ").replace(",", " ").split()
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"header field {key} = {value!r} is not a list of numbers", path) from None
    if len(numbers) != n or not all(math.isfinite(v) and (v > 0 or not positive) for v in numbers):
        raise InputError(f"header field {key} = {value!r}: expected {n} finite{' positive' if positive else ''} "
                         "numbers", path)


def _check_ndims(ndim: int, path: Path) -> None:
    if not 1 <= ndim <= MAX_DIMS:
        raise InputError(f"header declares {ndim} dimensions (corrupt header, or not a 3D volume)", path)


def check_metaimage(path: Path) -> bool:
    """Validate a MetaImage header: known types, consistent counts, finite geometry, one data file.

    Returns whether the voxel data is compressed (CompressedData = True)."""
    fields: dict[str, str] = {}
    for line in _head_lines(path, "MetaImage"):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.match(key):
            raise InputError(f"not a MetaImage header (line {line[:40]!r})", path)
        if key in fields:
            raise InputError(f"MetaImage header repeats {key}", path)
        fields[key] = value
        if key == "ElementDataFile":
            break
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in fields:
            raise InputError(f"not a MetaImage header (no {key})", path)
    ndim = _ints(fields["NDims"], 1, "NDims", path, minimum=0)[0]
    _check_ndims(ndim, path)
    _ints(fields["DimSize"], ndim, "DimSize", path)
    if fields["ElementType"] not in MET_TYPES:
        raise InputError(f"unknown MetaImage ElementType {fields['ElementType']!r}", path)
    for key in ("ElementSpacing", "ElementSize"):
        if key in fields:
            _floats(fields[key], ndim, key, path, positive=True)
    for key in ("Offset", "Position", "Origin", "CenterOfRotation"):
        if key in fields:
            _floats(fields[key], ndim, key, path)
    for key in ("TransformMatrix", "Rotation", "Orientation"):
        if key in fields:
            _floats(fields[key], ndim * ndim, key, path)
    for key in ("ElementNumberOfChannels", "CompressedDataSize", "HeaderSize"):
        if key in fields:
            _ints(fields[key], 1, key, path, minimum=-1 if key == "HeaderSize" else 0)
    for key in ("BinaryData", "BinaryDataByteOrderMSB", "ElementByteOrderMSB", "CompressedData"):
        if key in fields and fields[key].lower() not in ("true", "false"):
            raise InputError(f"header field {key} = {fields[key]!r} is not True/False", path)
    data_file = fields["ElementDataFile"]
    if data_file.upper() == "LIST" or "%" in data_file or len(data_file.split()) > 1:
        raise InputError("multi-file MetaImage (ElementDataFile LIST/pattern) is not supported", path)
    check_data_file(path, data_file)
    return fields.get("CompressedData", "false").lower() == "true"


def check_nrrd(path: Path) -> bool:
    """Validate an NRRD header: magic, known type/encoding, sizes matching the dimension, one data file.

    Returns whether the voxel data is compressed (gzip/bzip2 encoding)."""
    lines = _head_lines(path, "NRRD")
    if not re.match(r"^NRRD000[1-5]$", lines[0]):
        raise InputError("not an NRRD file (wrong magic bytes)", path)
    fields: dict[str, str] = {}
    ended = False
    for line in lines[1:]:
        if not line:
            ended = True
            break
        if line.startswith("#"):
            continue
        pair, field_sep = line.find(":="), line.find(": ")
        if pair >= 0 and (field_sep < 0 or pair < field_sep):
            continue  # key:=value pairs are free-form metadata
        field, sep, value = line.partition(": ")
        if not sep:
            raise InputError(f"not an NRRD header (line {line[:40]!r})", path)
        fields[field.strip().lower()] = value.strip()
    detached = path.suffix.lower() == ".nhdr"
    if not ended and not detached:
        raise InputError("NRRD header does not end with a blank line (truncated or corrupt)", path)
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in fields:
            raise InputError(f"not an NRRD header (no {key} field)", path)
    ndim = _ints(fields["dimension"], 1, "dimension", path, minimum=0)[0]
    _check_ndims(ndim, path)
    _ints(fields["sizes"], ndim, "sizes", path)
    if fields["type"].lower() not in NRRD_TYPES:
        raise InputError(f"unsupported NRRD type {fields['type']!r}", path)
    if fields["encoding"].lower() not in NRRD_ENCODINGS:
        raise InputError(f"unsupported NRRD encoding {fields['encoding']!r}", path)
    if "space directions" in fields:
        vectors = fields["space directions"].split()
        if len(vectors) != ndim:
            raise InputError(f"NRRD space directions has {len(vectors)} entries, expected {ndim}", path)
        for vec in vectors:
            if vec != "none":
                _floats(vec, len(vec.split(",")), "space directions", path)
    if "space origin" in fields:
        origin = fields["space origin"]
        _floats(origin, len(origin.split(",")), "space origin", path)
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None and (data_file.upper().startswith("LIST") or "%" in data_file
                                  or len(data_file.split()) > 1):
        raise InputError("multi-file NRRD (data file LIST/pattern) is not supported", path)
    if data_file is not None:
        check_data_file(path, data_file)
    # raw and hex hold at least one byte per data byte: only gzip/bzip2 (and text, whose numbers may be
    # written shorter than their binary size, e.g. "0 ") may be smaller than the data they declare
    return fields["encoding"].lower() not in ("raw", "hex")


ALLOW_OUTSIDE_ENV = "KNEEOA_ALLOW_OUTSIDE_DATA_FILES"


def check_data_file(header: Path, name: str) -> None:
    """A detached header's data file must lie in the header's own folder (or below it), unless
    KNEEOA_ALLOW_OUTSIDE_DATA_FILES=1: a header from elsewhere must not read, e.g., /etc/shadow or another
    patient's scan by naming `../..` or an absolute path."""
    import os

    if name.upper() in ("LOCAL", "LIST"):
        return
    if os.environ.get(ALLOW_OUTSIDE_ENV, "") == "1":
        return
    folder = header.resolve().parent
    target = (folder / name).resolve()
    if target != folder and folder not in target.parents:
        raise InputError(f"the data file {name!r} named in the header lies outside the header's folder (set "
                         f"{ALLOW_OUTSIDE_ENV}=1 to allow it)", header)

"""Generators of small files that would exhaust memory or hang a naive reader (not a test module).

Each maker writes one file and returns (path, kind, regex of the expected one-line message). `kind` says
which reader the file goes to: volume, table, yaml or checkpoint. The heavy driver in
test_reliability_memory.py reads them all in one subprocess under RLIMIT_AS.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

ZERO_MB = gzip.compress(bytes(1 << 20), 9)  # one gzip member inflating to 1 MiB; members concatenate


def _nifti_header(dims: tuple[int, ...], datatype: int = 16, bitpix: int = 32) -> bytes:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2, 2, 2))
    raw = bytearray(hdr.binaryblock)
    raw[40:56] = struct.pack("<8h", len(dims), *dims, *([1] * (7 - len(dims))))
    raw[70:74] = struct.pack("<hh", datatype, bitpix)
    raw[108:112] = struct.pack("<f", 352.0)
    raw[344:348] = b"n+1\0"
    return bytes(raw) + bytes(4)


def volume_cases(folder: Path) -> list[tuple[Path, str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    cases = []

    def put(name: str, data: bytes, match: str) -> None:
        (folder / name).write_bytes(data)
        cases.append((folder / name, "volume", match))

    # gzip bombs: the header declares a 16^3 float32 volume, the stream inflates to 64 MiB .. 1 GiB
    for mib in (64, 256, 1024):
        put(f"bomb_{mib}.nii.gz", gzip.compress(_nifti_header((16, 16, 16))) + ZERO_MB * mib,
            "inflates to more than")
    # headers that lie about the datatype: bitpix says 1 byte a voxel, the datatype 8 or 16
    for datatype, bitpix in ((64, 8), (1536, 8), (16, 8), (1792, 16), (4, 64), (999, 32)):
        put(f"lies_{datatype}_{bitpix}.nii.gz",
            gzip.compress(_nifti_header((300, 300, 300), datatype, bitpix)) + ZERO_MB,
            "does not match bitpix")
    # honest headers, tiny files, absurd sizes: over the voxel cap, the byte budget or the deflate bound
    for dims in ((30000, 30000, 30000), (1024, 1024, 1000), (900, 900, 900), (600, 600, 600), (400, 400, 400)):
        put(f"huge_{dims[0]}.nii.gz", gzip.compress(_nifti_header(dims)), "implausibly large|byte budget|cannot hold")
    # NRRD / MetaImage: raw data shorter than declared, gzip claiming a gigabyte, text headers
    for n in (700, 1000, 1600):
        put(f"raw_{n}.nrrd", f"NRRD0004\ntype: float\ndimension: 3\nsizes: {n} {n} {n}\nendian: little\nencoding: raw\n\n".encode()
            + bytes(64), "truncated: header declares|byte budget|implausibly large")
        put(f"gzip_{n}.nrrd", f"NRRD0004\ntype: short\ndimension: 3\nsizes: {n} {n} {n}\nendian: little\nencoding: gzip\n\n".encode()
            + ZERO_MB, "cannot hold|byte budget|implausibly large")
        put(f"raw_{n}.mha", (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nDimSize = {n} {n} {n}\n"
                             "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n").encode() + bytes(64),
            "truncated: header declares|byte budget|implausibly large")
    # gzip NRRD claiming 16^3 bytes whose stream inflates to 512 MiB: ITK reads only what is declared
    put("nrrd_bomb.nrrd", b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 16 16 16\nencoding: gzip\n\n" + ZERO_MB * 512,
        "constant image")
    return cases


def _xlsx_with(folder: Path, sheet_edit) -> bytes:
    """A real two-row workbook (our writer) with its sheet XML edited."""
    from kneeoa.data.tables import write_table

    seed = write_table(folder / ".seed.xlsx", [{"case_id": "a", "kl": 1}, {"case_id": "b", "kl": 2}], ["case_id", "kl"])
    buf = io.BytesIO()
    with zipfile.ZipFile(seed) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, sheet_edit(data) if name == "xl/worksheets/sheet1.xml" else data)
    seed.unlink()
    return buf.getvalue()


def table_cases(folder: Path) -> list[tuple[Path, str, str]]:
    """Workbooks whose <dimension> claims far more than they hold, or with one cell very far out."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for k, (ref, far_row, far_col, match) in enumerate((
            ("A1:XFD1048576", None, None, "^ok:2$"), ("A1:ZZ900000", None, None, "^ok:2$"),
            ("A1:B1048576", 1048576, "A", "^ok:3$"), ("A1:XFD3", None, None, "^ok:2$"),
            ("A1:B3", 1048576, "XFD", "rows x .* columns"), ("A1:B3", 900000, "AAA", "rows x .* columns"),
            ("A1:XFD1048576", 600000, "B", "^ok:3$"))):
        def edit(data: bytes, ref=ref, far_row=far_row, far_col=far_col) -> bytes:
            data = data.replace(b'<dimension ref="A1:B3" />', f'<dimension ref="{ref}" />'.encode())
            if far_row:
                cell = f'<row r="{far_row}"><c r="{far_col}{far_row}" t="inlineStr"><is><t>z</t></is></c></row>'
                data = data.replace(b"</sheetData>", cell.encode() + b"</sheetData>")
            return data

        path = folder / f"sheet_{k}.xlsx"
        path.write_bytes(_xlsx_with(folder, edit))
        cases.append((path, "table", match))
    return cases


def yaml_cases(folder: Path) -> list[tuple[Path, str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    cases = []

    def put(name: str, text: str, match: str) -> None:
        (folder / name).write_text(text, encoding="utf-8")
        cases.append((folder / name, "yaml", match))

    for levels in (3, 6, 9, 12):  # billion laughs: 10^levels strings from a few hundred bytes
        lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
        put(f"laughs_{levels}.yaml", "\n".join(lines) + "\nepochs: 1\n", "aliases")
    for depth in (40, 1000, 20000):
        put(f"deep_list_{depth}.yaml", "options: " + "[" * depth + "]" * depth + "\n", "nested deeper")
        put(f"deep_map_{depth}.yaml", "options: " + "{a: " * depth + "1" + "}" * depth + "\n", "nested deeper")
    for digits in (50, 1000, 5000, 100000):
        put(f"digits_{digits}.yaml", f"epochs: {'9' * digits}\n", "more than 40 characters")
    for value in (".inf", "-.inf", ".nan", "1.0e+999", "-1.0e+400"):
        put(f"float_{value.strip('.-+')}.yaml", f"lr: {value}\n", "finite number")
    put("big.yaml", "description: " + "x" * (2 << 20) + "\n", "at most")
    return cases


ABSURD_PRESET_VALUES = [("width", "1000000"), ("width", ".inf"), ("width", "-16"), ("width", "'16'"),
                        ("input_shape", "[1024, 1024, 1024]"), ("input_shape", "[100000, 32, 32]"),
                        ("input_shape", "[.nan, 32, 32]"), ("input_shape", "[-32, 32, 32]"),
                        ("options", "{layers: [100000, 2, 2, 2]}"), ("options", "{layers: [.inf, 2, 2, 2]}")]


def absurd_presets(folder: Path) -> list[tuple[Path, str]]:
    """The quick preset with one absurd number each (a model that would need terabytes, or no number)."""
    from kneeoa.config import PRESETS_DIR

    folder.mkdir(parents=True, exist_ok=True)
    base = (PRESETS_DIR / "quick.yaml").read_text(encoding="utf-8").split("\nbackbones:")[0]
    out = []
    for k, (key, value) in enumerate(ABSURD_PRESET_VALUES):
        lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in base.splitlines()]
        path = folder / f"absurd_{k}.yaml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.append((path, key))
    return out


# card numbers an attacker (or a broken exporter) can put in a model card
BAD_CARD_VALUES = [("spec.input_shape", [float("inf"), 16, 16]), ("spec.input_shape", [float("nan"), 16, 16]),
                   ("spec.input_shape", ["16", "16", "16"]), ("spec.input_shape", [-16, 16, 16]),
                   ("spec.input_shape", [10**9, 16, 16]), ("spec.input_shape", [True, 16, 16]),
                   ("spec.input_shape", [16.5, 16, 16]), ("spec.input_shape", 16),
                   ("spec.width", float("inf")), ("spec.width", float("nan")), ("spec.width", "4"),
                   ("spec.width", -4), ("spec.width", 10**6), ("spec.width", 4096), ("spec.width", 1e308),
                   ("spec.options", {"layers": [200, 200, 100, 10]}), ("spec.options", {"layers": [2, 2, 2, 10**9]}),
                   ("spec.options", {"layers": [float("inf")] * 4}), ("spec.options", {"layers": "2222"}),
                   ("preprocessing.input_shape", [10**6, 10**6, 10**6]),
                   ("preprocessing.input_shape", [float("inf"), 16, 16]),
                   ("preprocessing.input_shape", ["a", "b", "c"]), ("preprocessing.input_shape", [-1, 16, 16])]


def rewrite_card(source: Path, out: Path, edit) -> Path:
    """A copy of checkpoint `source` whose card is `edit(card)` (or the raw JSON text edit returns)."""
    from safetensors.numpy import load_file, save_file

    from kneeoa.models.checkpoint import CARD_KEY, read_card

    card = read_card(source)
    new = edit(card)
    text = new if isinstance(new, str) else json.dumps(new)  # json.dumps writes Infinity/NaN as asked
    save_file(load_file(str(source)), str(out), metadata={CARD_KEY: text, "format": "pt"})
    return out


def card_cases(source: Path, folder: Path) -> list[tuple[Path, str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    cases = []
    for k, (where, value) in enumerate(BAD_CARD_VALUES):
        def edit(card: dict, where=where, value=value) -> dict:
            block, key = where.split(".")
            card.setdefault(block, {})[key] = value
            return card

        cases.append((rewrite_card(source, folder / f"card_{k}.safetensors", edit), "checkpoint",
                      "spec cannot be built|do not match|preprocessing"))
    for depth in (5000, 100000):
        cases.append((rewrite_card(source, folder / f"deep_{depth}.safetensors",
                                   lambda card, d=depth: json.dumps(card)[:-1] + ', "x": ' + "[" * d + "]" * d + "}"),
                      "checkpoint", "nested too deeply"))
    return cases


def random_array(shape=(16, 16, 16), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)

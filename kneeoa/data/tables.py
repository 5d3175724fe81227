"""Tables (.xlsx / .csv) as `list[dict]` keyed by the header row; deterministic, atomic writes."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kneeoa.errors import InputError
from kneeoa.utils.atomic import atomic_write_bytes
from kneeoa.utils.cells import csv_line, quote_formula, unquote_formula

TABLE_SUFFIXES = (".xlsx", ".csv")
# Fixed workbook/zip timestamps: the same rows always give the same .xlsx bytes.
_FIXED_TIME = _dt.datetime(2000, 1, 1, 0, 0, 0)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# Subject/label tables are a few thousand rows of a few columns; a sheet claiming more is refused unread.
MAX_TABLE_COLUMNS = 1000
MAX_TABLE_CELLS = 20_000_000
_EMPTY_ROW: list = []


def read_table(path: str | Path) -> list[dict]:
    """Rows of the first sheet (.xlsx) or of a CSV file as dicts keyed by the header; blank cells -> None."""
    path = Path(path)
    if not path.is_file():
        raise InputError("table not found", path)
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        header, body = _read_xlsx(path)
    elif suffix == ".csv":
        header, body = _read_csv(path)
    else:
        raise InputError(f"unsupported table type {path.suffix or '(no suffix)'}; expected .xlsx or .csv", path)
    return _rows_as_dicts(header, body, path)


def _read_xlsx(path: Path) -> tuple[list, list[list]]:
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        try:
            sheet = wb.worksheets[0]
            # the file's <dimension ref="A1:XFD1048576"> is a claim, not the data: read-only openpyxl pads every
            # row to it (16,384 cells a row, 10^6 rows, gigabytes from a 5 kB file); measure the real extent
            sheet.reset_dimensions()
            sheet.calculate_dimension(force=True)  # one pass over the cells that are really there
            n_rows, n_cols = sheet.max_row or 0, sheet.max_column or 0
            if n_cols > MAX_TABLE_COLUMNS or n_rows * n_cols > MAX_TABLE_CELLS:
                raise InputError(f"the first sheet spans {n_rows} rows x {n_cols} columns (a cell far out, e.g. "
                                 f"{sheet.calculate_dimension()}); KneeOA reads tables up to {MAX_TABLE_COLUMNS} "
                                 f"columns and {MAX_TABLE_CELLS} cells", path)
            # empty rows share one list: a sheet with a few cells a million rows apart stays a few MB
            rows = [list(r) if any(v is not None for v in r) else _EMPTY_ROW
                    for r in sheet.iter_rows(values_only=True)]
        finally:
            wb.close()
    except InputError:
        raise
    except Exception as err:  # BadZipFile, KeyError, XML errors: all mean "not a readable workbook"
        raise InputError(f"cannot read Excel workbook: {type(err).__name__}: {err}", path) from None
    return (rows[0] if rows else []), rows[1:]


def _read_csv(path: Path) -> tuple[list, list[list]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"CSV is not UTF-8 text: {err}", path) from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise InputError(f"malformed CSV: {err}", path) from None
    return (rows[0] if rows else []), rows[1:]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _rows_as_dicts(header: list, body: list[list], path: Path) -> list[dict]:
    if not header or all(_blank(h) for h in header):
        raise InputError("table has no header row", path)
    # trailing blank header cells are Excel formatting noise unless data sits under them (checked below)
    while header and _blank(header[-1]):
        header = header[:-1]
    names = [str(h).strip() if not _blank(h) else "" for h in header]
    if "" in names:
        raise InputError(f"header column {names.index('') + 1} has no name", path)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"duplicate column names {dupes}", path)
    rows = []
    for line_no, raw in enumerate(body, start=2):
        values = [None if _blank(v) else (unquote_formula(v.strip()) if isinstance(v, str) else v) for v in raw]
        if all(v is None for v in values):
            continue  # empty line
        if len(values) > len(names) and any(v is not None for v in values[len(names):]):
            raise InputError(f"row {line_no} has {len(values)} values but the header names {len(names)} "
                             "columns (extra unnamed column)", path)
        values = values[: len(names)] + [None] * (len(names) - len(values))
        rows.append(dict(zip(names, values)))
    return rows


def require_columns(rows: list[dict], columns: Iterable[str], path: str | Path | None = None,
                    header: Iterable[str] | None = None) -> None:
    """InputError naming the missing columns; `header` defaults to the keys of the first row."""
    present = set(header) if header is not None else (set(rows[0]) if rows else set())
    missing = [c for c in columns if c not in present]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)} (found: {', '.join(sorted(present)) or 'none'})",
                         path)


def _cell(value: Any) -> Any:
    """Plain Python scalar for a cell (numpy scalars -> Python; NaN/None -> blank)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is not None and not isinstance(value, (str, int, float, bool, _dt.datetime, _dt.date)):
        value = str(value)
    return quote_formula(value)  # never a live formula in a CSV or workbook we write (OWASP)


def write_table(path: str | Path, rows: list[dict], columns: list[str]) -> Path:
    """Write `columns` of `rows` (missing keys -> blank, other keys ignored) to .xlsx or .csv, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    table = [[_cell(row.get(c)) for c in columns] for row in rows]
    if suffix == ".csv":
        text = csv_line(list(columns)) + "".join(csv_line(["" if v is None else v for v in r]) for r in table)
        atomic_write_bytes(path, text.encode("utf-8"))
    elif suffix == ".xlsx":
        atomic_write_bytes(path, _xlsx_bytes(columns, table))
    else:
        raise ValueError(f"write_table writes .xlsx or .csv, not {path.name}")
    return path


def _xlsx_bytes(columns: list[str], table: list[list]) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Sheet1"
    ws.append(list(columns))
    for r in table:
        ws.append(r)
    wb.properties.creator = "kneeoa"
    wb.properties.created = _FIXED_TIME
    wb.properties.modified = _FIXED_TIME
    raw = io.BytesIO()
    wb.save(raw)
    return _normalise_zip(raw.getvalue())


def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps: openpyxl stamps zip entries and `dcterms:modified` with now."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o600 << 16
            content = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                content = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
                                 rb"\g<1>2000-01-01T00:00:00Z\g<2>", content)
            dst.writestr(entry, content)
    return out.getvalue()

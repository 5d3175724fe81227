"""Spreadsheet-safe text cells (CSV injection, OWASP): a cell we write never starts a live formula.

Case ids come from file names and tables, error messages quote them: a value starting with `=`, `+`, `-`,
`@`, a tab or a carriage return is a formula (or DDE payload) when Excel or LibreOffice opens the CSV or
workbook. As OWASP recommends, such a text value is written with a leading single quote, which the
spreadsheet shows as text; our own readers take the quote off again, so ids round-trip. Plain numbers
("-0.5") are not formulas and stay as they are.
"""

from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def quote_formula(value: Any) -> Any:
    """A text value that a spreadsheet would run, prefixed with `'`; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def unquote_formula(value: Any) -> Any:
    """Inverse of `quote_formula` for values read back from our own tables."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_START) \
            and not _is_number(value[1:]):
        return value[1:]
    return value


def csv_line(values: list) -> str:
    """One CSV row ending in "\\n". Python's csv module (QUOTE_MINIMAL, "\\n" terminator) leaves a field holding
    a bare carriage return unquoted, and every reader then splits the row there: such rows quote all fields."""
    import csv
    import io

    carriage = any(isinstance(v, str) and "\r" in v for v in values)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL if carriage else csv.QUOTE_MINIMAL).writerow(values)
    return buf.getvalue()


def number(value: Any) -> float:
    """A table cell as float; a blank or non-numeric cell (a metric undefined for that model) is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")

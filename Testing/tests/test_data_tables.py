"""Tables: .xlsx/.csv round trips, byte-deterministic writes, clear errors for bad tables."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kneeoa.data.tables import read_table, require_columns, write_table
from kneeoa.errors import InputError

ROWS = [{"id": "a", "KL": np.int64(2), "age": 61.5}, {"id": "b", "KL": None, "age": float("nan")}]


def test_xlsx_round_trip_keeps_types_and_blanks(tmp_path):
    write_table(tmp_path / "t.xlsx", ROWS, ["id", "KL", "age"])
    assert read_table(tmp_path / "t.xlsx") == [{"id": "a", "KL": 2, "age": 61.5},
                                               {"id": "b", "KL": None, "age": None}]


def test_csv_round_trip_gives_strings_and_blanks(tmp_path):
    write_table(tmp_path / "t.csv", ROWS, ["id", "KL", "age"])
    assert read_table(tmp_path / "t.csv") == [{"id": "a", "KL": "2", "age": "61.5"},
                                              {"id": "b", "KL": None, "age": None}]


def test_columns_select_and_order_and_missing_keys_are_blank(tmp_path):
    write_table(tmp_path / "t.csv", ROWS, ["age", "id", "note"])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["age,id,note", "61.5,a,", ",b,"]


@pytest.mark.parametrize("name", ["t.xlsx", "t.csv"])
def test_writes_are_byte_identical_across_time(tmp_path, name):
    first = write_table(tmp_path / name, ROWS, ["id", "KL", "age"]).read_bytes()
    time.sleep(1.1)  # zip entries and workbook properties carry second-resolution timestamps
    assert write_table(tmp_path / name, ROWS, ["id", "KL", "age"]).read_bytes() == first


def test_require_columns_names_the_missing_ones(tmp_path):
    rows = [{"CMT-ID": 1, "Age": 3}]
    require_columns(rows, ["CMT-ID"], tmp_path / "t.xlsx")
    with pytest.raises(InputError, match=r"t\.xlsx: missing column\(s\) KLGrade, BMI"):
        require_columns(rows, ["CMT-ID", "KLGrade", "BMI"], tmp_path / "t.xlsx")


def test_duplicate_header_names(tmp_path):
    (tmp_path / "t.csv").write_text("id,KL,KL\na,1,2\n")
    with pytest.raises(InputError, match=r"duplicate column names \['KL'\]"):
        read_table(tmp_path / "t.csv")


def test_unnamed_header_column(tmp_path):
    (tmp_path / "t.csv").write_text("id,,KL\na,1,2\n")
    with pytest.raises(InputError, match="header column 2 has no name"):
        read_table(tmp_path / "t.csv")


def test_empty_table_has_no_header(tmp_path):
    (tmp_path / "t.csv").write_text("")
    with pytest.raises(InputError, match="no header row"):
        read_table(tmp_path / "t.csv")


def test_non_utf8_csv(tmp_path):
    (tmp_path / "t.csv").write_bytes(b"id,KL\n\xff\xfe,1\n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_table(tmp_path / "t.csv")


def test_unsupported_table_type(tmp_path):
    (tmp_path / "t.ods").write_bytes(b"x")
    with pytest.raises(InputError, match=r"unsupported table type \.ods"):
        read_table(tmp_path / "t.ods")


def test_missing_table(tmp_path):
    with pytest.raises(InputError, match="table not found"):
        read_table(tmp_path / "nope.xlsx")

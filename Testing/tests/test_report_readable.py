"""The study report reads for a researcher: human headers with a legend, one model order, failures that are not
failures explained, visible KL colours, saliency maps that show, knees of every grade."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from kneeoa.analysis.plots import KL_COLOURS
from kneeoa.contracts.report import COLUMN_LABELS, LEGENDS, in_model_order
from kneeoa.report.html import Section, Table, render_report
from kneeoa.report.study_report import LATENT_COLUMNS, METRIC_COLUMNS, _collapsed_note


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


@pytest.mark.parametrize("grade", range(5))
def test_kl_colours_are_visible_on_white(grade):
    """WCAG contrast against white of at least 2.5:1 (the old KL 2, #fddb7f, had 1.3:1)."""
    contrast = 1.05 / (_luminance(KL_COLOURS[grade]) + 0.05)
    assert contrast >= 2.5, f"KL {grade} {KL_COLOURS[grade]}: contrast {contrast:.2f}"


def test_every_table_column_has_a_human_header_and_every_table_a_legend():
    for column in METRIC_COLUMNS + LATENT_COLUMNS:
        assert column in COLUMN_LABELS and COLUMN_LABELS[column] != column
    assert {"metrics", "stats", "latent", "saliency", "cohort"} <= set(LEGENDS)
    assert "0 = chance" in LEGENDS["metrics"] and "one grade for every knee" in LEGENDS["metrics"]
    assert "sorted by the mean PC1" in LEGENDS["latent"]


def test_a_table_shows_labels_keeps_names_as_tooltips_and_its_legend():
    page = render_report("r", [Section("Model performance", "", [
        Table([{"backbone": "m3t", "kl_qwk": 0.0}], ["backbone", "kl_qwk"], human=True, legend="what it means")])])
    assert '<th title="kl_qwk">KL QWK (κ, −1…1)</th>' in page
    assert '<p class="legend">what it means</p>' in page


def test_one_model_order_catalog_then_variants():
    rows = [{"backbone": b, "variant": v} for b in ("m3t", "nnmamba", "resnet3d")
            for v in ("dual", "single_kl", "single_oa")]  # alphabetical, as the latent table was
    ordered = [(r["backbone"], r["variant"]) for r in in_model_order(rows)]
    assert ordered[:3] == [("resnet3d", "single_oa"), ("resnet3d", "single_kl"), ("resnet3d", "dual")]
    assert [b for b, _ in ordered[::3]] == ["resnet3d", "m3t", "nnmamba"]


def test_a_zero_or_negative_qwk_is_explained_not_left_as_a_failure():
    rows = [{"backbone": "m3t", "variant": "single_kl", "kl_qwk": 0.0},
            {"backbone": "m3t", "variant": "dual", "kl_qwk": -0.05},
            {"backbone": "resnet3d", "variant": "dual", "kl_qwk": 0.41}]
    note = _collapsed_note(rows)
    assert "m3t single_kl (0.000)" in note and "m3t dual (-0.050)" in note and "resnet3d" not in note
    assert "one KL grade predicted for every knee" in note
    assert _collapsed_note(rows[2:]) == ""


def test_the_saliency_map_is_drawn_with_opacity_rising_with_its_value():
    from kneeoa.analysis.plots import pyplot
    from kneeoa.report.figures import _saliency_rgba

    rgba = _saliency_rgba(np.array([[0.0, 0.1, 0.5, 1.0]]), pyplot().get_cmap("inferno"))
    alpha = rgba[0, :, 3]
    assert alpha[0] == 0.0 and 0.0 < alpha[1] < alpha[2] and alpha[2] == pytest.approx(0.9) == alpha[3]


def test_the_saliency_grid_has_a_colour_bar(monkeypatch):
    from kneeoa.report import figures

    seen = []
    monkeypatch.setattr(figures, "_colour_bar", lambda fig, axes, cmap: seen.append(axes.shape))
    image = np.random.default_rng(0).random((8, 8, 8))
    png = figures.saliency_grid_png([{"title": "knee · KL 2", "image": image, "mask": None}], ["resnet3d_dual"],
                                    {(0, "resnet3d_dual"): {"saliency": image, "note": "mass@ROI 0.07 = 8.1x chance"}})
    assert png.startswith(b"\x89PNG") and seen == [(1, 2)]


def test_saliency_examples_cover_every_kl_grade_first():
    from kneeoa.study import one_per_grade

    cases = [SimpleNamespace(case_id=f"k{i}", kl=kl) for i, kl in enumerate([0, 0, 0, 1, 0, 2, 3, 3, 4])]
    picked = one_per_grade(cases, 5)
    assert [c.kl for c in picked] == [0, 1, 2, 3, 4]
    assert [c.case_id for c in one_per_grade(cases, 7)][5:] == ["k1", "k2"]  # then cohort order
    assert len(one_per_grade(cases, 2)) == 2


def test_link_columns_link_relative_files_and_never_a_scheme_or_an_absolute_path():
    rows = [{"file": "saliency/a b.nii.gz"}, {"file": "javascript:alert(1)"}, {"file": "/etc/passwd"},
            {"file": '"><script>x</script>'}, {"file": ""}]
    page = render_report("r", [Section("s", items=[Table(rows, links=("file",))])])
    assert '<a href="saliency/a%20b.nii.gz">saliency/a b.nii.gz</a>' in page
    assert page.count("<a href=") == 1 + 2  # the navigation's link to the section, the two relative paths
    assert '<a href="%22%3E%3Cscript%3Ex%3C/script%3E">' in page  # a hostile name: encoded, still inert
    assert "<script>" not in page and "<td>javascript:alert(1)</td>" in page and "<td>/etc/passwd</td>" in page

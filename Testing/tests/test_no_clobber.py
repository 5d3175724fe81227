"""One no-clobber rule (`check_outputs`) for every command and the Python API."""

from __future__ import annotations

import pytest

from kneeoa.errors import ConfigError
from kneeoa.utils.outputs import check_outputs


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path):
    image = tmp_path / "knee.nii.gz"
    image.write_bytes(b"x")
    with pytest.raises(ConfigError, match="would overwrite an input") as err:
        check_outputs([tmp_path / "other.csv", tmp_path / "." / "knee.nii.gz"], [image], overwrite=True)
    assert str(image.name) in str(err.value)


def test_an_existing_output_needs_overwrite(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(ConfigError, match="--overwrite"):
        check_outputs([tmp_path / "a.csv", None], [])
    assert check_outputs([tmp_path / "a.csv", None], [], overwrite=True) == [tmp_path / "a.csv"]
    assert (tmp_path / "a.csv").read_text() == "x"  # the check never touches a file


def test_the_saliency_python_api_refuses_to_clobber_like_predict(tmp_path):
    from saliency_helpers import tiny_model

    from kneeoa.analysis.saliency_job import OVERLAP_CSV, SaliencyCase, run_saliency_cases

    image = tmp_path / "knee.nii.gz"
    image.write_bytes(b"not read: the rule runs before any work")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / OVERLAP_CSV).write_text("earlier results")
    with pytest.raises(ConfigError, match="--overwrite"):
        run_saliency_cases(tiny_model("resnet3d"), [SaliencyCase("knee", image, None, None)], tmp_path / "out")
    assert (tmp_path / "out" / OVERLAP_CSV).read_text() == "earlier results"

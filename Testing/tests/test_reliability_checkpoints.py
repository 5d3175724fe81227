"""Hostile and broken checkpoints through every entry point that takes one.

A payload that would create a marker file when unpickled is refused by grade, predict, score, saliency,
train --resume, load_checkpoint, read_card, score_volume and the Slicer card reader, and the marker never
appears; a checkpoint of another architecture or a truncated one fails with a message naming the file.
The payloads are proven live at the end (unpickling them does create the marker).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from engine_helpers import run_main
from reliability_helpers import SHAPE, assert_one_clear_error, good_array, tiny_checkpoint

from kneeoa.data.volume import write_nifti
from kneeoa.errors import CheckpointError


class Exploit:
    """Unpickling this creates `marker` (a stand-in for running any code the file's author wants)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle4(marker: Path, path: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": Exploit(marker)}, protocol=4))
    return path


def _pickle0(marker: Path, path: Path) -> Path:
    path.write_bytes(pickle.dumps(Exploit(marker), protocol=0))  # text protocol: no \x80 opcode up front
    return path


def _torch_zip(marker: Path, path: Path) -> Path:
    import torch

    torch.save({"model": Exploit(marker)}, path)
    return path


HOSTILE = {"pickle protocol 4": (_pickle4, "pickle"), "pickle protocol 0": (_pickle0, "not a KneeOA checkpoint"),
           "torch.save zip": (_torch_zip, "pickle / torch.save")}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    """A good checkpoint, one tiny cohort folder with an image, and its phantom cohort for predict."""
    from kneeoa.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("hostile")
    image = write_nifti(root / "images" / "knee.nii.gz", good_array(), np.eye(4))
    generate_cohort(root / "cohort", 4, 2, shape=SHAPE, seed=0, workers=1)
    return SimpleNamespace(root=root, image=image, cohort=root / "cohort",
                           good=tiny_checkpoint(root / "good.safetensors"))


def _cli_args(entry: str, env: SimpleNamespace, checkpoint: Path, out: Path) -> list[str]:
    ck = str(checkpoint)
    return {
        "grade": ["grade", str(env.image), "--checkpoint", ck, "--result-json", str(out / "r.json"), "--device", "cpu"],
        "predict": ["predict", "--checkpoint", ck, "--data", str(env.cohort), "--out", str(out / "p"), "--device",
                    "cpu"],
        "score": ["score", str(env.image.parent), "--checkpoint", ck, "--out", str(out / "s.csv"), "--device", "cpu",
                  "--workers", "0"],
        "saliency": ["saliency", "--checkpoint", ck, "--image", str(env.image), "--out", str(out / "maps"),
                     "--device", "cpu"],
    }[entry]


CLI_ENTRIES = ["grade", "predict", "score", "saliency"]


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.parametrize("entry", CLI_ENTRIES)
def test_cli_refuses_a_pickled_checkpoint_without_running_it(env, entry, kind, tmp_path, monkeypatch, capsys):
    maker, match = HOSTILE[kind]
    marker = tmp_path / "PWNED"
    evil = maker(marker, tmp_path / "evil.safetensors")
    out = tmp_path / "out"
    rc = run_main(monkeypatch, *_cli_args(entry, env, evil, out))
    assert_one_clear_error(rc, capsys.readouterr().err, entry, evil, match)
    assert not marker.exists()
    assert not out.exists(), "a refused checkpoint must leave no output behind"


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_python_entry_points_refuse_a_pickled_checkpoint(env, kind, tmp_path):
    from kneeoa.engine.score import score_volume
    from kneeoa.models.checkpoint import load_checkpoint, read_card
    from kneeoa.slicer.grading import read_card_header

    maker, _ = HOSTILE[kind]
    marker = tmp_path / "PWNED"
    evil = maker(marker, tmp_path / "evil.safetensors")
    for call in (lambda: load_checkpoint(evil), lambda: read_card(evil), lambda: read_card_header(evil),
                 lambda: score_volume(env.image, evil, device="cpu")):
        with pytest.raises(CheckpointError) as err:
            call()
        assert str(evil) in str(err.value)
    assert not marker.exists()


def test_resume_never_unpickles_the_run_files(env, tmp_path, monkeypatch, capsys):
    """A pickled trainer state is refused; a pickled last.safetensors is only ever replaced, never read."""
    from kneeoa.models.checkpoint import load_checkpoint

    run = tmp_path / "run"
    args = ["train", "--data", str(env.cohort), "--backbone", "resnet3d", "--variant", "dual", "--out", str(run),
            "--epochs", "1", "--input-size", "16", "--width", "4", "--batch-size", "2", "--device", "cpu"]
    assert run_main(monkeypatch, *args) == 0
    state, last = run / "checkpoints" / "trainer_state.safetensors", run / "checkpoints" / "last.safetensors"
    good_state = state.read_bytes()
    marker = tmp_path / "PWNED"
    _pickle4(marker, state)
    capsys.readouterr()
    rc = run_main(monkeypatch, "train", "--out", str(run), "--resume", "--epochs", "2")
    assert_one_clear_error(rc, capsys.readouterr().err, "train", state, "unreadable")
    state.write_bytes(good_state)
    _pickle4(marker, last)
    assert run_main(monkeypatch, "train", "--out", str(run), "--resume", "--epochs", "2") == 0
    assert not marker.exists()
    assert load_checkpoint(last)[1]["training"]["epochs_done"] == 2


def _other_architecture(good: Path, path: Path) -> Path:
    from safetensors.torch import load_file, save_file

    from kneeoa.models.checkpoint import CARD_KEY, read_card
    from kneeoa.models.registry import ModelSpec

    card = read_card(good)
    card["spec"] = ModelSpec("nnmamba", "dual", input_shape=SHAPE, width=4).to_dict()
    save_file(load_file(str(good)), str(path), metadata={CARD_KEY: json.dumps(card)})
    return path


def _truncated(good: Path, path: Path) -> Path:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


BROKEN = {"other architecture": (_other_architecture, "do not match the nnmamba/dual architecture"),
          "truncated": (_truncated, "truncated or corrupt")}


@pytest.mark.parametrize("kind", list(BROKEN))
@pytest.mark.parametrize("entry", CLI_ENTRIES)
def test_cli_names_a_broken_checkpoint(env, entry, kind, tmp_path, monkeypatch, capsys):
    maker, match = BROKEN[kind]
    bad = maker(env.good, tmp_path / "bad.safetensors")
    out = tmp_path / "out"
    rc = run_main(monkeypatch, *_cli_args(entry, env, bad, out))
    assert_one_clear_error(rc, capsys.readouterr().err, entry, bad, match)
    assert not out.exists()


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_the_payloads_are_live(kind, tmp_path):
    """Guards the tests above: each payload really runs code when loaded the unsafe way."""
    import torch

    maker, _ = HOSTILE[kind]
    marker = tmp_path / "PWNED"
    evil = maker(marker, tmp_path / "evil.bin")
    if kind == "torch.save zip":
        torch.load(evil, weights_only=False)
    else:
        pickle.loads(evil.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("entry", CLI_ENTRIES)
def test_a_spreadsheet_given_as_checkpoint_is_called_a_zip_archive(env, entry, tmp_path, monkeypatch, capsys):
    """An .xlsx (a ZIP archive) is not a torch.save file: the message says what the file is."""
    from kneeoa.data.tables import write_table

    sheet = write_table(tmp_path / "subInfo_test.xlsx", [{"CMT-ID": 1, "KLGrade": 2}], ["CMT-ID", "KLGrade"])
    rc = run_main(monkeypatch, *_cli_args(entry, env, Path(sheet), tmp_path / "out"))
    message = assert_one_clear_error(rc, capsys.readouterr().err, entry, sheet, "a ZIP archive")
    assert "not a KneeOA checkpoint" in message and "pickle" not in message

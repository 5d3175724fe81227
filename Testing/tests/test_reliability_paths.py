"""Paths and overwrites: an output never replaces an input (not even with --overwrite); an existing output
is replaced only with --overwrite; folders with spaces and non-ASCII names work end to end, C locale too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from engine_helpers import run_cli, run_main
from reliability_helpers import SHAPE, good_array, tiny_checkpoint

from kneeoa.data.volume import write_nifti


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> SimpleNamespace:
    """A folder cohort with a labels table, one image + mask, two prediction CSVs, a checkpoint."""
    root = tmp_path_factory.mktemp("paths")
    folder = root / "cohort"
    for k in range(3):
        write_nifti(folder / f"knee_{k}.nii.gz", good_array(seed=k), np.eye(4))
    (folder / "labels.csv").write_text("case_id,kl\nknee_0,0\nknee_1,2\nknee_2,4\n")
    mask = np.zeros(SHAPE)
    mask[4:10, 4:10, 4:10] = 2
    write_nifti(root / "one" / "knee_mask.nii.gz", mask, np.eye(4), is_label=True)
    preds = root / "preds"
    preds.mkdir()
    rng = np.random.default_rng(0)
    for variant in ("dual", "single_oa"):
        lines = ["CMT_ID,label_kl,label_oa,prob_oa,pred_oa"]
        for i in range(12):
            kl, p = i % 5, float(rng.uniform())
            lines.append(f"{i + 1},{kl},{int(kl >= 2)},{p:.4f},{int(p >= 0.5)}")
        (preds / f"resnet3d_{variant}_preds.csv").write_text("\n".join(lines) + "\n")
    return SimpleNamespace(root=root, folder=folder, image=write_nifti(root / "one" / "knee.nii.gz", good_array(),
                                                                        np.eye(4)),
                           mask=root / "one" / "knee_mask.nii.gz", preds=preds,
                           checkpoint=tiny_checkpoint(root / "model.safetensors"))


def _digest(paths: list[Path]) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


# (command line with {image} {mask} {checkpoint} {folder} {preds} placeholders, the input it aims at)
ONTO_INPUTS = {
    "grade json onto the image": ("grade {image} --checkpoint {checkpoint} --result-json {image}", "image"),
    "grade json onto the checkpoint": ("grade {image} --checkpoint {checkpoint} --result-json {checkpoint}",
                                       "checkpoint"),
    "grade map onto the mask": ("grade {image} --checkpoint {checkpoint} --mask {mask} --saliency-out {mask} "
                                "--result-json {root}/r.json", "mask"),
    "grade map onto the checkpoint": ("grade {image} --checkpoint {checkpoint} --saliency-out {checkpoint} "
                                      "--result-json {root}/r.json", "checkpoint"),
    "score table onto the labels table": ("score {folder} --checkpoint {checkpoint} --out {folder}/labels.csv",
                                          "labels"),
    "stats table onto a prediction CSV": ("stats {preds} --out {preds}/resnet3d_dual_preds.csv --resamples 10",
                                          "preds_csv"),
    "merge onto one of its parts": ("merge {root}/part.csv {root}/part.csv", "part"),
    "saliency map onto the mask": ("saliency --checkpoint {checkpoint} --image {root}/one/knee.nii.gz "
                                   "--mask {root}/one/knee_saliency.nii.gz --out {root}/one", "mask_named_as_map"),
}


@pytest.mark.parametrize("case", list(ONTO_INPUTS))
def test_an_output_never_replaces_an_input_even_with_overwrite(env, case, monkeypatch, capsys):
    from kneeoa.engine.score_io import SCORE_COLUMNS

    template, target = ONTO_INPUTS[case]
    (env.root / "part.csv").write_text(",".join(SCORE_COLUMNS) + "\n")
    shutil.copy(env.mask, env.root / "one" / "knee_saliency.nii.gz")  # a mask named like the map of knee.nii.gz
    args = [*template.format(**{k: str(v) for k, v in vars(env).items()}).split(), "--overwrite"]
    inputs = {"image": env.image, "checkpoint": env.checkpoint, "mask": env.mask, "labels": env.folder / "labels.csv",
              "preds_csv": env.preds / "resnet3d_dual_preds.csv", "part": env.root / "part.csv",
              "mask_named_as_map": env.root / "one" / "knee_saliency.nii.gz"}
    before = _digest([inputs[target]])
    rc = run_main(monkeypatch, *args, *(["--device", "cpu"] if args[0] in ("grade", "score", "saliency") else []))
    err = capsys.readouterr().err
    assert rc == 1 and "overwrite" in err and "Traceback" not in err, err
    assert _digest([inputs[target]]) == before


def _fresh_outputs(env: SimpleNamespace, tmp: Path) -> dict[str, tuple[list[str], Path]]:
    """command -> (argv writing into tmp, the output file that must survive without --overwrite)."""
    part = tmp / "part.csv"
    return {
        "grade": (["grade", str(env.image), "--checkpoint", str(env.checkpoint), "--result-json", str(tmp / "r.json"),
                   "--device", "cpu"], tmp / "r.json"),
        "score": (["score", str(env.folder), "--checkpoint", str(env.checkpoint), "--out", str(tmp / "s.csv"),
                   "--workers", "0", "--device", "cpu"], tmp / "s.csv"),
        "predict": (["predict", "--checkpoint", str(env.checkpoint), "--data", str(env.folder), "--split", "train",
                     "--out", str(tmp), "--device", "cpu"], tmp / "resnet3d_dual_preds.csv"),
        "stats": (["stats", str(env.preds), "--out", str(tmp / "stats.csv"), "--resamples", "10"], tmp / "stats.csv"),
        "saliency": (["saliency", "--checkpoint", str(env.checkpoint), "--image", str(env.image), "--out", str(tmp),
                      "--device", "cpu"], tmp / "knee_saliency.nii.gz"),
        "merge": (["merge", str(tmp / "merged.csv"), str(part)], tmp / "merged.csv"),
    }


@pytest.mark.parametrize("command", ["grade", "score", "predict", "stats", "saliency", "merge"])
def test_an_existing_output_is_replaced_only_with_overwrite(env, command, tmp_path, monkeypatch, capsys):
    from kneeoa.engine.score_io import SCORE_COLUMNS

    (tmp_path / "part.csv").write_text(",".join(SCORE_COLUMNS) + "\n")
    args, output = _fresh_outputs(env, tmp_path)[command]
    output.write_bytes(b"precious")
    assert run_main(monkeypatch, *args) == 1
    assert "--overwrite" in capsys.readouterr().err and output.read_bytes() == b"precious"
    assert run_main(monkeypatch, *args, "--overwrite") == 0
    assert output.read_bytes() != b"precious"


@pytest.mark.slow
def test_spaces_and_non_ascii_paths_work_end_to_end(tmp_path, monkeypatch):
    """phantom -> train (two variants) -> predict -> stats, latent -> score + saliency -> merge -> grade, all
    under 'Knie Studie/Ærø', and `kneeoa grade` once more in a subprocess under the C locale."""
    from kneeoa.engine.score_io import read_scores

    base = tmp_path / "Knie Studie" / "Ærø"
    cohort = base / "Kohorte ü"
    assert run_main(monkeypatch, "phantom", str(cohort), "--train", "8", "--test", "4", "--shape", "16", "16", "16",
                    "--workers", "1") == 0
    preds = base / "Vorhersagen é"
    for variant in ("dual", "single-oa"):
        run = base / f"Läufe {variant}"
        assert run_main(monkeypatch, "train", "--data", str(cohort), "--backbone", "resnet3d", "--variant", variant,
                        "--out", str(run), "--epochs", "1", "--input-size", "16", "--width", "4", "--batch-size",
                        "4", "--device", "cpu") == 0
        assert run_main(monkeypatch, "predict", "--checkpoint", str(run / "checkpoints" / "last.safetensors"),
                        "--data", str(cohort), "--out", str(preds), "--embeddings", "--device", "cpu") == 0
    assert run_main(monkeypatch, "stats", str(preds), "--out", str(base / "Statistik ß.csv"), "--resamples", "20") == 0
    assert run_main(monkeypatch, "latent", str(preds), "--out", str(base / "Latent Ø")) == 0
    checkpoint = base / "Läufe dual" / "checkpoints" / "last.safetensors"
    parts = [base / f"Teil {i} ø.csv" for i in range(2)]
    for i, part in enumerate(parts):
        assert run_main(monkeypatch, "score", str(cohort / "imagesTs"), "--checkpoint", str(checkpoint), "--out",
                        str(part), "--shard", f"{i}/2", "--saliency", str(base / "Karten æ"), "--workers", "0",
                        "--device", "cpu") == 0
    assert run_main(monkeypatch, "merge", str(base / "Alle Ærø.csv"), *map(str, parts)) == 0
    rows = read_scores(base / "Alle Ærø.csv")
    assert len(rows) == 4 and all(r["status"] == "ok" and Path(r["saliency_path"]).is_file() for r in rows)
    image = sorted((cohort / "imagesTs").iterdir())[0]
    mask = sorted((cohort / "labelsTs").iterdir())[0]
    proc = run_cli("grade", str(image), "--checkpoint", str(checkpoint), "--mask", str(mask), "--saliency-out",
                   str(base / "Karte ä.nii.gz"), "--result-json", str(base / "Ergebnis ö.json"), "--device", "cpu",
                   env={"LC_ALL": "C", "LANG": "C", "KNEEOA_PROGRESS": "none"})
    assert proc.returncode == 0, proc.stderr
    assert (base / "Karte ä.nii.gz").is_file() and (base / "Ergebnis ö.json").is_file()

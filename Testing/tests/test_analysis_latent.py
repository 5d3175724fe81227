"""Latent geometry on synthetic embeddings whose first principal axis is the severity by construction."""

import csv
from pathlib import Path

import numpy as np
import pytest

from kneeoa.analysis.latent import analyse_embeddings, read_embeddings
from kneeoa.cli import main
from kneeoa.errors import InputError


def _write_npz(path: Path, name: str, seed: int = 0, flip: bool = False, dim: int = 8) -> Path:
    """Embeddings = severity along one random direction (large variance) + small isotropic noise."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    arrays = {"name": np.array(name)}
    for split, n in (("train", 60), ("test", 30)):
        severity = np.linspace(0, 4.99, n)
        kl = np.floor(severity).astype(np.int64)
        emb = severity[:, None] * direction[None, :] * 3.0 + rng.normal(0, 0.3, (n, dim))
        arrays[f"{split}_embedding"] = (-emb if flip else emb).astype(np.float32)
        arrays[f"{split}_kl"] = kl
        arrays[f"{split}_case_id"] = np.array([f"{split}_{i:03d}" for i in range(n)])
        arrays[f"{split}_true_severity"] = severity
    np.savez(path, **arrays)
    return path


def test_pc1_follows_the_built_in_severity_axis(tmp_path):
    result = analyse_embeddings(read_embeddings(_write_npz(tmp_path / "e.npz", "resnet3d_dual")))
    row = result["row"]
    assert (row["backbone"], row["variant"], row["dim"]) == ("resnet3d", "dual", 8)
    assert row["evr_pc1"] > 0.8
    assert row["rho_pc1_kl"] > 0.9  # oriented to rise with KL
    assert row["abs_rho_pc1_true_severity"] > 0.95
    assert row["abs_rho_pc1_oa"] > 0.6
    assert row["probe_auroc_test"] > 0.95
    assert row["centroid_order"] == "0<1<2<3<4" and row["centroid_monotone"] is True
    assert result["test_pc"].shape == (30, 2)


def test_the_sign_of_the_embedding_does_not_change_the_numbers(tmp_path):
    a = analyse_embeddings(read_embeddings(_write_npz(tmp_path / "a.npz", "m3t_single_kl")))["row"]
    b = analyse_embeddings(read_embeddings(_write_npz(tmp_path / "b.npz", "m3t_single_kl", flip=True)))["row"]
    for key in ("evr_pc1", "rho_pc1_kl", "abs_rho_pc1_kl", "probe_auroc_test", "centroid_order"):
        assert a[key] == pytest.approx(b[key], abs=1e-6) if isinstance(a[key], float) else a[key] == b[key]


def test_scrambled_kl_gives_a_non_monotone_centroid_order(tmp_path):
    path = _write_npz(tmp_path / "e.npz", "mamba_single_oa")
    data = dict(np.load(path))
    data["test_kl"] = np.array([0, 3, 1, 4, 2])[data["test_kl"]]  # grades no longer follow the axis
    np.savez(path, **data)
    row = analyse_embeddings(read_embeddings(path))["row"]
    assert row["centroid_monotone"] is False
    assert row["abs_rho_pc1_kl"] < 0.6


def test_latent_cli_writes_summary_points_and_grid(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    _write_npz(folder / "resnet3d_dual_embeddings.npz", "resnet3d_dual", seed=1)
    _write_npz(folder / "resnet3d_single_oa_embeddings.npz", "resnet3d_single_oa", seed=2)
    out = tmp_path / "latent"
    assert main(["latent", str(folder), "--out", str(out)]) == 0
    with open(out / "latent_summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["resnet3d_dual", "resnet3d_single_oa"]
    assert all(float(r["abs_rho_pc1_kl"]) > 0.9 for r in rows)
    with open(out / "latent_points.csv", newline="") as fh:
        points = list(csv.DictReader(fh))
    assert len(points) == 2 * (60 + 30) and points[0]["case_id"] == "train_000"
    assert (out / "pca_grid.png").read_bytes()[:4] == b"\x89PNG"
    assert "resnet3d_dual" in capsys.readouterr().out


def test_an_npz_without_test_embeddings_is_an_input_error(tmp_path):
    path = tmp_path / "broken_embeddings.npz"
    np.savez(path, train_embedding=np.zeros((4, 3)), train_kl=np.zeros(4))
    with pytest.raises(InputError, match="test_embedding") as err:
        read_embeddings(path)
    assert err.value.path == path


def test_mismatched_lengths_are_an_input_error(tmp_path):
    path = _write_npz(tmp_path / "e.npz", "resnet3d_dual")
    data = dict(np.load(path))
    data["test_kl"] = data["test_kl"][:-1]
    np.savez(path, **data)
    with pytest.raises(InputError, match="test_kl has 29 entries"):
        read_embeddings(path)

"""Fuzz every file reader other than the volume readers (those: test_data_fuzz.py) with mutated and
truncated copies of valid files: a reader either returns or raises a KneeOAError naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import tiny_checkpoint

from kneeoa.errors import KneeOAError


def _seed_files(folder: Path) -> dict[str, tuple[Path, Callable[[Path], object]]]:
    """reader name -> (a valid file for it, the reader)."""
    import torch

    from kneeoa.analysis.compare import read_predictions
    from kneeoa.analysis.latent import read_embeddings
    from kneeoa.config import load_config, resolve_config, save_config
    from kneeoa.data.oaizib import read_knee_sides
    from kneeoa.data.tables import read_table, write_table
    from kneeoa.engine.score_io import read_scores, write_scores
    from kneeoa.engine.state import load_trainer_state, save_trainer_state
    from kneeoa.models.checkpoint import load_checkpoint, read_card
    from kneeoa.slicer.grading import read_card_header

    rows = [{"case_id": f"k{i}", "kl": i % 5, "note": "a, \"quoted\" note"} for i in range(4)]
    checkpoint = tiny_checkpoint(folder / "seed.safetensors", shape=(8, 8, 8))
    model, _ = load_checkpoint(checkpoint)
    optimizer = torch.optim.AdamW(model.parameters())
    save_trainer_state(folder / "seed_state.safetensors", model, optimizer, None, 1, False)
    np.savez(folder / "seed_embeddings.npz", train_embedding=np.ones((4, 3)), train_kl=np.arange(4),
             test_embedding=np.ones((2, 3)), test_kl=np.arange(2), name=np.array("m"))
    write_scores(folder / "seed_scores.csv", [{"case_id": "k0", "path": "/x/k0.nii.gz", "status": "ok", "oa_prob": "0.5"}])
    (folder / "seed_preds.csv").write_text("CMT_ID,label_kl,label_oa,prob_oa,pred_oa\n1,2,1,0.8,1\n2,0,0,0.1,0\n")
    (folder / "seed_sides.csv").write_text("oaizib_001.nii.gz,right\noaizib_002.nii.gz,left\n")
    save_config(folder / "seed_config.yaml", resolve_config("quick", "resnet3d", "dual"))
    return {
        "csv table": (write_table(folder / "seed.csv", rows, ["case_id", "kl", "note"]), read_table),
        "xlsx table": (write_table(folder / "seed.xlsx", rows, ["case_id", "kl", "note"]), read_table),
        "checkpoint": (checkpoint, load_checkpoint),
        "model card": (checkpoint, read_card),
        "Slicer card header": (checkpoint, read_card_header),
        "trainer state": (folder / "seed_state.safetensors", load_trainer_state),
        "embeddings": (folder / "seed_embeddings.npz", read_embeddings),
        "scores table": (folder / "seed_scores.csv", read_scores),
        "predictions": (folder / "seed_preds.csv", read_predictions),
        "knee sides": (folder / "seed_sides.csv", read_knee_sides),
        "run config": (folder / "seed_config.yaml", load_config),
    }


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("fuzz_readers")
    files = _seed_files(folder)
    return folder, {name: (path.read_bytes(), path.suffix, reader) for name, (path, reader) in files.items()}


READERS = ["csv table", "xlsx table", "checkpoint", "model card", "Slicer card header", "trainer state",
           "embeddings", "scores table", "predictions", "knee sides", "run config"]
mutation = st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255))


@pytest.mark.parametrize("reader_name", READERS)
def test_each_seed_file_is_read(seeds, reader_name, tmp_path):
    _, files = seeds
    data, suffix, reader = files[reader_name]
    path = tmp_path / f"copy{suffix}"
    path.write_bytes(data)
    reader(path)


@pytest.mark.parametrize("reader_name", READERS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(flips=st.lists(mutation, max_size=6), keep=st.floats(0, 1), random_bytes=st.none() | st.binary(max_size=400))
def test_readers_raise_only_kneeoa_errors(seeds, reader_name, flips, keep, random_bytes):
    folder, files = seeds
    data, suffix, reader = files[reader_name]
    data = bytearray(data if random_bytes is None else random_bytes)
    for where, value in flips:
        if data:
            data[int(where * len(data))] = value
    if keep < 0.3:  # a third of the cases are also cut short
        data = data[: int(keep / 0.3 * len(data))]
    path = folder / f"mutant{suffix}"
    path.write_bytes(bytes(data))
    try:
        reader(path)
    except KneeOAError as err:
        assert str(path) in str(err), f"{reader_name}: {err}"


"""The scoring feed: worker planning, the device path's items, the bounded decode thread, grouped fsyncs,
and scores identical to the path before issue 20 (within float rounding)."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import tiny_checkpoint, volume_folder

from kneeoa.data.preprocess import preprocess_volume
from kneeoa.data.volume import read_volume, write_nifti
from kneeoa.engine import feed
from kneeoa.engine.score import score_folder
from kneeoa.engine.score_io import RowWriter, ensure_header, format_row, read_scores

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("datapath_reference", REPO / "benchmarks/baselines/datapath_reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "dual.safetensors", "dual")


@pytest.mark.parametrize("device, cores, decode_s, step_s, expected", [
    ("cuda", 16, 0.12, 0.01, 12),           # a GPU 12x faster than one core decodes: 12 workers
    ("cuda", 16, 0.12, 0.001, 15),          # ...never more than the cores but the feeding one
    ("cuda", 64, 0.5, 0.001, feed.MAX_WORKERS),
    ("cuda", 1, 0.12, 0.01, 0),             # one core: decode in turn
    ("cuda", 8, 0.001, 0.01, 1),            # cheap volumes: one worker keeps up
    ("cpu", 8, 0.05, 0.01, 4),              # the CPU model keeps half the cores
    ("cpu", 8, 0.01, 0.05, 1),
    ("cpu", 2, 0.01, 0.05, feed.DECODE_THREAD),  # two cores: a decode thread, no process
    ("cpu", 2, 0.0001, 0.05, 0),            # negligible decoding: nothing to overlap
])
def test_workers_are_planned_from_cores_and_measured_times(device, cores, decode_s, step_s, expected):
    assert feed.plan_workers(device, decode_s, step_s, cores=cores) == expected


def test_loading_cores_follow_the_affinity_mask_and_local_ranks(monkeypatch):
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity masks on this platform")
    mask = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert feed.cores_for_loading() == mask
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(2 * mask))
    assert feed.cores_for_loading() == 1


def test_a_device_item_carries_stored_voxels_that_preprocess_like_the_cpu_path(tmp_path):
    data = (np.random.default_rng(0).normal(500, 80, (22, 18, 14))).astype(np.int16)
    affine = np.diag([-0.6, 0.5, 1.1, 1.0])
    import nibabel as nib

    path = tmp_path / "int16.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    for reorient in ("ras", "none"):
        spec = feed.InputSpec((10, 12, 9), reorient)
        item = feed.VolumeFeed([("a", str(path))], spec, on_device=True)[0]
        assert item["error"] == "" and item["raw"].dtype == torch.int16 and item["image"] is None
        assert item["raw"].is_contiguous()  # NIfTI is Fortran-ordered: its transpose is handed over
        x = feed.model_input(item, spec, "cpu")
        expected = preprocess_volume(read_volume(path), (10, 12, 9), reorient=reorient)
        torch.testing.assert_close(x, expected, atol=2e-5, rtol=1e-5)


def test_an_input_that_overflows_when_z_scored_is_an_error_of_its_own(tmp_path):
    huge = write_nifti(tmp_path / "huge.nii", np.full((8, 8, 8), 3e38, np.float32) * np.linspace(0.9, 1, 8), np.eye(4))
    spec = feed.InputSpec((4, 4, 4))
    items = [feed.VolumeFeed([("h", str(huge))], spec, on_device=True)[0]]
    good, x = feed.stack_inputs(items, spec, "cpu")
    assert good == [] and x is None and "overflow" in items[0]["error"] and str(huge) in items[0]["error"]


def test_a_bad_volume_is_an_error_item_not_an_exception(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    for on_device in (False, True):
        item = feed.VolumeFeed([("bad", str(bad))], feed.InputSpec((8, 8, 8)), on_device=on_device)[0]
        assert str(bad) in item["error"] and item["image"] is None and item["raw"] is None


def test_the_decode_thread_keeps_order_stays_bounded_and_raises_in_order():
    produced = []

    def source(n, fail_at=None):
        for k in range(n):
            if k == fail_at:
                raise ValueError(f"volume {k} failed")
            produced.append(k)
            yield k

    it = feed.threaded(source(50), depth=2)
    assert next(it) == 0
    time.sleep(0.2)
    assert len(produced) <= 4  # one handed out, two queued, one waiting to be put
    assert list(it) == list(range(1, 50))
    with pytest.raises(ValueError, match="volume 3 failed"):
        list(feed.threaded(source(10, fail_at=3), depth=2))


def test_a_consumer_that_stops_early_stops_the_thread():
    before = threading.active_count()
    it = feed.threaded(iter(range(1000)), depth=2)
    next(it)
    it.close()
    time.sleep(0.3)
    assert threading.active_count() == before


def test_rows_are_written_at_once_and_fsynced_in_groups(tmp_path, monkeypatch):
    import os

    syncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (syncs.append(fd), real_fsync(fd)))
    table = tmp_path / "s.csv"
    ensure_header(table)
    syncs.clear()
    with RowWriter(table, sync_every_s=3600) as rows:
        for k in range(20):
            rows.write(format_row({"case_id": f"c{k}", "path": "p", "status": "ok"}))
            assert len(read_scores(table)) == k + 1  # a killed process would lose none of these
        assert syncs == []  # no fsync per row...
    assert len(syncs) == 1  # ...one when the group (here: the run) ends
    syncs.clear()
    with RowWriter(table, sync_every_s=0.0) as rows:
        rows.write(format_row({"case_id": "x", "path": "p", "status": "ok"}))
    assert len(syncs) == 1  # a zero interval syncs every row, and closing adds nothing new to sync


def test_scores_equal_the_previous_path_within_float_rounding(tmp_path, checkpoint):
    from kneeoa.engine.inference import input_shape_of, load_model

    folder = tmp_path / "cohort"
    files = volume_folder(folder, 5, shape=(26, 21, 17))
    affine = np.diag([-0.7, 0.5, -0.6, 1.0])[[1, 0, 2, 3]]  # permuted and flipped axes
    files.append(write_nifti(folder / "knee_9.nii.gz", np.random.default_rng(3).normal(50, 9, (15, 19, 23)),
                             affine))
    model, card = load_model(checkpoint, torch.device("cpu"))
    reference.score_reference(sorted(files), model, input_shape_of(model, card), tmp_path / "before.csv")
    before = {Path(r["path"]).name: r for r in read_scores(tmp_path / "before.csv")}
    for workers in (0, feed.DECODE_THREAD, None):
        out = tmp_path / f"now_{workers}.csv"
        score_folder(folder, checkpoint, out, device="cpu", workers=workers)
        rows = read_scores(out)
        assert len(rows) == 6
        for row in rows:
            old = before[Path(row["path"]).name]
            for col in ("oa_prob", *[f"kl_prob_{g}" for g in range(5)]):
                assert abs(float(row[col]) - float(old[col])) < 1e-5, (col, row, old)
            assert row["pred_kl"] == old["pred_kl"] and row["pred_oa"] == old["pred_oa"]


def test_predict_through_the_feed_equals_the_cached_path_and_the_previous_preprocessing(tmp_path, checkpoint):
    from kneeoa.data.cohort import Case
    from kneeoa.engine.inference import input_shape_of, load_model, predict_cases

    files = volume_folder(tmp_path / "c", 4, shape=(23, 19, 17))
    cases = [Case(case_id=f"k{i}", image=p, kl=i % 5) for i, p in enumerate(files)]
    model, card = load_model(checkpoint, torch.device("cpu"))
    shape = input_shape_of(model, card)
    fed = predict_cases(model, cases, shape, torch.device("cpu"), batch_size=3)
    cached = predict_cases(model, cases, shape, torch.device("cpu"), batch_size=2, cache_dir=tmp_path / "cache")
    assert fed["case_id"] == cached["case_id"] == [c.case_id for c in cases]
    np.testing.assert_array_equal(fed["kl"], cached["kl"])
    np.testing.assert_allclose(fed["oa_prob"], cached["oa_prob"], atol=1e-6)
    with torch.no_grad():
        before = [model(reference.preprocess_reference(*reference.read_reference(p), shape)[None]) for p in files]
    from kneeoa.models.heads import probabilities

    old = np.array([float(probabilities(out)["oa_prob"].reshape(-1)[0]) for out in before])
    np.testing.assert_allclose(fed["oa_prob"], old, atol=1e-5)


def test_an_unreadable_case_stops_an_evaluation_with_its_name(tmp_path, checkpoint):
    from kneeoa.data.cohort import Case
    from kneeoa.engine.inference import load_model, predict_cases
    from kneeoa.errors import InputError

    files = volume_folder(tmp_path / "c", 2)
    files[1].write_bytes(files[1].read_bytes()[:100])
    model, card = load_model(checkpoint, torch.device("cpu"))
    with pytest.raises(InputError, match=files[1].name):
        predict_cases(model, [Case(case_id=f"k{i}", image=p, kl=1) for i, p in enumerate(files)], (16, 16, 16),
                      torch.device("cpu"))


def test_batches_are_formed_from_single_volumes_in_order(tmp_path):
    files = volume_folder(tmp_path / "c", 5, shape=(12, 10, 9))
    items = [(f"k{i}", str(p)) for i, p in enumerate(files)]
    for workers in (0, feed.DECODE_THREAD):
        batches = list(feed.iterate_batches(items, feed.InputSpec((6, 6, 6)), "cpu", workers, batch_size=2))
        assert [[item["key"] for item in b] for b in batches] == [["k0", "k1"], ["k2", "k3"], ["k4"]]

"""Robustness class 2: small inputs cannot exhaust memory or hang.

memory_cases.py generates the inputs: gzip bombs, headers that lie about their datatype or size, raw
NRRD/MetaImage files declaring gigabytes, workbooks whose <dimension> or one far cell claims a whole
sheet, YAML billion-laughs / deep nesting / thousand-digit numbers, model cards with Infinity, NaN,
strings, negatives or absurd sizes, and cards nested 100,000 deep. One subprocess reads them all under
an address-space cap (RLIMIT_AS) and reports, per case, the message, the time and the peak memory it
added; each must be one KneeOAError line naming the file, within seconds, with memory far below 2x the
legitimate working set. Named pipes and devices in a cohort folder, and MemoryError in the CLI, too.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import run_main
from memory_cases import absurd_presets, card_cases, random_array, table_cases, volume_cases, yaml_cases
from reliability_helpers import assert_one_clear_error, tiny_checkpoint

from kneeoa.data.volume import write_nifti

AS_LIMIT = 3 << 30  # address space for the whole reader process: torch + monai alone map ~1.2 GB
PEAK_LIMIT_MB = 100  # resident memory one case may add (reading a 16^3 volume legitimately adds ~5 MB)
SECONDS = 5.0

DRIVER = r'''
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from kneeoa.data.tables import read_table
from kneeoa.data.volume import read_volume
from kneeoa.errors import KneeOAError
from kneeoa.engine.inference import load_model
from kneeoa.slicer.grading import read_card_header
from kneeoa.utils.safe_yaml import load_yaml
def hwm():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024
readers = {"volume": read_volume, "table": read_table, "yaml": load_yaml, "checkpoint": lambda p: load_model(p, "cpu"),
           "slicer-card": read_card_header}
import SimpleITK, torch  # noqa: first use of ITK and torch maps their libraries: not a case's cost
load_model(sys.argv[3], "cpu")
read_volume(sys.argv[4])
out = []
for path, kind in json.load(open(sys.argv[2])):
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    base, t0 = hwm(), time.perf_counter()
    try:
        value = readers[kind](path)
        message = f"ok:{len(value)}" if kind == "table" else "ok"
    except KneeOAError as err:
        message = str(err)
    except BaseException as err:
        message = f"ESCAPED {type(err).__name__}: {err}"[:300]
    out.append({"path": path, "kind": kind, "message": message, "seconds": time.perf_counter() - t0,
                "added_mb": hwm() - base})
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture(scope="module")
def cases(tmp_path_factory, checkpoint) -> list[tuple[Path, str, str]]:
    root = tmp_path_factory.mktemp("memory")
    cards = card_cases(checkpoint, root / "cards")
    slicer = [(path, "slicer-card", "nested too deeply") for path, _, match in cards if "deep_" in path.name]
    return [*volume_cases(root / "volumes"), *table_cases(root / "tables"), *yaml_cases(root / "yaml"),
            *cards, *slicer]


@pytest.fixture(scope="module")
def report(cases, checkpoint, tmp_path_factory) -> dict[str, dict]:
    from kneeoa.data.volume import Volume, write_volume

    folder = tmp_path_factory.mktemp("driver")
    listing = folder / "cases.json"
    listing.write_text(json.dumps([[str(p), kind] for p, kind, _ in cases]))
    warm = write_volume(folder / "warm.nrrd", Volume(random_array(), np.eye(4)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(AS_LIMIT), str(listing), str(checkpoint), str(warm)],
                          capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {(r["path"], r["kind"]): r for r in json.loads(proc.stdout.strip().splitlines()[-1])}


def test_the_generator_covers_every_class_with_many_cases(cases):
    kinds = {kind: sum(1 for _, k, _ in cases if k == kind) for _, kind, _ in cases}
    assert kinds["volume"] >= 20 and kinds["table"] >= 7 and kinds["yaml"] >= 15 and kinds["checkpoint"] >= 20


@pytest.mark.slow
def test_every_case_is_one_clear_line_within_seconds_and_little_memory(cases, report):
    failures = []
    for path, kind, match in cases:
        r = report[(str(path), kind)]
        message = r["message"]
        named = message.startswith("ok") or str(path) in message
        if not (named and re.search(match, message) and "\n" not in message and "ESCAPED" not in message
                and r["seconds"] < SECONDS and r["added_mb"] < PEAK_LIMIT_MB):
            failures.append(f"{path.name} [{kind}]: {message[:200]} ({r['seconds']:.2f} s, +{r['added_mb']} MB)")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("index", [0, 4, 12, 16, 19])
def test_grade_refuses_an_absurd_card_with_one_line(cases, index, tmp_path, monkeypatch, capsys):
    card = next(p for p, _, _ in cases if p.name == f"card_{index}.safetensors")
    image = write_nifti(tmp_path / "knee.nii.gz", random_array(), np.eye(4))
    rc = run_main(monkeypatch, "grade", str(image), "--checkpoint", str(card), "--result-json",
                  str(tmp_path / "r.json"), "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", card)


def test_train_refuses_a_billion_laughs_preset_with_one_line(cases, phantom_cohort, tmp_path, monkeypatch, capsys):
    preset = next(p for p, _, _ in cases if p.name == "laughs_12.yaml")
    rc = run_main(monkeypatch, "train", "--data", str(phantom_cohort), "--preset", str(preset), "--backbone", "resnet3d",
                  "--variant", "dual", "--out",
                  str(tmp_path / "run"))
    assert_one_clear_error(rc, capsys.readouterr().err, "train", preset, "aliases")
    assert not (tmp_path / "run").exists()


def test_train_refuses_presets_with_absurd_sizes_in_one_line_before_allocating(phantom_cohort, tmp_path,
                                                                               monkeypatch, capsys):
    import time

    for preset, key in absurd_presets(tmp_path / "presets"):
        t0 = time.perf_counter()
        rc = run_main(monkeypatch, "train", "--data", str(phantom_cohort), "--preset", str(preset), "--backbone",
                      "resnet3d", "--variant", "dual", "--out", str(tmp_path / "run"), "--device", "cpu")
        assert_one_clear_error(rc, capsys.readouterr().err, "train", preset,
                               {"options": "layers"}.get(key, key.split("_")[0]))
        assert time.perf_counter() - t0 < 10 and not (tmp_path / "run").exists()


def _special_files(folder: Path) -> list[Path]:
    """A named pipe and links to character devices, each named like a volume."""
    fifo = folder / "knee_pipe.nii.gz"
    os.mkfifo(fifo)
    zero, rand = folder / "knee_zero.nii", folder / "knee_random.nrrd"
    zero.symlink_to("/dev/zero")
    rand.symlink_to("/dev/urandom")
    return [fifo, zero, rand]


def test_named_pipes_and_devices_in_a_cohort_are_error_rows_not_a_hang(checkpoint, tmp_path, monkeypatch):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for k in range(2):
        write_nifti(folder / f"knee_{k}.nii.gz", random_array(seed=k), np.eye(4))
    special = _special_files(folder)
    out = tmp_path / "scores.csv"
    assert run_main(monkeypatch, "score", str(folder), "--checkpoint", str(checkpoint), "--out", str(out),
                    "--device", "cpu") == 0
    rows = {r["case_id"]: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert [rows[f"knee_{k}"]["status"] for k in range(2)] == ["ok", "ok"]
    for path in special:
        row = next(r for r in rows.values() if r["path"] == str(path))
        assert row["status"] == "error" and "not a regular file" in row["error"], row


@pytest.mark.parametrize("which", [0, 1, 2])
def test_grade_on_a_named_pipe_or_device_is_one_line(checkpoint, which, tmp_path, monkeypatch, capsys):
    path = _special_files(tmp_path)[which]
    rc = run_main(monkeypatch, "grade", str(path), "--checkpoint", str(checkpoint), "--result-json",
                  str(tmp_path / "r.json"), "--device", "cpu")
    assert_one_clear_error(rc, capsys.readouterr().err, "grade", path, "not a regular file")


OOM_DRIVER = r'''
import contextlib, io, json, resource, sys
from kneeoa.cli import main
def grade(image, out):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["grade", image, "--checkpoint", sys.argv[2], "--result-json", out, "--device", "cpu"])
    return [rc, err.getvalue()]
if grade(sys.argv[1], sys.argv[3])[0]:
    sys.exit("the warm-up grade failed")
# everything is imported and warm: now allow only 200 MB more address space than this process maps
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (200 << 20), size + (200 << 20)))
print(json.dumps([grade(sys.argv[4], sys.argv[6]), grade(sys.argv[5], sys.argv[6])]))
'''


@pytest.mark.slow
def test_a_gzip_bomb_and_running_out_of_memory_are_one_line_each(cases, checkpoint, tmp_path):
    """Under 200 MB of spare address space: a 1 GiB gzip bomb is refused by its budget (one line naming it),
    a legitimate 400^3 volume (64 MB uint8, 256 MB as float32) runs out of memory (one line)."""
    import nibabel as nib

    bomb = next(p for p, _, _ in cases if p.name == "bomb_1024.nii.gz")
    small = write_nifti(tmp_path / "small.nii.gz", random_array(), np.eye(4))
    big = tmp_path / "big.nii"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).integers(0, 255, (400, 400, 400), dtype=np.uint8),
                             np.eye(4)), str(big))
    proc = subprocess.run([sys.executable, "-c", OOM_DRIVER, str(small), str(checkpoint), str(tmp_path / "a.json"),
                           str(bomb), str(big), str(tmp_path / "b.json")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0 and (tmp_path / "a.json").exists(), proc.stderr[-2000:]
    (bomb_rc, bomb_err), (big_rc, big_err) = json.loads(proc.stdout.strip().splitlines()[-1])
    assert_one_clear_error(bomb_rc, bomb_err, "grade", bomb, "inflates to more than")
    assert_one_clear_error(big_rc, big_err, "grade", None, "memory")
    assert not (tmp_path / "b.json").exists()

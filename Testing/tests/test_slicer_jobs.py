"""Background jobs: command lines, JSON progress lines, errors, and cancel that stops the whole process tree."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

from kneeoa.slicer import jobs
from kneeoa.utils.processes import alive


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def test_grade_command_has_progress_json_and_every_given_option():
    argv = jobs.grade_command("img.nii.gz", "model.safetensors", "r.json", mask="m.nii.gz",
                              saliency_out="s.nii.gz", saliency_method="gradcam", target="kl", device="cpu",
                              python="/opt/Slicer/bin/PythonSlicer")
    assert argv[:6] == ["/opt/Slicer/bin/PythonSlicer", "-m", "kneeoa", "--progress", "json", "grade"]
    assert argv[6:] == ["img.nii.gz", "--checkpoint", "model.safetensors", "--mask", "m.nii.gz",
                        "--saliency-out", "s.nii.gz", "--saliency-method", "gradcam", "--target", "kl",
                        "--device", "cpu", "--result-json", "r.json"]


def test_grade_command_leaves_out_defaults_and_absent_inputs():
    argv = jobs.grade_command("img.nii.gz", "c.safetensors", "r.json", saliency_method="smoothgrad",
                              target="auto", device="auto", python="py")
    assert argv == ["py", "-m", "kneeoa", "--progress", "json", "grade", "img.nii.gz", "--checkpoint",
                    "c.safetensors", "--result-json", "r.json"]


def test_job_environment_makes_this_kneeoa_importable_first_and_asks_for_json():
    env = jobs.job_environment({"PYTHONPATH": "/elsewhere", "HOME": "/h"}, kneeoa_root="/ext/lib")
    assert env["PYTHONPATH"].split(os.pathsep) == ["/ext/lib", "/elsewhere"]
    assert env["KNEEOA_PROGRESS"] == "json" and env["HOME"] == "/h"


def test_json_progress_lines_become_events_and_other_lines_text():
    assert jobs.parse_line('{"event": "progress", "task": "grade", "done": 2, "total": 8}\n') == \
        {"event": "progress", "task": "grade", "done": 2, "total": 8}
    assert jobs.parse_line("UserWarning: something\n") == {"event": "text", "message": "UserWarning: something"}
    assert jobs.parse_line('{"not": "an event"}')["event"] == "text"
    assert jobs.parse_line("{broken json")["event"] == "text"


def test_fraction_done_from_progress_and_end_events():
    assert jobs.fraction_done({"event": "progress", "done": 3, "total": 4}) == 0.75
    assert jobs.fraction_done({"event": "progress", "done": 3, "total": None}) is None
    assert jobs.fraction_done({"event": "end", "ok": True}) == 1.0
    assert jobs.fraction_done({"event": "log", "message": "x"}) is None


def test_job_streams_events_from_a_real_kneeoa_progress_child(tmp_path):
    argv = _script(tmp_path, "child.py", """
        from kneeoa.progress import Progress, emit
        with Progress("grade", total=4) as p:
            for i in range(4):
                p.update(1, loss=0.5)
            p.log("halfway")
        emit("result", oa_prob=0.7)
        print("plain line")
    """)
    job = jobs.Job(argv, env=jobs.job_environment()).start()
    events = []
    assert job.wait(events.append, timeout_s=60) == 0
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "progress", "progress", "progress", "progress", "log", "end", "result", "text"]
    assert job.fraction == 1.0 and job.result["oa_prob"] == 0.7
    assert events[4]["done"] == 4 and events[4]["total"] == 4


def test_failed_job_reports_the_kneeoa_error_line(tmp_path):
    argv = _script(tmp_path, "fail.py", """
        import sys
        print("loading", flush=True)
        print("kneeoa grade: error: /data/x.nii.gz: constant image", file=sys.stderr)
        sys.exit(1)
    """)
    job = jobs.Job(argv).start()
    assert job.wait(timeout_s=60) == 1
    assert job.error_message() == "/data/x.nii.gz: constant image"


def test_poll_never_blocks_while_the_child_is_quiet(tmp_path):
    argv = _script(tmp_path, "quiet.py", "import time; time.sleep(30)\n")
    job = jobs.Job(argv).start()
    try:
        started = time.monotonic()
        assert job.poll() == [] and job.running
        assert time.monotonic() - started < 0.5
    finally:
        job.cancel()
    assert not job.running and job.cancelled


def _gone(pid, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("new_session", [False, True], ids=["same-group", "grandchild-own-session"])
def test_cancel_stops_child_and_grandchild(tmp_path, new_session):
    # Like PythonSlicer: a launcher whose child does the work. The grandchild may even start its own
    # session (leave the process group); it must still be stopped.
    argv = _script(tmp_path, "launcher.py", f"""
        import json, os, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                      start_new_session={new_session})
        print(json.dumps({{"event": "log", "message": "started", "grandchild": grandchild.pid,
                          "token": os.environ["KNEEOA_PROGRESS_TOKEN"]}}), flush=True)
        time.sleep(120)
    """)
    job = jobs.Job(argv).start()
    grandchild = None
    deadline = time.monotonic() + 30
    while grandchild is None and time.monotonic() < deadline:
        for event in job.poll():
            grandchild = event.get("grandchild", grandchild)
        time.sleep(0.05)
    assert grandchild is not None and alive(grandchild)
    child = job.process.pid
    job.cancel(grace_s=1.0)
    assert _gone(child) and _gone(grandchild)
    assert job.cancelled and job.returncode is not None


def test_outside_slicer_the_job_environment_builds_on_this_process(monkeypatch):
    monkeypatch.setenv("KNEEOA_TEST_MARK", "kept")
    env = jobs.slicer_job_environment()
    assert env["KNEEOA_TEST_MARK"] == "kept" and env["KNEEOA_PROGRESS"] == "json"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(jobs.KNEEOA_ROOT)


def test_console_wait_keeps_the_slicer_gui_responsive(tmp_path, monkeypatch):
    """Waiting on a job from Slicer's console processes GUI events in the loop (no frozen window)."""
    import types

    class AppStandIn:  # stand-in for slicer.app (the Qt application is not in slicer-core)
        calls = 0

        def processEvents(self):
            AppStandIn.calls += 1

    monkeypatch.setitem(sys.modules, "slicer", types.SimpleNamespace(app=AppStandIn()))
    argv = _script(tmp_path, "slow.py", "import time; time.sleep(0.6); print('done')")
    assert jobs.Job(argv).start().wait(timeout_s=30, interval_s=0.05) == 0
    assert AppStandIn.calls >= 5


def test_without_an_application_waiting_processes_no_events(monkeypatch):
    monkeypatch.delitem(sys.modules, "slicer", raising=False)
    assert jobs.process_gui_events() is False


def test_jobs_take_a_thread_count_that_the_child_kneeoa_uses(tmp_path):
    """A job's threads reach the child's thread choice (KNEEOA_THREADS), with passive OpenMP waiting."""
    env = jobs.job_environment(threads=3)
    assert env["KNEEOA_THREADS"] == "3" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    argv = _script(tmp_path, "threads.py", """
        import os
        os.environ.pop("OMP_NUM_THREADS", None)
        from kneeoa.threads import configure_threads
        print("threads", configure_threads(announce=False), os.environ["OMP_NUM_THREADS"])
    """)
    job = jobs.Job(argv, env=env).start()
    events = []
    assert job.wait(events.append, timeout_s=60) == 0
    assert [e["message"] for e in events if e["event"] == "text"] == ["threads 3 3"]
    with pytest.raises(ValueError):
        jobs.job_environment(threads=0)


def test_without_a_thread_setting_jobs_use_the_kneeoa_default():
    env = jobs.job_environment({"HOME": "/h"})
    assert "KNEEOA_THREADS" not in env  # the child picks half the cores (kneeoa.threads.default_threads)

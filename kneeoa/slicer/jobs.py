"""Run `kneeoa` commands in a background process: command lines, JSON progress, cancel.

Standard library only, and no Qt: the Slicer widget polls `Job.poll()` from a QTimer, the console
logic calls `Job.wait()`. The child starts in its own process group (POSIX session / Windows
process group) so Cancel can stop the whole tree: Slicer's `PythonSlicer` is a launcher that
starts the real interpreter, and killing only the launcher would leave the model running.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kneeoa.errors import JobError
from kneeoa.progress import TOKEN_ENV
from kneeoa.utils.processes import alive

KNEEOA_ROOT = Path(__file__).resolve().parents[2]  # folder that holds the `kneeoa` package


def slicer_python() -> str:
    """The interpreter for background jobs: Slicer's `PythonSlicer` when present, else this Python."""
    here = Path(sys.executable).parent
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        candidate = here / name
        if candidate.is_file():
            return str(candidate)
    return shutil.which("PythonSlicer") or sys.executable


def kneeoa_command(subcommand: str, args: Sequence[str], python: str | None = None) -> list[str]:
    """`python -m kneeoa --progress json SUBCOMMAND ARGS...` as an argv list.

    `Job` starts it with PYTHONSAFEPATH=1 (Python >= 3.11: the working folder is not put on `sys.path`, as
    `-P` does, so a `torch.py` lying there is never imported) and in a safe working folder (older Pythons)."""
    return [python or slicer_python(), "-m", "kneeoa", "--progress", "json", subcommand, *map(str, args)]


def grade_command(image: str | Path, checkpoint: str | Path, result_json: str | Path,
                  mask: str | Path | None = None, saliency_out: str | Path | None = None,
                  saliency_method: str | None = None, target: str | None = None,
                  device: str | None = None, python: str | None = None) -> list[str]:
    """argv of `kneeoa grade IMAGE --checkpoint C [--mask M] [--saliency-out S ...] --result-json R`."""
    args: list[str] = [str(image), "--checkpoint", str(checkpoint)]
    if mask is not None:
        args += ["--mask", str(mask)]
    if saliency_out is not None:
        args += ["--saliency-out", str(saliency_out)]
        if saliency_method:
            args += ["--saliency-method", saliency_method]
    if target and target != "auto":
        args += ["--target", target]
    if device and device != "auto":
        args += ["--device", device]
    args += ["--result-json", str(result_json)]
    return kneeoa_command("grade", args, python)


def job_environment(base: dict[str, str] | None = None, kneeoa_root: str | Path = KNEEOA_ROOT,
                    threads: int | None = None) -> dict[str, str]:
    """Environment for a job: `kneeoa` importable from where this copy lives, JSON progress, unbuffered.

    `threads`: CPU threads of the job (KNEEOA_THREADS, read by every command; kneeoa/threads.py). Unset, the
    job uses the KneeOA default - half the cores - so Slicer's GUI keeps cores to stay responsive.
    """
    env = dict(os.environ if base is None else base)
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        env["KNEEOA_THREADS"] = str(int(threads))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep: the GUI gets the core back
    paths = [str(kneeoa_root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["KNEEOA_PROGRESS"] = "json"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONSAFEPATH"] = "1"  # Python >= 3.11: neither the cwd nor the script folder goes on sys.path
    return env


def safe_cwd() -> Path:
    """The working folder for jobs: the folder that holds our own `kneeoa` package (on PYTHONPATH anyway),
    never the user's current folder, which may hold a `torch.py` or `safetensors.py` that `-m` would import
    on interpreters without PYTHONSAFEPATH (Python < 3.11, e.g. older Slicers)."""
    return KNEEOA_ROOT


def slicer_job_environment(threads: int | None = None) -> dict[str, str]:
    """`job_environment` on Slicer's startup environment inside Slicer (as launchConsoleProcess uses; PythonSlicer
    sets up its own paths), else on this process's."""
    slicer = sys.modules.get("slicer")
    if slicer is not None and hasattr(slicer, "app"):
        import slicer.util

        if threads is None:
            threads = _threads_setting(slicer.app)
        return job_environment(slicer.util.startupEnvironment(), threads=threads)
    return job_environment(dict(os.environ), threads=threads)


THREADS_SETTING = "KneeOA/Threads"  # Slicer application setting (Edit > Application Settings or the console)


def _threads_setting(app: Any) -> int | None:
    """The `KneeOA/Threads` setting (e.g. `slicer.app.settings().setValue("KneeOA/Threads", 2)`), or None."""
    try:
        value = app.settings().value(THREADS_SETTING)
        return int(value) if value not in (None, "") and int(value) >= 1 else None
    except (TypeError, ValueError, AttributeError):
        return None


EVENTS = ("start", "progress", "log", "result", "end")  # what kneeoa.progress emits
_FIELD_TYPES: dict[str, tuple[type, ...]] = {"task": (str,), "done": (int, float), "total": (int, float, type(None)),
                                             "ok": (bool,), "message": (str,), "elapsed_s": (int, float)}


def parse_line(line: str, token: str | None = None) -> dict[str, Any]:
    """One output line -> event dict; anything that is not a well-formed event (warnings, tracebacks,
    `kneeoa grade: error: ...`) becomes {"event": "text", "message": line}.

    Well-formed: one JSON object on the line, a known "event", fields of the right types and, when
    `token` is given, the job's secret token. A file name holding a newline and a JSON object cannot
    forge an event: it does not know the token (and our own lines escape newlines)."""
    text = line.rstrip("\r\n")
    if text.startswith("{") and text.endswith("}"):
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            event = None
        if _well_formed(event) and (token is None or event.get("token") == token):
            event.pop("token", None)
            return event
    return {"event": "text", "message": text}


def _well_formed(event: Any) -> bool:
    """A known event whose standard fields have their types (a bool is not a number here)."""
    if not isinstance(event, dict) or event.get("event") not in EVENTS:
        return False
    for key, types in _FIELD_TYPES.items():
        if key in event:
            value = event[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                return False
    return True


def fraction_done(event: dict[str, Any]) -> float | None:
    """Progress in [0, 1] from a "progress"/"end" event with a known total, else None."""
    if event.get("event") == "end" and event.get("ok", True):
        return 1.0
    done, total = event.get("done"), event.get("total")
    if event.get("event") == "progress" and isinstance(done, (int, float)) and isinstance(total, (int, float)) \
            and total > 0:
        return max(0.0, min(1.0, float(done) / float(total)))
    return None


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (psutil if installed, else /proc on Linux, else none)."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    except Exception:  # psutil.NoSuchProcess and friends: nothing left to find
        return []
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else []:
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_process_tree(pid: int, grace_s: float = 2.0, process: subprocess.Popen | None = None) -> None:
    """Stop `pid` and everything it started: polite signal first, then a hard kill after `grace_s`.

    Pass the `Popen` of a child of ours so it is reaped while we wait (a zombie still answers kill 0
    where there is no /proc, e.g. macOS)."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], capture_output=True, check=False)
        return
    tree = [pid, *descendants(pid)]  # collected first: children are reparented once their parent dies
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(os.getpgid(pid), sig)  # the job's own process group (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass
        for p in tree:  # anything that left the group (e.g. started its own session)
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and _any_alive(tree, process):
            time.sleep(0.05)
        if not _any_alive(tree, process):
            return


def _any_alive(pids: list[int], process: subprocess.Popen | None) -> bool:
    if process is not None and process.poll() is None:
        return True
    return any(alive(p) for p in pids if process is None or p != process.pid)


def wait_until_done(job: Any, on_event: Callable[[dict[str, Any]], None] | None, timeout_s: float | None,
                    interval_s: float, timeout_message: str) -> int:
    """Poll anything job-like (`running`, `poll()`, `cancel()`, `returncode`) until it ends, passing each event
    to `on_event`; past `timeout_s` it is cancelled and TimeoutError(timeout_message) raised."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while job.running:
        for event in job.poll():
            if on_event is not None:
                on_event(event)
        if deadline is not None and time.monotonic() > deadline:
            job.cancel()
            raise TimeoutError(timeout_message)
        process_gui_events()
        time.sleep(interval_s)
    return int(job.returncode or 0)


def check_succeeded(job: Any, what: str, subject: Any, cancelled: str | None = None) -> None:
    """JobError about `subject` unless `job` ended by itself with status 0: still running, cancelled
    (`cancelled`, else "WHAT was cancelled") or failed (its own error line)."""
    if job.running:
        raise JobError(f"the {what} job is still running", subject)
    if job.cancelled:
        raise JobError(cancelled or f"{what} was cancelled", subject)
    if job.returncode != 0:
        raise JobError(f"{what} failed: {job.error_message()}", subject)


def wait_collecting(run: Any, on_event: Callable[[dict[str, Any]], None] | None,
                    timeout_s: float | None) -> list[dict[str, Any]]:
    """Wait for `run.job`, passing each event to `on_event`, and return them all (the synchronous `grade` /
    `segment`); on a timeout or any error the job is cancelled and `run.cleanup()` removes its temp files."""
    events: list[dict[str, Any]] = []

    def note(event: dict[str, Any]) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    try:
        run.job.wait(note, timeout_s=timeout_s)
    except BaseException:
        run.job.cancel()
        run.cleanup()
        raise
    return events


def process_gui_events() -> bool:
    """Let Slicer repaint and handle clicks while a console call waits (as `slicer.util.logProcessOutput` does);
    True when there was an application to serve. Without one (pytest, PythonSlicer scripts) it does nothing."""
    slicer = sys.modules.get("slicer")
    app = getattr(slicer, "app", None) if slicer is not None else None
    if app is None:
        return False
    app.processEvents()
    return True


class Job:
    """One background `kneeoa` process whose stdout+stderr lines become events."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 keep_lines: int = 200):
        self.argv = [str(a) for a in argv]
        self.env, self.cwd = env, cwd
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        self.result: dict[str, Any] | None = None
        self.fraction = 0.0
        self.tail: deque[str] = deque(maxlen=keep_lines)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._drained = False
        self.token = secrets.token_hex(16)  # our child's events carry it; text that only looks like one does not

    def start(self) -> Job:
        """Launch the process and a reader thread; returns self."""
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True
        env = dict(os.environ if self.env is None else self.env)
        env[TOKEN_ENV] = self.token
        env["PYTHONSAFEPATH"] = "1"
        cwd = self.cwd if self.cwd is not None else safe_cwd()
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, cwd=cwd, text=True,
                                        encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        self._reader = threading.Thread(target=self._read, name="kneeoa-job-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def running(self) -> bool:
        """True while the process runs or unread output remains."""
        return self.process is not None and (self.process.poll() is None or not self._drained)

    @property
    def returncode(self) -> int | None:
        """Exit status once finished (None while running)."""
        return None if self.process is None else self.process.poll()

    def poll(self) -> list[dict[str, Any]]:
        """Events printed since the last call (never blocks)."""
        events = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._drained = True
                if self.process is not None:
                    self.process.wait()
                break
            events.append(self._note(parse_line(line, self.token)))
        return events

    def _note(self, event: dict[str, Any]) -> dict[str, Any]:
        if event["event"] == "text":
            self.tail.append(event["message"])
        elif event["event"] == "log":
            self.tail.append(str(event.get("message", "")))
        elif event["event"] == "result":
            self.result = event
        fraction = fraction_done(event)
        if fraction is not None:
            self.fraction = fraction
        return event

    def wait(self, on_event: Callable[[dict[str, Any]], None] | None = None, timeout_s: float | None = None,
             interval_s: float = 0.05) -> int:
        """Block until the job ends, passing each event to `on_event`; returns the exit status."""
        return wait_until_done(self, on_event, timeout_s, interval_s,
                               f"job did not finish within {timeout_s} s: {' '.join(self.argv)}")

    def cancel(self, grace_s: float = 2.0) -> None:
        """Stop the job and all processes it started."""
        self.cancelled = True
        if self.process is not None and self.process.poll() is None:
            kill_process_tree(self.process.pid, grace_s, self.process)
            self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        self.poll()  # drain what it printed before it died (kept in `tail`)

    def error_message(self) -> str:
        """The job's own error line (`kneeoa CMD: error: ...`) or the last lines it printed."""
        for line in reversed(self.tail):
            if line.startswith("kneeoa ") and ": error: " in line:
                return line.split(": error: ", 1)[1]
        lines = [line for line in self.tail if line.strip()]
        return "\n".join(lines[-5:]) or f"exit status {self.returncode}"

"""Progress for long jobs: a bar on a terminal, JSON lines for machines (the Slicer modules).

Set `KNEEOA_PROGRESS=json` (or pass `--progress json` to a command) and every update is printed to
stdout as one JSON object per line:
    {"event": "progress", "task": "train", "done": 3, "total": 10, "loss": 0.41, ...}
Other events: "start", "log" (message), "result" (payload), "end". Slicer parses these lines.
`lines` prints one plain line per finished step to stderr (throttled to one per task every 10 s, the last
step always): what a long job (`kneeoa demo`, `study`, `train`) shows when stderr is not a terminal, so a
log written by `make demo > log` tells where the job is.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from kneeoa.utils import strict_json

MODE_ENV = "KNEEOA_PROGRESS"
# A Slicer job sets a secret token; every event carries it, so the reader can tell our events from a line
# some library printed (or a file name with a newline in it) that merely looks like one.
TOKEN_ENV = "KNEEOA_PROGRESS_TOKEN"


MODES = ("bar", "json", "lines", "none")
# in "lines" mode a task prints at most one line per this many seconds (and always its last step)
LINE_INTERVAL_S = 10.0


def mode() -> str:
    """'json', 'bar', 'lines' (one plain line per finished step, for logs) or 'none' (not a terminal)."""
    value = os.environ.get(MODE_ENV, "").lower()
    if value in MODES:
        return value
    return "bar" if sys.stderr.isatty() else "none"


def one_line(text: object) -> str:
    """`text` on one physical line: a file name may hold CR/LF, which must not start a line of its own (a
    reader of our output, e.g. Slicer's job monitor, would take the rest for a line we printed)."""
    return str(text).replace("\r", "\\r").replace("\n", "\\n")


def emit(event: str, stream: TextIO | None = None, **fields: Any) -> None:
    """Print one JSON progress line (only in json mode)."""
    if mode() != "json":
        return
    out = stream or sys.stdout
    token = os.environ.get(TOKEN_ENV)
    if token:
        fields = {**fields, "token": token}
    # strict JSON (NaN -> null) on one physical line: json escapes a newline inside a file name as \\n
    out.write(strict_json.dumps({"event": event, **fields}) + "\n")  # numpy/torch values: plain numbers
    out.flush()


class Progress:
    """`with Progress("train", total=n) as p: p.update(1, loss=0.3)` — bar, JSON lines or silence."""

    def __init__(self, task: str, total: int | None = None, unit: str = "it", disable: bool = False,
                 every_line: bool = False):
        self.task, self.total, self.unit = task, total, unit
        self.done = 0
        self._mode = "none" if disable else mode()
        self._bar = None
        self._t0 = time.perf_counter()
        self._last_line = -LINE_INTERVAL_S
        self._every_line = every_line  # "lines" mode: a line for every step (big steps: the study's models)

    def __enter__(self) -> Progress:
        if self._mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.task, unit=self.unit, file=sys.stderr, leave=True)
        elif self._mode == "json":
            emit("start", task=self.task, total=self.total)
        return self

    def update(self, n: int = 1, **metrics: Any) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if metrics:
                self._bar.set_postfix({k: _short(v) for k, v in metrics.items()}, refresh=False)
        elif self._mode == "json":
            emit("progress", task=self.task, done=self.done, total=self.total,
                 elapsed_s=round(time.perf_counter() - self._t0, 3), **metrics)
        elif self._mode == "lines":
            now = time.perf_counter()
            if self._every_line or now - self._last_line >= LINE_INTERVAL_S or self.done == self.total:
                self._last_line = now
                print(self._line(now, metrics), file=sys.stderr, flush=True)

    def _line(self, now: float, metrics: dict[str, Any]) -> str:
        """`kneeoa: study 3/9 models  model=m3t_dual seconds=41.2  (2.1 min)`"""
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        extra = "  ".join(f"{k}={_short(v)}" for k, v in metrics.items())
        elapsed = now - self._t0
        took = f"{elapsed:.0f} s" if elapsed < 120 else f"{elapsed / 60:.1f} min"
        return f"kneeoa: {self.task} {count} {self.unit}{'s' if self.total != 1 else ''}" \
               f"{'  ' + extra if extra else ''}  ({took})"

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(one_line(message), file=sys.stderr)
        elif self._mode == "json":
            emit("log", task=self.task, message=message)
        else:
            print(one_line(message), file=sys.stderr)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._mode == "json":
            emit("end", task=self.task, done=self.done, ok=exc[0] is None)


def _short(v: Any) -> Any:
    return f"{v:.4g}" if isinstance(v, float) else v

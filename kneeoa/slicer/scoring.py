"""Batch scoring of a cohort folder from Slicer: `kneeoa score` in a background process, like grading.

Running torch inside Slicer's GUI thread froze the application with no Cancel, no dependency check and
carriage-return progress in the Python console. The job instead runs in its own process with JSON progress;
the widget polls it from a timer, the console waits for it while processing GUI events (jobs.wait_until_done),
and Cancel stops the whole process tree. Resumable: an existing table is continued (`--resume`).
Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kneeoa.errors import JobError
from kneeoa.slicer import jobs


def score_command(folder: str | Path, checkpoint: str | Path, out_csv: str | Path,
                  saliency_dir: str | Path | None = None, device: str | None = None, resume: bool = True,
                  extra: Sequence[str] = (), python: str | None = None) -> list[str]:
    """argv of `kneeoa score FOLDER --checkpoint C --out CSV [--saliency DIR] [--device D] [--resume]`."""
    args: list[str] = [str(folder), "--checkpoint", str(checkpoint), "--out", str(out_csv)]
    if saliency_dir is not None:
        args += ["--saliency", str(saliency_dir)]
    if device and device != "auto":
        args += ["--device", device]
    if resume and Path(out_csv).exists():
        args.append("--resume")
    return jobs.kneeoa_command("score", [*args, *map(str, extra)], python)


@dataclass
class ScoringRun:
    """A `kneeoa score` job in the background and the table it writes."""

    job: jobs.Job
    out_csv: Path

    def finish(self) -> dict[str, Any]:
        """The job's summary ({'scored', 'errors', 'skipped', 'total', 'out_csv'}); JobError if it failed."""
        jobs.check_succeeded(self.job, "scoring", self.out_csv, cancelled="scoring was cancelled (the table keeps "
                             "every case scored so far; run again to continue)")
        result = dict(self.job.result or {})
        result.pop("event", None)
        result.pop("task", None)
        if "scored" not in result:
            raise JobError("the scoring job ended without a summary", self.out_csv)
        return result


def start(folder: str | Path, checkpoint: str | Path, out_csv: str | Path, saliency_dir: str | Path | None = None,
          device: str = "auto", env: dict[str, str] | None = None, python: str | None = None,
          extra: Sequence[str] = ()) -> ScoringRun:
    """Launch `kneeoa score` in the background (resuming an existing table); returns the ScoringRun."""
    out_csv = Path(out_csv)
    argv = score_command(folder, checkpoint, out_csv, saliency_dir, device, True, extra, python)
    job = jobs.Job(argv, env=env if env is not None else jobs.job_environment()).start()
    return ScoringRun(job, out_csv)


def console_printer(name: str) -> Callable[[dict[str, Any]], None]:
    """An event callback for Slicer's Python console: one line per tenth of the cohort, no carriage returns."""
    shown = {"decile": -1}

    def note(event: dict[str, Any]) -> None:
        fraction = jobs.fraction_done(event)
        if event.get("event") == "progress" and fraction is not None and int(fraction * 10) > shown["decile"]:
            shown["decile"] = int(fraction * 10)
            print(f"KneeOA scoring {name}: {event.get('done')}/{event.get('total')} volumes")
        elif event.get("event") == "text" and event.get("message", "").strip():
            print(event["message"])

    return note

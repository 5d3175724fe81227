"""A training run is a directory:

    RUN/config.yaml                       resolved config (preset + overrides)
    RUN/checkpoints/last.safetensors      weights + model card of the last complete epoch
    RUN/checkpoints/trainer_state.safetensors   weights + optimizer + RNG + epoch, for --resume (no pickle)
    RUN/metrics.jsonl                     one JSON line per epoch (loss, lr, time, loader wait, compute, ...)
    RUN/test_metrics.json                 metrics of the last epoch on the test split
    RUN/train.log                         human-readable log
    RUN/cache/                            preprocessed tensors (unless a shared cache_dir is configured)
    RUN/tensorboard/                      with --tensorboard
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from kneeoa.contracts.checkpoint_meta import read_trainer_meta
from kneeoa.errors import CheckpointError, ConfigError
from kneeoa.utils import strict_json
from kneeoa.utils.atomic import append_line, atomic_write_text

# every file or folder a run writes; --overwrite removes at most these, and only those the manifest lists
RUN_ENTRIES = ("config.yaml", "checkpoints", "metrics.jsonl", "test_metrics.json", "train.log", "tensorboard",
               "cache")
MANIFEST = "kneeoa_run.json"  # written first by every new run: the entries it owns (what --overwrite may delete)
LOCK = ".kneeoa.lock"  # held by the process that writes the run (utils.locks)
OWN_FILES = (MANIFEST, LOCK)


class RunDir:
    """Paths and bookkeeping of one training run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.safetensors"
        self.state = self.checkpoints / "trainer_state.safetensors"
        self.metrics = self.root / "metrics.jsonl"
        self.test_metrics = self.root / "test_metrics.json"
        self.log_file = self.root / "train.log"
        self.cache = self.root / "cache"
        self.tensorboard = self.root / "tensorboard"
        self.manifest = self.root / MANIFEST
        self.lock_file = self.root / LOCK

    def is_run(self) -> bool:
        return self.config.is_file()

    def state_meta(self) -> dict | None:
        """The trainer state's JSON (epoch, finished) or None when no epoch has completed."""
        if not self.state.is_file():
            return None
        return read_trainer_meta(self.state)

    def decide(self, resume: bool, overwrite: bool) -> str:
        """'new' or 'resume' — or a ConfigError when the folder holds a run (or other files) we must not clobber."""
        if resume and overwrite:
            raise ConfigError("--resume and --overwrite exclude each other")
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError("run directory path is a file", self.root)
        if overwrite:
            self._check_owned()
            return "new"
        if self.is_run():
            if resume:
                return "resume"
            meta = self.state_meta()
            what = "a finished run" if meta and meta.get("finished") else "an unfinished run"
            raise ConfigError(f"already holds {what}; pass --resume to continue it or --overwrite to replace it",
                              self.root)
        if self.root.is_dir() and any(p.name not in (*RUN_ENTRIES, *OWN_FILES) for p in self.root.iterdir()):
            raise ConfigError("folder exists and is not a KneeOA run (choose an empty or new --out)", self.root)
        return "new"

    def owned(self) -> list[str]:
        """The entries this folder's run manifest says a KneeOA run wrote (empty without a manifest)."""
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        entries = data.get("entries") if isinstance(data, dict) else None
        return [e for e in entries if e in RUN_ENTRIES] if isinstance(entries, list) else []

    def _check_owned(self) -> None:
        """--overwrite deletes only what a manifest lists: refuse when run-like entries are not ours."""
        if not self.root.is_dir():
            return
        owned = set(self.owned())
        foreign = sorted(n for n in RUN_ENTRIES if (self.root / n).exists() and n not in owned and n != "cache")
        if foreign:
            raise ConfigError(f"--overwrite would delete {', '.join(foreign)}, which no KneeOA run manifest "
                              f"({MANIFEST}) lists as ours; move them away or choose another --out", self.root)

    def start_new(self) -> None:
        """Create the folder and its manifest before anything else is written (also the claim on the entries)."""
        from kneeoa import __version__

        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.manifest, strict_json.dumps({"kneeoa_version": __version__, "entries": list(RUN_ENTRIES),
                                                            "created": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")

    def lock(self):
        """Exclusive lock on the run folder (a second train/resume into it stops with one line)."""
        from kneeoa.utils import locks

        self.root.mkdir(parents=True, exist_ok=True)
        return locks.exclusive(self.lock_file, self.root, "the run folder")

    def clear(self) -> None:
        """Remove this run's own outputs (for --overwrite): only entries the manifest lists; others stay."""
        self._check_owned()
        owned = set(self.owned())
        for name in RUN_ENTRIES:
            if name == "cache" or name not in owned:
                continue  # preprocessed tensors stay valid whatever the model; keeping them saves the decode
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def remove_stale_temp_files(self) -> list[Path]:
        """Temp files a hard kill left mid-write (atomic writes name them `.<name>.*.tmp*`); never real outputs."""
        stale = [p for folder in (self.root, self.checkpoints) if folder.is_dir() for p in folder.iterdir()
                 if p.is_file() and p.name.startswith(".") and ".tmp" in p.name]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def log(self, message: str) -> None:
        """Append a timestamped line to train.log."""
        self.root.mkdir(parents=True, exist_ok=True)
        append_line(self.log_file, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}")

    def append_metrics(self, row: dict) -> None:
        append_line(self.metrics, strict_json.dumps(row))

    def read_metrics(self) -> list[dict]:
        """Epoch rows of metrics.jsonl (an unparsable tail line from a hard kill is skipped)."""
        if not self.metrics.is_file():
            return []
        rows = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def completed_metrics(self) -> list[dict]:
        """The epoch rows of the epochs the trainer state holds, read-only (standard library, no torch).

        The trainer state is the truth: it is saved first, and carries its epoch's row, so a kill between the
        state and the log line loses no row (the state's row is put back), and rows of an epoch that never
        reached the state (a kill after the log line of a later, unsaved run) are dropped. No readable state
        means no completed epoch."""
        try:
            meta = self.state_meta()
        except CheckpointError:
            meta = None  # cut short by a hard kill: the resume restarts from scratch, so must the history
        done = int(meta.get("epoch", 0)) if meta else 0
        rows = [r for r in self.read_metrics() if 0 < int(r.get("epoch", 0)) <= done]
        saved = (meta or {}).get("metrics_row")
        if saved and int(saved.get("epoch", -1)) == done and all(int(r["epoch"]) != done for r in rows):
            rows.append(saved)
        return rows

    def repair_metrics(self) -> None:
        """Rewrite metrics.jsonl as `completed_metrics()` (on resume, before new epochs are appended)."""
        rows = self.completed_metrics()
        atomic_write_text(self.metrics, "".join(strict_json.dumps(r) + "\n" for r in rows))

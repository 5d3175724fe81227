"""Where a cohort's latent tables come from, and how a clicked point becomes a case in the viewers.

A latent source is a folder written by `kneeoa latent` (latent_points.csv), a study (tables/ and
saliency/), a training run (checkpoints/last.safetensors: `kneeoa predict --embeddings` then
`kneeoa latent` into RUN/latent) or a checkpoint + cohort folder. The commands run in background
jobs one after another (`JobChain`); the cohort folder maps case ids to image and mask files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneeoa.errors import ConfigError, InputError, JobError
from kneeoa.slicer import jobs
from kneeoa.slicer.training import given_path, latent_command, predict_command, run_config

CASE_ATTRIBUTE = "KneeOA.LatentCase"  # marks nodes loaded for a clicked point: (case id, role)
ROLE_ATTRIBUTE = "KneeOA.LatentRole"


@dataclass
class LatentSource:
    """The latent tables to show, the cohort behind them, and the commands that must run first (if any)."""

    points_csv: Path
    summary_csv: Path
    cohort_root: Path | None = None
    labels: Path | None = None
    saliency_dir: Path | None = None
    steps: list[list[str]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.points_csv.is_file() and self.summary_csv.is_file()


def _tables(folder: Path) -> tuple[Path, Path]:
    return folder / "latent_points.csv", folder / "latent_summary.csv"


def _study_cohort(study: Path) -> tuple[Path | None, Path | None]:
    if (study / "study.json").is_file():
        data = json.loads((study / "study.json").read_text(encoding="utf-8")).get("data")
        if data:
            return Path(data), None
    for config in sorted((study / "models").glob("*/config.yaml")):
        cfg = run_config(config.parent)
        return Path(cfg.data), given_path(cfg.labels)
    return None, None


def latent_source(folder: str | Path | None = None, checkpoint: str | Path | None = None,
                  cohort: str | Path | None = None, labels: str | Path | None = None, compute: bool = False,
                  device: str = "auto", python: str | None = None) -> LatentSource:
    """Resolve what to show. With a checkpoint (or a training run and compute=True) the source carries the
    predict + latent commands; a study or a `kneeoa latent` folder is read as it is."""
    folder, checkpoint, cohort, labels = (given_path(p) for p in (folder, checkpoint, cohort, labels))
    if checkpoint is not None:
        if cohort is None or folder is None:
            raise ConfigError("a checkpoint needs a cohort folder and an output folder for its latent tables")
        return _computed(folder, checkpoint, cohort, labels, device, python)
    if folder is None or not folder.is_dir():
        raise InputError("choose a study, a training run or a `kneeoa latent` folder", folder)
    if _tables(folder)[0].is_file():
        return LatentSource(*_tables(folder), cohort_root=cohort, labels=labels)
    if _tables(folder / "tables")[0].is_file():
        found, found_labels = _study_cohort(folder)
        saliency = folder / "saliency"
        return LatentSource(*_tables(folder / "tables"), cohort_root=cohort or found, labels=labels or found_labels,
                            saliency_dir=saliency if saliency.is_dir() else None)
    if (folder / "config.yaml").is_file():
        cfg = run_config(folder)
        run_cohort, run_labels = cohort or Path(cfg.data), labels or given_path(cfg.labels)
        last = folder / "checkpoints" / "last.safetensors"
        if not last.is_file():
            raise InputError("this training run has no checkpoint yet (no epoch finished)", folder)
        if compute or not _tables(folder / "latent")[0].is_file():
            return _computed(folder / "latent", last, run_cohort, run_labels, device, python)
        return LatentSource(*_tables(folder / "latent"), cohort_root=run_cohort, labels=run_labels)
    raise InputError("no latent tables here: choose a study, a training run or a `kneeoa latent` output folder",
                     folder)


def _computed(out: Path, checkpoint: Path, cohort: Path, labels: Path | None, device: str,
              python: str | None) -> LatentSource:
    if not checkpoint.is_file():
        raise InputError("checkpoint not found", checkpoint)
    steps = [predict_command(checkpoint, cohort, out, device=device, labels=labels, python=python),
             latent_command(out, out, python=python)]
    return LatentSource(*_tables(out), cohort_root=cohort, labels=labels, steps=steps)


class JobChain:
    """Commands run one after another as background `jobs.Job`s; polled like one job, stops at a failure."""

    def __init__(self, steps: Sequence[Sequence[str]], env: dict[str, str] | None = None):
        self.steps = [list(s) for s in steps]
        self.env = env
        self.index = 0
        self.job: jobs.Job | None = None
        self.cancelled = False

    def start(self) -> JobChain:
        if self.steps:
            self.job = jobs.Job(self.steps[0], env=self.env).start()
        return self

    @property
    def running(self) -> bool:
        return self.job is not None and (self.job.running or (self.job.returncode == 0 and not self.cancelled
                                                              and self.index + 1 < len(self.steps)))

    @property
    def returncode(self) -> int | None:
        return None if self.job is None or self.running else self.job.returncode

    def poll(self) -> list[dict[str, Any]]:
        """Events since the last call; starts the next command when one finishes well."""
        if self.job is None:
            return []
        events = self.job.poll()
        if not self.job.running and self.job.returncode == 0 and not self.cancelled \
                and self.index + 1 < len(self.steps):
            self.index += 1
            self.job = jobs.Job(self.steps[self.index], env=self.env).start()
        return events

    def wait(self, on_event: Callable[[dict], None] | None = None, timeout_s: float | None = None) -> int:
        """Block until every command ran (or one failed); returns the last exit status."""
        return jobs.wait_until_done(self, on_event, timeout_s, 0.05, f"commands did not finish within {timeout_s} s")

    def cancel(self) -> None:
        self.cancelled = True
        if self.job is not None:
            self.job.cancel()

    def error_message(self) -> str:
        return self.job.error_message() if self.job is not None else "nothing ran"


def run_source(source: LatentSource, env: dict[str, str] | None = None,
               on_event: Callable[[dict], None] | None = None, timeout_s: float | None = None) -> LatentSource:
    """Run the source's commands (blocking; console and self-test use) and check the tables are there."""
    if source.steps:
        chain = JobChain(source.steps, env if env is not None else jobs.job_environment()).start()
        if chain.wait(on_event, timeout_s) != 0:
            raise JobError(f"latent analysis failed: {chain.error_message()}")
    if not source.ready:
        raise InputError("the latent tables are missing", source.points_csv)
    return source


# --- from a point to its case in the viewers ---------------------------------------------------------------


class CaseIndex:
    """case_id -> (image, mask) through kneeoa.data.cohort.load_cohort, the cohort read once."""

    def __init__(self, cohort_root: str | Path, labels: str | Path | None = None):
        from kneeoa.data.cohort import load_cohort

        self.cohort = load_cohort(cohort_root, labels=labels)

    def paths(self, case_id: str) -> tuple[Path, Path | None]:
        """The case's image and mask (None if it has none)."""
        try:
            case = self.cohort.case(case_id)
        except KeyError:
            raise InputError(f"case {case_id!r} is not in this cohort folder (another cohort?)",
                             self.cohort.root) from None
        return case.image, case.mask


def saliency_file(saliency_dir: str | Path | None, name: str, case_id: str) -> Path | None:
    """STUDY/saliency/<model>/<case>_saliency.nii.gz when the study explained that case."""
    if saliency_dir is None:
        return None
    from kneeoa.contracts.case_ids import saliency_map_name

    path = Path(saliency_dir) / name / saliency_map_name(case_id)
    return path if path.is_file() else None


def _case_node(scene: Any, case_id: str, role: str) -> Any:
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if node.GetAttribute(CASE_ATTRIBUTE) == case_id and node.GetAttribute(ROLE_ATTRIBUTE) == role:
            return node
    return None


def _tag(node: Any, case_id: str, role: str) -> Any:
    node.SetAttribute(CASE_ATTRIBUTE, case_id)
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    return node


def load_case(case_id: str, index: CaseIndex, scene: Any = None, saliency_path: str | Path | None = None,
              show: bool = True) -> dict[str, Any]:
    """Load a case's volume (+ cartilage outlines, + saliency) once, reuse it later, show it in the viewers."""
    import slicer

    from kneeoa.slicer import display, nodes

    scene = scene if scene is not None else slicer.mrmlScene
    image, mask = index.paths(case_id)
    volume = _case_node(scene, case_id, "volume")
    if volume is None:
        volume = _tag(nodes.load_volume_node(image, case_id, scene), case_id, "volume")
    cartilage = _case_node(scene, case_id, "cartilage")
    if cartilage is None and mask is not None:
        from kneeoa.data.volume import read_volume

        labels = read_volume(mask, is_label=True)
        cartilage = _tag(nodes.segmentation_from_labelmap(labels.array, labels.affine, f"{case_id} cartilage", scene),
                         case_id, "cartilage")
        cartilage.SetAttribute(display.CARTILAGE_ATTRIBUTE, "1")  # switching cases hides the previous outlines
    saliency = None
    if saliency_path is not None:
        model = Path(saliency_path).parent.name
        saliency = _case_node(scene, case_id, f"saliency:{model}")  # one map per model
        if saliency is None:
            saliency = _tag(nodes.load_volume_node(saliency_path, f"{case_id} saliency {model}", scene,
                                                   reference_node=volume), case_id, f"saliency:{model}")
        display.show_saliency(saliency)
    if show:
        display.show_in_viewers(volume, saliency, cartilage)
    return {"volume": volume, "cartilage": cartilage, "saliency": saliency}

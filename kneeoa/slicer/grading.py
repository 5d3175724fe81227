"""One grading run for Slicer: nodes -> temp NIfTI -> `kneeoa grade` (background process) -> result nodes.

`prepare` writes the inputs and builds the command, `finish` turns the job's outputs into nodes and
keeps them on the volume, `grade` does both around a blocking `Job` (console / self-test use; the
widget runs the same `Job` asynchronously). Model, saliency and overlap are computed by `kneeoa`
in the child process; here we only move data and draw.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneeoa.contracts.checkpoint_meta import read_card
from kneeoa.contracts.prediction import Prediction
from kneeoa.contracts.trust import DEFAULT_ALPHA
from kneeoa.contracts.vocab import DEVICES, SALIENCY_METHODS, SALIENCY_NONE, SALIENCY_TARGETS
from kneeoa.errors import NOT_ENOUGH_GPU_MEMORY, JobError
from kneeoa.slicer import bundled, jobs

DEMO_CHECKPOINT = "demo_model.safetensors"
SALIENCY_CHOICES = (*SALIENCY_METHODS, SALIENCY_NONE)  # the panel also offers "no map"
OWNED_ATTRIBUTE = "KneeOA.MadeByGrading"  # a node this module created (and may replace)


def demo_checkpoint_candidates(module_file: str | Path) -> list[Path]:
    """Where the bundled demo model lies: next to the installed module, or in a source checkout."""
    return bundled.candidates(module_file, DEMO_CHECKPOINT)


def resolve_checkpoint(checkpoint: str | Path | None, module_file: str | Path) -> Path:
    """The chosen checkpoint, or the bundled demo model; CheckpointError with a clear message if missing."""
    return bundled.resolve(checkpoint, module_file, DEMO_CHECKPOINT, "checkpoint", "model",
                           "choose a checkpoint (.safetensors written by `kneeoa train`) in 'Model checkpoint'")


def read_card_header(path: str | Path) -> dict:
    """A checkpoint's model card from the safetensors JSON header alone (standard library, no torch):
    the Slicer panel shows it without loading torch into the GUI process. CheckpointError if unreadable."""
    return read_card(path)


@dataclass
class GradingOptions:
    """What to run: checkpoint, saliency method ('none' = no map), target head, device; `segmenter`: a volume
    without a cartilage mask is segmented by the same job (outlines + overlap from the automatic mask)."""

    checkpoint: Path
    saliency_method: str = SALIENCY_METHODS[0]
    target: str = "auto"
    device: str = "auto"
    segmenter: Path | None = None
    alpha: float = DEFAULT_ALPHA  # calibrated checkpoints: the KL/OA sets hold the grade for ~1 - alpha of knees

    def __post_init__(self) -> None:
        if not 0.0 < float(self.alpha) < 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {self.alpha}")
        for name, value, allowed in (("saliency method", self.saliency_method, SALIENCY_CHOICES),
                                     ("target", self.target, SALIENCY_TARGETS), ("device", self.device, DEVICES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


def needs_cpu(error: BaseException | str) -> bool:
    """A grading job that stopped because the GPU had too little free memory (the module then offers the CPU)."""
    return NOT_ENOUGH_GPU_MEMORY in str(error) or "out of memory on cuda" in str(error)


def on_cpu(options: GradingOptions) -> GradingOptions:
    """The same options on the CPU."""
    return dataclasses.replace(options, device="cpu")


@dataclass
class GradingFiles:
    """The files of one run inside its work folder."""

    work_dir: Path
    image: Path
    mask: Path | None
    saliency: Path | None
    result_json: Path
    segmentation: Path | None = None  # the automatic label map `kneeoa grade --segmenter` writes


@dataclass
class GradingResult:
    """A graded volume: the numbers of the result JSON and the nodes that show them."""

    volume_node: Any
    result: dict
    saliency_node: Any = None
    cartilage_node: Any = None
    result_table_node: Any = None
    kl_table_node: Any = None
    kl_chart_node: Any = None
    events: list[dict] = field(default_factory=list)

    card = property(lambda self: self.result.get("card"), doc="the checkpoint's model card")
    trust = property(lambda self: self.result.get("trust"),
                     doc="calibrated probabilities, KL/OA sets, OOD score/p/flag (None: uncalibrated checkpoint)")

    @property
    def prediction(self) -> Prediction:
        """The numbers of the result JSON (kl_probs, oa_prob, pred_kl, heads_agree, overlap, ...)."""
        return Prediction.from_result(self.result)

    def __getattr__(self, name: str) -> Any:
        # result.kl_probs, result.pred_kl, ...: the Prediction's fields, read through one definition
        if name in Prediction.__dataclass_fields__:
            return getattr(self.prediction, name)
        raise AttributeError(name)


def gradable_volumes(scene: Any) -> list[Any]:
    """Scalar volumes a user loaded (not label maps, not saliency maps we made), in scene order."""
    found = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if not node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetAttribute(OWNED_ATTRIBUTE) != "1" \
                and node.GetImageData() is not None:
            found.append(node)
    return found


def owned_volume_ids(scene: Any) -> list[str]:
    """IDs of the volumes this module made (saliency maps): the "Knee MRI" selector hides them."""
    ids = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
        if node.GetAttribute(OWNED_ATTRIBUTE) == "1":
            ids.append(node.GetID())
    return ids


def _case_key(name: str) -> str:
    from kneeoa.contracts.case_ids import case_id_from_name

    return case_id_from_name(name.strip()).lower()  # the one case-id rule: oaizib_001_0000 -> oaizib_001


def find_cartilage(volume_node: Any, scene: Any) -> Any:
    """The cartilage mask that belongs to a volume: the one used before, a segmentation made on it, or a
    label map on its grid named like it (OAI-ZIB-CM: image oaizib_001_0000, labels oaizib_001); else None."""
    from kneeoa.slicer import nodes, results

    used = results.result_node(volume_node, results.ROLE_CARTILAGE)
    if used is not None:
        return used
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
        if node.GetNodeReference("referenceImageGeometryRef") is volume_node:
            return node
    key = _case_key(volume_node.GetName())
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLLabelMapVolumeNode")
        if _case_key(node.GetName()) == key and node.GetImageData() is not None and nodes.same_grid(node, volume_node):
            return node
    return None


def prepare(volume_node: Any, options: GradingOptions, work_dir: str | Path, mask_node: Any = None,
            python: str | None = None, scene: Any = None) -> tuple[list[str], GradingFiles]:
    """Write the volume (and mask, on the volume's grid) as NIfTI; return the grade argv and the file paths."""
    from kneeoa.slicer import nodes

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    files = GradingFiles(work_dir=work_dir, image=work_dir / "image.nii.gz",
                         mask=work_dir / "mask.nii.gz" if mask_node is not None else None,
                         saliency=work_dir / "saliency.nii.gz" if options.saliency_method != SALIENCY_NONE else None,
                         result_json=work_dir / "result.json")
    nodes.write_volume_node(volume_node, files.image)
    if mask_node is not None:
        nodes.write_mask_for_volume(mask_node, volume_node, files.mask, scene)
    argv = jobs.grade_command(files.image, options.checkpoint, files.result_json, mask=files.mask,
                              saliency_out=files.saliency,
                              saliency_method=options.saliency_method if files.saliency else None,
                              target=options.target, device=options.device, python=python)
    if options.alpha != DEFAULT_ALPHA:
        argv += ["--alpha", repr(float(options.alpha))]
    if mask_node is None and options.segmenter is not None:
        files.segmentation = work_dir / "segmentation.nii.gz"
        argv += ["--segmenter", str(options.segmenter), "--segmentation-out", str(files.segmentation)]
    return argv, files


def finish(files: GradingFiles, volume_node: Any, mask_node: Any = None, scene: Any = None,
           saliency_threshold: float | None = None) -> GradingResult:
    """Read the job's outputs into nodes (reusing those of an earlier run) and keep them on the volume."""
    import slicer

    from kneeoa.slicer import display, nodes, results, trust_view

    scene = scene if scene is not None else slicer.mrmlScene
    if not files.result_json.is_file():
        raise JobError("the grading job wrote no result", files.result_json)
    result = json.loads(files.result_json.read_text(encoding="utf-8"))
    result["saliency_path"] = None  # the temp file goes; the map now lives in the scene
    name = volume_node.GetName()
    out = GradingResult(volume_node=volume_node, result=result)

    previous = results.result_node(volume_node, results.ROLE_SALIENCY)
    if files.saliency is not None and files.saliency.is_file():
        # Re-grading refills the earlier node, which keeps its place in the viewers.
        saliency = nodes.load_volume_node(files.saliency, f"{name} saliency", scene, reference_node=volume_node,
                                          node=previous)
        threshold = display.DEFAULT_SALIENCY_THRESHOLD if saliency_threshold is None else saliency_threshold
        display.show_saliency(saliency, threshold)
        saliency.SetAttribute(OWNED_ATTRIBUTE, "1")
        out.saliency_node = saliency
    elif previous is not None:
        nodes.remove_node(previous, scene)

    from kneeoa.slicer import segmentation as seg_glue

    if files.segmentation is not None and files.segmentation.is_file():
        out.cartilage_node = seg_glue.automatic_segmentation_node(files.segmentation, volume_node, scene)
    elif mask_node is not None and mask_node.IsA("vtkMRMLSegmentationNode"):
        out.cartilage_node = mask_node
        if seg_glue.is_automatic(mask_node):  # made by "Segment knee": the overlap is from an automatic mask
            result["mask_source"] = seg_glue.MASK_SOURCES[1]
    elif mask_node is not None:
        # A label map is shown as a segmentation we make (and refill when re-grading).
        old = results.result_node(volume_node, results.ROLE_CARTILAGE)
        reuse = old if old is not None and old.GetAttribute(OWNED_ATTRIBUTE) == "1" else None
        labels = nodes.mask_array_for_volume(mask_node, volume_node, scene)
        out.cartilage_node = nodes.segmentation_from_labelmap(labels, nodes.ijk_to_ras(volume_node),
                                                              f"{name} cartilage", scene, node=reuse)
        out.cartilage_node.SetAttribute(OWNED_ATTRIBUTE, "1")
    if out.cartilage_node is not None:
        display.show_cartilage_outlines(out.cartilage_node)

    table = results.result_node(volume_node, results.ROLE_RESULT_TABLE)
    out.result_table_node = results.update_result_table(
        table or scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} KneeOA result"), result)
    probs, calibrated = trust_view.chart_probabilities(result)  # calibrated when the checkpoint has them
    if probs:
        out.kl_table_node, out.kl_chart_node = results.update_kl_chart(
            probs, name, scene, results.result_node(volume_node, results.ROLE_KL_TABLE),
            results.result_node(volume_node, results.ROLE_KL_CHART), calibrated=calibrated)
    results.store_result(volume_node, result, {
        results.ROLE_SALIENCY: out.saliency_node, results.ROLE_CARTILAGE: out.cartilage_node,
        results.ROLE_RESULT_TABLE: out.result_table_node, results.ROLE_KL_TABLE: out.kl_table_node,
        results.ROLE_KL_CHART: out.kl_chart_node})
    return out


@dataclass
class GradingRun:
    """A grading job running in the background, with what is needed to turn its outputs into nodes."""

    job: jobs.Job
    files: GradingFiles
    volume_node: Any
    mask_node: Any = None
    scene: Any = None

    def finish(self, saliency_threshold: float | None = None) -> GradingResult:
        """Nodes from the outputs of a finished job (JobError if it failed or was cancelled); removes temp files."""
        try:
            jobs.check_succeeded(self.job, "grading", self.volume_node.GetName())
            return finish(self.files, self.volume_node, self.mask_node, self.scene, saliency_threshold)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove the run's temp folder (inputs, saliency, result JSON)."""
        shutil.rmtree(self.files.work_dir, ignore_errors=True)


def start(volume_node: Any, options: GradingOptions, mask_node: Any = None, scene: Any = None,
          env: dict[str, str] | None = None, python: str | None = None,
          work_dir: str | Path | None = None) -> GradingRun:
    """Write the inputs to a temp folder and launch `kneeoa grade` in a background process."""
    temp = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="kneeoa-grade-"))
    try:
        argv, files = prepare(volume_node, options, temp, mask_node, python, scene)
        job = jobs.Job(argv, env=env if env is not None else jobs.job_environment()).start()
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return GradingRun(job, files, volume_node, mask_node, scene)


def grade(volume_node: Any, options: GradingOptions, mask_node: Any = None, scene: Any = None,
          on_event: Callable[[dict], None] | None = None, env: dict[str, str] | None = None,
          python: str | None = None, timeout_s: float | None = None,
          saliency_threshold: float | None = None) -> GradingResult:
    """Grade one volume node synchronously (console, self-test); the outputs become nodes (see `finish`)."""
    run = start(volume_node, options, mask_node, scene, env, python)
    events = jobs.wait_collecting(run, on_event, timeout_s)
    out = run.finish(saliency_threshold)
    out.events = events
    return out

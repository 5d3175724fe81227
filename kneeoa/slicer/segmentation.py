""""Segment knee" for Slicer: volume node -> temp NIfTI -> `kneeoa segment` (background job) -> a Segmentation node.

The node holds the five OAI-ZIB-CM segments with their names, colours and terminology tags
(`kneeoa.contracts.segmentation`), references the volume's geometry (so grading finds it as the volume's
cartilage mask when the user chose none) and is kept on the volume with the cartilage thickness table.
Standard library only at import, like `grading`: the model runs in the child process.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kneeoa.contracts.segmentation import MASK_SOURCES, SEGMENT_TITLES, terminology_entry, thickness_columns
from kneeoa.errors import JobError
from kneeoa.slicer import bundled, jobs

DEMO_SEGMENTER = "demo_seg_model.safetensors"
AUTO_ATTRIBUTE = "KneeOA.MaskSource"  # on a segmentation node: MASK_SOURCES[1] when `kneeoa segment` made it
ROLE_SEGMENTATION = "KneeOAAutoSegmentation"
ROLE_THICKNESS_TABLE = "KneeOAThicknessTable"
TERMINOLOGY_TAG = "TerminologyEntry"  # the segment tag Slicer's terminology widgets read


def demo_segmenter_candidates(module_file: str | Path) -> list[Path]:
    """Where the bundled demo segmenter lies: next to the installed module, or in a source checkout."""
    return bundled.candidates(module_file, DEMO_SEGMENTER)


def resolve_segmenter(checkpoint: str | Path | None, module_file: str | Path) -> Path:
    """The chosen segmenter, or the bundled demo one; CheckpointError with a clear message if missing."""
    return bundled.resolve(checkpoint, module_file, DEMO_SEGMENTER, "segmenter", "segmenter",
                           "train one with `kneeoa train-seg` and choose it")


def segment_command(image: str | Path, checkpoint: str | Path, out: str | Path, result_json: str | Path,
                    device: str | None = None, python: str | None = None) -> list[str]:
    """argv of `kneeoa segment IMAGE --checkpoint S --out OUT --result-json R --overwrite [--device D]`."""
    args = [str(image), "--checkpoint", str(checkpoint), "--out", str(out), "--result-json", str(result_json),
            "--overwrite"]
    if device and device != "auto":
        args += ["--device", device]
    return jobs.kneeoa_command("segment", args, python)


def apply_terminology(segmentation_node: Any) -> None:
    """Name, colour-keep and tag each knee segment with its standard terminology entry."""
    from kneeoa.slicer.nodes import label_value_for_segment

    segmentation = segmentation_node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        value = label_value_for_segment(segment.GetName())
        if value in SEGMENT_TITLES:
            segment.SetName(SEGMENT_TITLES[value])
            segment.SetTag(TERMINOLOGY_TAG, terminology_entry(value))


def thickness_rows(row: dict) -> list[tuple[str, str]]:
    """(Compartment measure, mm) rows of a segment result, for the thickness table."""
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{float(v):.2f}"

    return [(c.removesuffix("_mm").replace("_", " "), fmt(row.get(c))) for c in thickness_columns()]


def update_thickness_table(table_node: Any, row: dict) -> Any:
    """Fill a vtkMRMLTableNode with the thickness rows (two string columns)."""
    import vtk

    rows = thickness_rows(row)
    table = table_node.GetTable()
    was_modifying = table_node.StartModify()
    table_node.RemoveAllColumns()
    for name, values in (("Thickness", [r[0] for r in rows]), ("mm", [r[1] for r in rows])):
        column = vtk.vtkStringArray()
        column.SetName(name)
        for value in values:
            column.InsertNextValue(value)
        table.AddColumn(column)
    table.Modified()
    table_node.EndModify(was_modifying)
    return table_node


@dataclass
class SegmentationResult:
    """A segmented volume: the Segmentation node, the thickness numbers and their table node."""

    volume_node: Any
    segmentation_node: Any
    result: dict
    thickness_table_node: Any = None
    events: list[dict] = field(default_factory=list)


def finish(work_dir: Path, volume_node: Any, scene: Any = None) -> SegmentationResult:
    """Turn the job's label map into the volume's Segmentation node (refilled on a re-run) + thickness table."""
    import slicer


    scene = scene if scene is not None else slicer.mrmlScene
    labels_path, result_json = work_dir / "labels.nii.gz", work_dir / "result.json"
    if not labels_path.is_file() or not result_json.is_file():
        raise JobError("the segmentation job wrote no result", work_dir)
    result = json.loads(result_json.read_text(encoding="utf-8"))
    result["seg_path"] = result["path"] = None  # temp files; the map now lives in the scene
    seg = automatic_segmentation_node(labels_path, volume_node, scene)
    name = volume_node.GetName()
    table = volume_node.GetNodeReference(ROLE_THICKNESS_TABLE) or scene.AddNewNodeByClass(
        "vtkMRMLTableNode", f"{name} cartilage thickness")
    update_thickness_table(table, result)
    volume_node.SetNodeReferenceID(ROLE_THICKNESS_TABLE, table.GetID())
    return SegmentationResult(volume_node, seg, result, table)


def automatic_segmentation_node(labels_path: Path, volume_node: Any, scene: Any) -> Any:
    """The volume's automatic Segmentation node (refilled on a re-run) from a label map file on its grid."""
    from kneeoa.data.volume import read_volume
    from kneeoa.slicer import nodes

    labels = read_volume(labels_path, is_label=True, allow_constant=True).array
    previous = volume_node.GetNodeReference(ROLE_SEGMENTATION)
    seg = nodes.segmentation_from_labelmap(labels, nodes.ijk_to_ras(volume_node),
                                           f"{volume_node.GetName()} segmentation", scene, node=previous)
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)  # grading.find_cartilage looks for this
    seg.SetAttribute(AUTO_ATTRIBUTE, MASK_SOURCES[1])
    apply_terminology(seg)
    volume_node.SetNodeReferenceID(ROLE_SEGMENTATION, seg.GetID())
    return seg


def is_automatic(mask_node: Any) -> bool:
    """True for a Segmentation node `kneeoa segment` made (its overlap numbers are from an automatic mask)."""
    return mask_node is not None and mask_node.GetAttribute(AUTO_ATTRIBUTE) == MASK_SOURCES[1]


@dataclass
class SegmentationRun:
    """A segmentation job in the background, with what is needed to turn its output into nodes."""

    job: jobs.Job
    work_dir: Path
    volume_node: Any
    scene: Any = None

    def finish(self) -> SegmentationResult:
        """Nodes from a finished job (JobError if it failed or was cancelled); removes the temp folder."""
        try:
            jobs.check_succeeded(self.job, "segmentation", self.volume_node.GetName())
            return finish(self.work_dir, self.volume_node, self.scene)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def start(volume_node: Any, checkpoint: str | Path, scene: Any = None, device: str = "auto",
          env: dict[str, str] | None = None, python: str | None = None,
          work_dir: str | Path | None = None) -> SegmentationRun:
    """Write the volume to a temp folder and launch `kneeoa segment` in a background process."""
    from kneeoa.slicer import nodes

    temp = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="kneeoa-segment-"))
    try:
        temp.mkdir(parents=True, exist_ok=True)
        image = nodes.write_volume_node(volume_node, temp / "image.nii.gz")
        argv = segment_command(image, checkpoint, temp / "labels.nii.gz", temp / "result.json", device, python)
        job = jobs.Job(argv, env=env if env is not None else jobs.job_environment()).start()
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return SegmentationRun(job, temp, volume_node, scene)


def segment(volume_node: Any, checkpoint: str | Path, scene: Any = None, device: str = "auto",
            on_event: Callable[[dict], None] | None = None, env: dict[str, str] | None = None,
            python: str | None = None, timeout_s: float | None = None) -> SegmentationResult:
    """Segment one volume node synchronously (console, self-test, tests); see `finish` for the nodes."""
    run = start(volume_node, checkpoint, scene, device, env, python)
    events = jobs.wait_collecting(run, on_event, timeout_s)
    out = run.finish()
    out.events = events
    return out

"""MRML nodes <-> (array_ijk, ijk_to_ras) in the conventions of `kneeoa.data.volume`.

A volume node stores its voxels in a vtkImageData (numpy view in (k, j, i) order, see
`slicer.util.arrayFromVolume`) and its geometry as IJK-to-RAS on the node. `kneeoa` arrays are
(i, j, k) with a 4x4 ijk->RAS affine, the NIfTI convention, so the only conversion is a transpose;
nothing is reoriented. Segmentations are turned into one label map on the grid of a reference
volume, with the OAI-ZIB-CM label values (1 femur, 2 femoral cartilage, 3 tibia, 4 medial tibial
cartilage, 5 lateral tibial cartilage) chosen by segment name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.segmentation import SEGMENT_COLORS, SEGMENT_TITLES
from kneeoa.errors import InputError

# label value -> (segment name, colour), both from kneeoa.contracts.segmentation. Names ('Femoral cartilage')
# are what we give imported segments and what we look for when exporting a segmentation the user made.
KNEE_LABELS: dict[int, tuple[str, tuple[float, float, float]]] = {
    value: (SEGMENT_TITLES[value], colour) for value, colour in SEGMENT_COLORS.items()}
_ORTHO_ATOL = 1e-4


def _scene(scene: Any = None) -> Any:
    import slicer

    return scene if scene is not None else slicer.mrmlScene


@contextmanager
def _scratch(scene: Any, keep: tuple = ()) -> Iterator[None]:
    """Remove every node added inside the block (temp label maps, their display nodes, the colour tables
    Slicer's export makes) except `keep`; re-grading then does not pile up hidden nodes."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in before and not any(node is k for k in keep) \
                    and not node.IsA("vtkMRMLSubjectHierarchyNode"):
                scene.RemoveNode(node)


def remove_node(node: Any, scene: Any = None) -> None:
    """Remove a node with its display and storage nodes (the scene alone leaves those behind)."""
    scene = _scene(scene)
    for i in reversed(range(node.GetNumberOfDisplayNodes() if hasattr(node, "GetNumberOfDisplayNodes") else 0)):
        scene.RemoveNode(node.GetNthDisplayNode(i))
    if hasattr(node, "GetStorageNode") and node.GetStorageNode() is not None:
        scene.RemoveNode(node.GetStorageNode())
    scene.RemoveNode(node)


def ijk_to_ras(node: Any) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix as a numpy array."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def array_from_volume_node(node: Any) -> tuple[np.ndarray, np.ndarray]:
    """(array_ijk copy, ijk_to_ras) of a scalar/label volume node; InputError if it has no voxels."""
    import slicer.util

    if node is None or node.GetImageData() is None:
        raise InputError(f"volume node {_node_name(node)!r} holds no image data")
    if node.GetParentTransformNode() is not None:
        # A transform would move the voxels in the viewers but not in the exported array.
        raise InputError(f"volume node {_node_name(node)!r} is under a transform; harden or remove it first")
    array_kji = slicer.util.arrayFromVolume(node)
    if array_kji.ndim != 3:
        raise InputError(f"volume node {_node_name(node)!r} has {array_kji.ndim} array dimensions, expected 3")
    return np.ascontiguousarray(array_kji.transpose(2, 1, 0)).copy(), ijk_to_ras(node)


def check_node_affine(affine: np.ndarray) -> np.ndarray:
    """A node can only hold spacing x rotation + origin: reject shear or a singular matrix (ValueError)."""
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError("ijk_to_ras must be a finite 4x4 matrix")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing < 1e-12):
        raise ValueError("ijk_to_ras has a zero-length axis")
    directions = affine[:3, :3] / spacing
    if not np.allclose(directions.T @ directions, np.eye(3), atol=_ORTHO_ATOL):
        raise ValueError("ijk_to_ras has shear (non-orthogonal axes); a Slicer volume node cannot hold it")
    return affine


def volume_node_from_array(array_ijk: np.ndarray, affine: np.ndarray, name: str, scene: Any = None,
                           node: Any = None, is_label: bool = False) -> Any:
    """Create (or update `node`) a volume node holding `array_ijk` with ijk->RAS `affine`."""
    import slicer.util
    import vtk

    affine = check_node_affine(affine)
    array = np.asarray(array_ijk)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array (i, j, k), got shape {array.shape}")
    # vtk has no int64 image type in updateVolumeFromArray: labels go to int16, images to float32.
    array = array.astype(np.int16 if is_label else np.float32, copy=False)
    if node is None:
        cls = "vtkMRMLLabelMapVolumeNode" if is_label else "vtkMRMLScalarVolumeNode"
        node = _scene(scene).AddNewNodeByClass(cls, name)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(affine[r, c]))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array.transpose(2, 1, 0)))
    node.SetIJKToRASMatrix(matrix)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def same_grid(node_a: Any, node_b: Any, atol_mm: float = 1e-3) -> bool:
    """True if two volume nodes have the same dimensions and IJK-to-RAS (within atol_mm)."""
    dims_a, dims_b = node_a.GetImageData().GetDimensions(), node_b.GetImageData().GetDimensions()
    return tuple(dims_a) == tuple(dims_b) and np.allclose(ijk_to_ras(node_a), ijk_to_ras(node_b), atol=atol_mm)


def label_value_for_segment(name: str) -> int | None:
    """OAI-ZIB-CM label value for a segment name ('Femoral cartilage', 'femoral_cartilage', 'Label_2', '2')."""
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    for value, (label_name, _) in KNEE_LABELS.items():
        if key == label_name.lower():
            return value
    match = re.fullmatch(r"(?:label ?)?(\d+)", key)
    return int(match.group(1)) if match else None


def labelmap_from_segmentation(segmentation_node: Any, reference_node: Any, scene: Any = None) -> np.ndarray:
    """One (i, j, k) label array on the reference volume's grid; values from the segment names.

    Segments are exported one at a time, so the values do not depend on segment order; a later
    segment overwrites an earlier one where they overlap. Unknown segment names raise InputError
    (a silently guessed label would put saliency on the wrong tissue).
    """
    import slicer

    scene = _scene(scene)
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if not ids:
        raise InputError(f"segmentation {_node_name(segmentation_node)!r} has no segments")
    values = {}
    for segment_id in ids:
        name = segmentation.GetSegment(segment_id).GetName()
        value = label_value_for_segment(name)
        if value is None or not 0 < value < 256:
            known = ", ".join(f"{n} ({v})" for v, (n, _) in KNEE_LABELS.items())
            raise InputError(f"segment {name!r} of {_node_name(segmentation_node)!r} is not a knee label; "
                             f"name segments {known} or Label_<value>")
        values[segment_id] = value
    dims_ijk = tuple(reference_node.GetImageData().GetDimensions())
    out = np.zeros(dims_ijk, dtype=np.uint8)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    with _scratch(scene):
        temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__kneeoa_export")
        for segment_id, value in values.items():
            if not logic.ExportSegmentsToLabelmapNode(segmentation_node, [segment_id], temp, reference_node):
                raise InputError(f"cannot export segment {segment_id!r} of {_node_name(segmentation_node)!r}")
            part, _ = array_from_volume_node(temp)
            if part.shape != dims_ijk:
                raise InputError(f"segment {segment_id!r} exported on grid {part.shape}, expected {dims_ijk}")
            out[part > 0] = value
    return out


def mask_array_for_volume(mask_node: Any, volume_node: Any, scene: Any = None) -> np.ndarray:
    """Label array (i, j, k) on the volume's grid from a segmentation node or a label map node."""
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        return labelmap_from_segmentation(mask_node, volume_node, scene)
    if not mask_node.IsA("vtkMRMLVolumeNode"):
        raise InputError(f"{_node_name(mask_node)!r} is neither a segmentation nor a label map")
    if same_grid(mask_node, volume_node):
        array, _ = array_from_volume_node(mask_node)
        return _as_uint8_labels(array, mask_node)
    # Another grid: let Slicer resample it through a temporary segmentation, keeping the label values.
    array, affine = array_from_volume_node(mask_node)
    with _scratch(_scene(scene)):
        segmentation = segmentation_from_labelmap(_as_uint8_labels(array, mask_node), affine,
                                                  "__kneeoa_resample", scene)
        return labelmap_from_segmentation(segmentation, volume_node, scene)


def _as_uint8_labels(array: np.ndarray, node: Any) -> np.ndarray:
    rounded = np.rint(array)
    if not np.array_equal(rounded, array) or array.min() < 0 or array.max() > 255:
        raise InputError(f"label map {_node_name(node)!r} holds values that are not labels 0..255")
    return rounded.astype(np.uint8)


def segmentation_from_labelmap(array_ijk: np.ndarray, affine: np.ndarray, name: str,
                               scene: Any = None, node: Any = None) -> Any:
    """Segmentation node (new, or `node` refilled) with one segment per label value, named and coloured
    as KNEE_LABELS."""
    import slicer

    scene = _scene(scene)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    else:
        node.GetSegmentation().RemoveAllSegments()
    segmentation_node = node
    with _scratch(scene, keep=(segmentation_node,)):
        labels = volume_node_from_array(array_ijk, affine, "__kneeoa_import", scene, is_label=True)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labels, segmentation_node):
            raise InputError(f"cannot import label map {name!r} into a segmentation")
    segmentation = segmentation_node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        label_name, colour = KNEE_LABELS.get(segment.GetLabelValue(), (f"Label_{segment.GetLabelValue()}", None))
        segment.SetName(label_name)
        if colour is not None:
            segment.SetColor(*colour)
    segmentation_node.CreateDefaultDisplayNodes()
    return segmentation_node


def write_volume_node(node: Any, path: str | Path) -> Path:
    """Write a volume node as NIfTI (float32, its own grid)."""
    from kneeoa.data.volume import write_nifti

    array, affine = array_from_volume_node(node)
    return write_nifti(path, array, affine)


def write_mask_for_volume(mask_node: Any, volume_node: Any, path: str | Path, scene: Any = None) -> Path:
    """Write a segmentation/label map as a uint8 NIfTI label map on the volume's grid."""
    from kneeoa.data.volume import write_nifti

    return write_nifti(path, mask_array_for_volume(mask_node, volume_node, scene), ijk_to_ras(volume_node),
                       is_label=True)


def load_volume_node(path: str | Path, name: str, scene: Any = None, is_label: bool = False,
                     reference_node: Any = None, node: Any = None) -> Any:
    """Read a volume file into a new node (or refill `node`); with `reference_node`, it must lie on that
    grid and takes its exact IJK-to-RAS (NIfTI may store the affine in float32, ~1e-6 mm off)."""
    from kneeoa.data.volume import read_volume

    volume = read_volume(path, is_label=is_label)
    affine = volume.affine
    if reference_node is not None:
        dims = tuple(reference_node.GetImageData().GetDimensions())
        reference = ijk_to_ras(reference_node)
        if volume.shape != dims or not np.allclose(affine, reference, atol=1e-3):
            raise InputError(f"volume grid {volume.shape} does not match {_node_name(reference_node)!r} {dims}",
                             path)
        affine = reference
    return volume_node_from_array(volume.array, affine, name, scene, node=node, is_label=is_label)


def _node_name(node: Any) -> str:
    return node.GetName() if node is not None else "None"

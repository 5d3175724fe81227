"""How KneeOA results look in Slicer: saliency as a foreground layer, cartilage as outlines.

Only display settings live here; the saliency values come from `kneeoa` (min-max scaled to [0, 1]
on the original grid), so a fixed window 0..1 shows every map on the same scale.
"""

from __future__ import annotations

from typing import Any

from kneeoa.contracts.vocab import CARTILAGE_LABELS
from kneeoa.slicer.nodes import KNEE_LABELS

# Perceptual, monotone in lightness and colour-blind safe: a map reads the same in grey print.
SALIENCY_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileInferno.txt"
# Saliency below this (of the [0, 1] map) is hidden, so the MRI stays visible where the model did not look.
DEFAULT_SALIENCY_THRESHOLD = 0.1
DEFAULT_SALIENCY_OPACITY = 0.5
# Marks segmentations KneeOA outlines, so switching volumes hides the previous one (and only ours).
CARTILAGE_ATTRIBUTE = "KneeOA.Cartilage"


def show_saliency(saliency_node: Any, threshold: float = DEFAULT_SALIENCY_THRESHOLD,
                  color_node_id: str = SALIENCY_COLOR_NODE_ID) -> Any:
    """Set the saliency node's display: colour map, fixed 0..1 window, near-zero values hidden."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"saliency threshold must lie in [0, 1], got {threshold}")
    if saliency_node.GetDisplayNode() is None:
        saliency_node.CreateDefaultDisplayNodes()
    display = saliency_node.GetDisplayNode()
    was_modifying = display.StartModify()
    display.SetAndObserveColorNodeID(color_node_id)
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(float(threshold))
    display.SetUpperThreshold(1.0e6)
    display.SetInterpolate(True)
    display.EndModify(was_modifying)
    return display


def show_cartilage_outlines(segmentation_node: Any, labels: tuple[int, ...] = CARTILAGE_LABELS,
                            thickness: int = 2) -> Any:
    """Cartilage segments as 2D outlines (no fill) so the saliency under them stays visible; bones hidden."""
    from kneeoa.slicer.nodes import label_value_for_segment

    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetAttribute(CARTILAGE_ATTRIBUTE, "1")
    display = segmentation_node.GetDisplayNode()
    was_modifying = display.StartModify()
    display.SetVisibility(True)
    display.SetVisibility2DFill(False)
    display.SetVisibility2DOutline(True)
    display.SetSliceIntersectionThickness(int(thickness))
    segmentation = segmentation_node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        value = label_value_for_segment(segmentation.GetSegment(segment_id).GetName())
        display.SetSegmentVisibility(segment_id, value in labels)
    display.EndModify(was_modifying)
    return display


def cartilage_legend(labels: tuple[int, ...] = CARTILAGE_LABELS) -> list[tuple[str, tuple[float, float, float]]]:
    """(name, colour) of the outlined cartilage compartments, for a legend next to the viewers."""
    return [KNEE_LABELS[v] for v in labels if v in KNEE_LABELS]


def show_in_viewers(volume_node: Any, saliency_node: Any = None, segmentation_node: Any = None,
                    opacity: float = DEFAULT_SALIENCY_OPACITY) -> None:
    """MRI in the background and saliency in the foreground of every slice view; cartilage outlined.

    Works on the scene's slice composite nodes, so it runs headless too; fitting the views needs the app.
    """
    import slicer

    if segmentation_node is not None:
        show_cartilage_outlines(segmentation_node)
    slicer.util.setSliceViewerLayers(background=volume_node, foreground=saliency_node,
                                     foregroundOpacity=float(opacity) if saliency_node is not None else 0.0,
                                     fit=hasattr(slicer, "app"))
    # Only this volume's cartilage is outlined: hide the other graded volumes' segmentations.
    for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode"):
        display = node.GetDisplayNode()
        if display is not None and (node is segmentation_node or node.GetAttribute(CARTILAGE_ATTRIBUTE) == "1"):
            display.SetVisibility(node is segmentation_node)

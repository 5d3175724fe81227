"""Render what the KneeOAGrading module shows, as PNGs for the README (no Slicer GUI needed).

The data is real: phantom cases are loaded into MRML nodes (slicer-core), graded by the module's
own path (`kneeoa.slicer.grading.grade` -> `kneeoa grade` in a child process), and the figures are
drawn from the nodes it creates: the saliency node with its display settings, the cartilage
segmentation, the result table, the KL table and the graded-volumes table. Only the drawing is
matplotlib instead of Slicer's views.

    .venv/bin/python Resources/Screenshots/make_grading_figures.py --cohort COHORT --checkpoint CKPT
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kneeoa.slicer import display, grading, jobs, nodes, results  # noqa: E402

HERE = Path(__file__).resolve().parent
PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}  # by the RAS axis normal to the slice
OUTLINE = {2: "#3399ff", 4: "#1ad973", 5: "#ff8c1a"}  # the KNEE_LABELS colours of the cartilage


def _slice(volume: np.ndarray, affine: np.ndarray, normal_ras: int, index: int) -> tuple[np.ndarray, str, str]:
    """2D slice normal to a RAS axis, oriented with S (or A) up; returns it and the axis letters."""
    world = np.abs(affine[:3, :3]).argmax(axis=0)  # RAS axis of each array axis
    sign = np.sign(affine[world, range(3)])
    axis = int(np.where(world == normal_ras)[0][0])
    plane = np.take(volume, index, axis=axis)
    rest = [a for a in range(3) if a != axis]
    up = max(rest, key=lambda a: world[a])  # S over A over R
    right = rest[0] if up == rest[1] else rest[1]
    img = plane if rest == [right, up] else plane.T  # rows = right axis, cols = up axis
    img = img.T[::-1]  # now rows = up (top = max index), cols = right
    if sign[up] < 0:
        img = img[::-1]
    if sign[right] < 0:
        img = img[:, ::-1]
    return img, "RAS"[world[up]], "RAS"[world[right]]


def _draw_views(axes, mri, saliency, labels, affine, threshold, opacity) -> None:
    # per plane, the slice where the saliency on the cartilage is largest
    on_cartilage = np.where(np.isin(labels, list(OUTLINE)), saliency, 0.0)
    world = np.abs(affine[:3, :3]).argmax(axis=0)
    for ax, normal in zip(axes, (0, 1, 2)):
        axis = int(np.where(world == normal)[0][0])
        index = int(on_cartilage.sum(axis=tuple(a for a in range(3) if a != axis)).argmax())
        img, up, right = _slice(mri, affine, normal, index)
        sal, _, _ = _slice(saliency, affine, normal, index)
        lab, _, _ = _slice(labels, affine, normal, index)
        lo, hi = np.percentile(mri, [1, 99.5])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        shown = np.ma.masked_less(sal, threshold)  # near-zero saliency hidden, as the display node does
        ax.imshow(shown, cmap="inferno", vmin=0.0, vmax=1.0, alpha=opacity, interpolation="bilinear")
        for value, colour in OUTLINE.items():
            if (lab == value).any():
                ax.contour(lab == value, levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(f"{PLANES[normal]} (up {up}, right {right})", fontsize=9)
        ax.axis("off")


def _table(ax, rows, title, col_widths=(0.74, 0.26), font=8) -> None:
    ax.axis("off")
    rows = [[textwrap.shorten(str(cell), 120) for cell in row] for row in rows]
    ax.set_title(title, fontsize=10, loc="left")
    table = ax.table(cellText=rows, colWidths=list(col_widths), loc="upper left", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(font)
    table.scale(1, 1.25)


def overview(result: grading.GradingResult, scene, out: Path) -> Path:
    """MRI + saliency + cartilage outlines in three planes, the result table, the KL chart, the model card."""
    mri, affine = nodes.array_from_volume_node(result.volume_node)
    saliency, _ = nodes.array_from_volume_node(result.saliency_node)
    labels = nodes.labelmap_from_segmentation(result.cartilage_node, result.volume_node, scene)
    shown = result.saliency_node.GetDisplayNode()
    fig = plt.figure(figsize=(13, 8.2))
    grid = fig.add_gridspec(3, 3, width_ratios=[1, 1, 1.15], height_ratios=[1, 1, 0.9], wspace=0.12, hspace=0.35)
    _draw_views([fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[1, 0])],
                mri, saliency, labels, affine, shown.GetLowerThreshold(), display.DEFAULT_SALIENCY_OPACITY)
    legend = fig.add_subplot(grid[1, 1])
    legend.axis("off")
    for i, (name, colour) in enumerate(display.cartilage_legend()):
        legend.plot([0.05, 0.2], [0.8 - 0.15 * i] * 2, color=colour, lw=2.5)
        legend.text(0.25, 0.8 - 0.15 * i, name, va="center", fontsize=9)
    legend.text(0.05, 0.3, f"saliency: {result.result.get('saliency_target', {}).get('head', '')} head, "
                f"hidden below {shown.GetLowerThreshold():.2f}, inferno", fontsize=8)
    legend.set_xlim(0, 1)
    legend.set_ylim(0, 1)
    rows = results.table_rows(result.result_table_node)
    _table(fig.add_subplot(grid[0:2, 2]), rows, f"{result.volume_node.GetName()}: {results.summary_text(result.result)}"[:95])
    chart = fig.add_subplot(grid[2, 0])
    kl_table = result.kl_table_node.GetTable()
    grades = [kl_table.GetValue(i, 0).ToDouble() for i in range(kl_table.GetNumberOfRows())]
    probs = [kl_table.GetValue(i, 1).ToDouble() for i in range(kl_table.GetNumberOfRows())]
    chart.bar(grades, probs, color=["#3b4cc0" if g != result.pred_kl else "#f98e09" for g in grades])
    chart.set_ylim(0, 1)
    chart.set_xlabel("KL grade")
    chart.set_ylabel("Probability")
    chart.set_title("KL grade probabilities", fontsize=10)
    _table(fig.add_subplot(grid[2, 1:]), results.card_rows(result.card), "Model card", (0.2, 0.8), 7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def graded_volumes(graded: list[grading.GradingResult], scene, out: Path) -> Path:
    """The graded-volumes table and one sagittal view per graded volume (clicking a row shows it)."""
    fig = plt.figure(figsize=(13, 5.2))
    grid = fig.add_gridspec(2, len(graded), height_ratios=[1.1, 1], hspace=0.25)
    for i, result in enumerate(graded):
        mri, affine = nodes.array_from_volume_node(result.volume_node)
        saliency, _ = nodes.array_from_volume_node(result.saliency_node)
        labels = nodes.labelmap_from_segmentation(result.cartilage_node, result.volume_node, scene)
        ax = fig.add_subplot(grid[0, i])
        _draw_views([ax], mri, saliency, labels, affine, display.DEFAULT_SALIENCY_THRESHOLD,
                    display.DEFAULT_SALIENCY_OPACITY)
        ax.set_title(f"{result.volume_node.GetName()}\nKL {result.pred_kl}, OA p={result.oa_prob:.2f}", fontsize=9)
    table = results.update_graded_table(results.graded_table(scene), scene)
    rows = [row[:-1] for row in results.table_rows(table)]  # the node ID column is for row selection
    ax = fig.add_subplot(grid[1, :])
    ax.axis("off")
    shown = ax.table(cellText=rows, colLabels=list(results.GRADED_COLUMNS[:-1]), loc="upper center", cellLoc="left")
    shown.auto_set_font_size(False)
    shown.set_fontsize(9)
    shown.scale(1, 1.3)
    ax.set_title("KneeOA graded volumes (click a row to bring that volume, its saliency and cartilage into view)",
                 fontsize=10)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", required=True, type=Path, help="phantom cohort (OAI-ZIB-CM layout)")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--cases", nargs="+", default=["oaizib_085", "oaizib_082", "oaizib_087", "oaizib_091"])
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()

    import slicer
    from slicer import vtkMRMLScene

    slicer.mrmlScene = scene = vtkMRMLScene()
    graded = []
    for case in args.cases:
        folder = "imagesTr" if (args.cohort / "imagesTr" / f"{case}_0000.nii.gz").exists() else "imagesTs"
        volume = nodes.load_volume_node(args.cohort / folder / f"{case}_0000.nii.gz", case, scene)
        labels = nodes.load_volume_node(args.cohort / folder.replace("images", "labels") / f"{case}.nii.gz",
                                        f"{case} labels", scene, is_label=True)
        graded.append(grading.grade(volume, grading.GradingOptions(args.checkpoint, device="cpu"), labels, scene,
                                    env=jobs.job_environment()))
        print(case, results.summary_text(graded[-1].result))
    print(overview(graded[0], scene, args.out_dir / "grading-overview.png"))
    print(graded_volumes(graded, scene, args.out_dir / "grading-graded-volumes.png"))


if __name__ == "__main__":
    main()

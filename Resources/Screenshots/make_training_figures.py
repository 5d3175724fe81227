"""Render what the KneeOATraining module shows, as a PNG for the README (no Slicer GUI needed).

The data is real and goes the module's own way: a phantom cohort, `kneeoa train` in a background job
whose JSON progress feeds the loss plot nodes, then `kneeoa predict --embeddings` + `kneeoa latent`
into the latent scatter nodes (one series per KL grade), and a picked point's case loaded into MRML
nodes. The figure is drawn from those nodes; only the drawing is matplotlib instead of Slicer's views.

    .venv/bin/python Resources/Screenshots/make_training_figures.py --work /tmp/kneeoa-training-figure
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from make_grading_figures import OUTLINE, _slice, _table  # noqa: E402  (same folder: the grading figures' helpers)

from kneeoa.slicer import jobs, latent_cases, latent_plot, nodes, training  # noqa: E402

HERE = Path(__file__).resolve().parent


def train(cohort: Path, run: Path, epochs: int) -> training.TrainingMonitor:
    """One dual ResNet3D on the quick preset, as the Train button runs it; prints the status lines."""
    options = training.TrainingOptions(cohort, run, epochs=epochs, device="cpu")
    job = jobs.Job(training.train_command(options), env=jobs.job_environment()).start()
    monitor = training.TrainingMonitor()
    if job.wait(lambda e: monitor.update(e) and print(monitor.status())) != 0:
        raise SystemExit(job.error_message())
    return monitor


def figure(monitor, loss_table, plot: latent_plot.LatentPlot, summary: dict, case: dict, loaded: dict,
           out: Path) -> Path:
    fig = plt.figure(figsize=(14, 8.4))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.15, 1.25, 0.9], height_ratios=[1, 1], wspace=0.3, hspace=0.32)

    ax = fig.add_subplot(grid[0, 0])
    table = loss_table.GetTable()
    columns = {name: [table.GetValueByName(r, name).ToDouble() for r in range(table.GetNumberOfRows())]
               for name in training.LOSS_COLUMNS}
    ax.plot(columns["Epoch"], columns["Loss"], "o-", color="#b2182b", label="loss")
    ax.plot(columns["Epoch"], columns["Train accuracy"], "o-", color="#2166ac",
            label=monitor.history[-1]["metric_name"].replace("_", " "))
    ax.set_xlabel("Epoch")
    ax.set_title("Live loss plot (per epoch, from the JSON progress)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)

    ax = fig.add_subplot(grid[:, 1])
    for grade in sorted(plot.tables, key=lambda g: (g == latent_plot.UNGRADED, g)):
        pts = latent_plot.table_points(plot.tables[grade])
        colour = plot.series[grade].GetColor()
        ax.scatter([p["pc1"] for p in pts], [p["pc2"] for p in pts], s=42, color=colour, edgecolors="#333333",
                   linewidths=0.4, label=plot.series[grade].GetName())
    ax.scatter([case["pc1"]], [case["pc2"]], s=220, facecolors="none", edgecolors="black", linewidths=1.6)
    ax.annotate(f"clicked: {case['case_id']}", (case["pc1"], case["pc2"]), xytext=(-12, 12),
                textcoords="offset points", ha="right", fontsize=8)
    ax.set_xlabel(plot.chart_node.GetXAxisTitle())
    ax.set_ylabel(plot.chart_node.GetYAxisTitle())
    ax.set_title(plot.chart_node.GetTitle(), fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="best")
    ax.spines[["top", "right"]].set_visible(False)

    _table(fig.add_subplot(grid[1, 0]), latent_plot.summary_rows(summary), "Numbers beside the plot", (0.78, 0.3), 8)

    ax = fig.add_subplot(grid[:, 2])
    mri, affine = nodes.array_from_volume_node(loaded["volume"])
    labels = nodes.labelmap_from_segmentation(loaded["cartilage"], loaded["volume"])
    world = np.abs(affine[:3, :3]).argmax(axis=0)
    axis = int(np.where(world == 0)[0][0])  # sagittal: the slice with the most cartilage
    index = int(np.isin(labels, list(OUTLINE)).sum(axis=tuple(a for a in range(3) if a != axis)).argmax())
    img, up, right = _slice(mri, affine, 0, index)
    lab, _, _ = _slice(labels, affine, 0, index)
    ax.imshow(img, cmap="gray", vmin=np.percentile(mri, 1), vmax=np.percentile(mri, 99.5), interpolation="nearest")
    for value, colour in OUTLINE.items():
        if (lab == value).any():
            ax.contour(lab == value, levels=[0.5], colors=[colour], linewidths=1.2)
    kl = "ungraded" if case["kl"] is None else f"KL {case['kl']}"
    ax.set_title(f"{case['case_id']} ({case['split']}, {kl}) loaded with its cartilage\n"
                 f"sagittal (up {up}, right {right})", fontsize=9)
    ax.axis("off")
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (cohort, run, latent tables)")
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--test", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "training-latent.png")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")

    import slicer
    from slicer import vtkMRMLScene

    from kneeoa.data.phantom import generate_cohort

    slicer.mrmlScene = scene = vtkMRMLScene()
    cohort, run = args.work / "cohort", args.work / "run"
    if not cohort.is_dir():
        generate_cohort(cohort, args.train, args.test, shape=(32, 32, 32), seed=0)
    monitor = train(cohort, run, args.epochs) if not training.run_state(run).finished else None
    if monitor is None:
        monitor = training.TrainingMonitor()
        monitor.load_history(run)
    loss_table, _ = training.update_loss_plot(monitor.history, scene)

    source = latent_cases.run_source(latent_cases.latent_source(run, compute=True, device="cpu"))
    points = latent_plot.read_points(source.points_csv)
    name = latent_plot.model_names(points)[0]
    plot = latent_plot.update_latent_plot(points, name, scene, split="test")
    summary = latent_plot.read_summary(source.summary_csv)[name]
    print(dict(latent_plot.summary_rows(summary)))
    case = max(latent_plot.plot_points(plot), key=lambda p: p["pc1"])  # the case a user clicks: far right on PC1
    loaded = latent_cases.load_case(case["case_id"], latent_cases.CaseIndex(source.cohort_root), scene)
    print(figure(monitor, loss_table, plot, summary, case, loaded, args.out))


if __name__ == "__main__":
    main()

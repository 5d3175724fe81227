"""Draw the extension icon (Resources/Icons/KneeOA.png) and the KneeOAGrading module icon, 128x128 PNG.

    .venv/bin/python Resources/Icons/make_icons.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, Ellipse, FancyBboxPatch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BONE = "#e8dcc0"


def knee(ax) -> None:
    """Femur with two condyles, tibial plateau, the three cartilage compartments, a saliency hot spot."""
    ax.add_patch(FancyBboxPatch((0.08, 0.08), 0.84, 0.84, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc="#1b2838", ec="none"))
    ax.add_patch(Rectangle((0.40, 0.66), 0.20, 0.24, fc=BONE, ec="none"))
    t = np.linspace(np.pi * 1.05, np.pi * 1.95, 60)
    for cx in (0.40, 0.60):
        ax.add_patch(Ellipse((cx, 0.63), 0.24, 0.20, fc=BONE, ec="none"))
        ax.plot(cx + 0.125 * np.cos(t), 0.63 + 0.105 * np.sin(t), color="#3399ff", lw=3.2, solid_capstyle="round")
    ax.add_patch(FancyBboxPatch((0.24, 0.31), 0.52, 0.07, boxstyle="round,pad=0.01,rounding_size=0.03",
                                fc=BONE, ec="none"))
    ax.add_patch(Rectangle((0.40, 0.10), 0.20, 0.23, fc=BONE, ec="none"))
    ax.plot([0.27, 0.47], [0.40, 0.40], color="#1ad973", lw=3.2, solid_capstyle="round")
    ax.plot([0.53, 0.73], [0.40, 0.40], color="#ff8c1a", lw=3.2, solid_capstyle="round")
    for radius, colour, alpha in ((0.11, "#fcffa4", 0.35), (0.075, "#f98e09", 0.55), (0.04, "#bc3754", 0.8)):
        ax.add_patch(Circle((0.36, 0.46), radius, fc=colour, ec="none", alpha=alpha))  # inferno colours


def grading(ax) -> None:
    """The knee plus a small KL bar chart (grade 3 highlighted)."""
    knee(ax)
    for grade, height in enumerate((0.05, 0.08, 0.12, 0.2, 0.1)):
        ax.add_patch(Rectangle((0.66 + grade * 0.045, 0.70), 0.035, height,
                               fc="#f98e09" if grade == 3 else "#ffffff", ec="none"))


def save(path: Path, draw) -> None:
    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    draw(ax)
    fig.savefig(path, transparent=True)
    plt.close(fig)


if __name__ == "__main__":
    save(ROOT / "Resources" / "Icons" / "KneeOA.png", knee)
    save(ROOT / "KneeOAGrading" / "Resources" / "Icons" / "KneeOAGrading.png", grading)

"""Draw the KneeOATraining module icon (128x128 PNG): the extension's knee with a falling loss curve and
KL-coloured latent points.

    .venv/bin/python Resources/Icons/make_training_icon.py
"""

from __future__ import annotations

import numpy as np
from make_icons import ROOT, knee, save  # the extension icon's drawing (same folder)
from matplotlib.patches import Circle

from kneeoa.analysis.plots import KL_COLOURS


def training(ax) -> None:
    """The knee, a loss curve falling over epochs, and five latent points ordered by KL grade."""
    knee(ax)
    epochs = np.linspace(0.0, 1.0, 30)
    ax.plot(0.62 + 0.26 * epochs, 0.70 + 0.18 * np.exp(-4.0 * epochs), color="#ffffff", lw=2.4,
            solid_capstyle="round")
    for grade, colour in enumerate(KL_COLOURS):
        ax.add_patch(Circle((0.60 + 0.065 * grade, 0.19 + 0.035 * grade), 0.028, fc=colour, ec="#1b2838", lw=0.6))


if __name__ == "__main__":
    save(ROOT / "KneeOATraining" / "Resources" / "Icons" / "KneeOATraining.png", training)

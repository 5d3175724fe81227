"""matplotlib helpers every figure maker shares (analysis plots, report figures, the phantom preview, the
Slicer latent plot): the Agg backend, atomic saving, the KL colours. Top level so the data layer can draw
without importing `kneeoa.analysis`. matplotlib is imported only when a figure is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kneeoa.utils.atomic import atomic_path

# KL 0..4, cool below the OA cut and warm above; every colour readable on white (KL 2 was a pale yellow)
KL_COLOURS = ("#2166ac", "#5aa3d0", "#e08214", "#d6604d", "#8e0152")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on servers, no Tk inside Slicer)."""
    import matplotlib

    matplotlib.use("Agg")
    # titles and labels hold case ids and model names from files: "knee_$1" must be text, not mathtext (an
    # unbalanced `$` raises at draw time, at the end of an hour-long study)
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 130) -> Path:
    """Write a figure (format from the suffix) atomically, then close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    pyplot().close(fig)
    return path

"""One error family: every problem a user can cause is a `KneeOAError` naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class KneeOAError(Exception):
    """Base class. `str(err)` is the one message shown to the user."""

    def __init__(self, problem: str, path: str | Path | None = None):
        if path is None and "\nOriginal Traceback" in problem:
            # a DataLoader worker re-raises our error as type(err)(worker traceback): keep the one message line
            last = problem.rstrip().splitlines()[-1]
            problem = last.split(": ", 1)[1] if last.startswith("kneeoa.") and ": " in last else last
        self.problem = problem
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class InputError(KneeOAError):
    """An image, mask, table or folder that cannot be used as given."""


class CheckpointError(KneeOAError):
    """A checkpoint that is missing, truncated, unsafe or of another architecture."""


class ConfigError(KneeOAError):
    """Bad options or presets."""


# the words a JobError starts its problem with when the GPU lacks memory (Slicer then offers the CPU)
NOT_ENOUGH_GPU_MEMORY = "not enough GPU memory"


class JobError(KneeOAError):
    """A long job (training, scoring, study) that cannot go on, e.g. out of GPU memory."""


class DependencyError(KneeOAError):
    """A Python package KneeOA needs is not installed (inside 3D Slicer: install it from the module)."""


class DataWarning(UserWarning):
    """An input that can be used but may give a quietly wrong answer (empty cartilage mask, sheared affine,
    predictions made for other cases): the CLI prints it as one `kneeoa: warning:` line."""

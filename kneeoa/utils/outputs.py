"""The one no-clobber rule of every command and of the Python API: `check_outputs(outputs, inputs, overwrite)`.

An output that is one of the inputs is always refused (even with --overwrite: a bad path must never destroy
the data it reads); an output that exists already is refused unless `overwrite`. Checked before any work
starts, so a refused job leaves every file as it was. Standard library only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kneeoa.errors import ConfigError

PathLike = str | Path


def check_outputs(outputs: Iterable[PathLike | None], inputs: Iterable[PathLike | None] = (),
                  overwrite: bool = False, what: str = "output") -> list[Path]:
    """The outputs as Paths (None entries dropped); ConfigError naming the first that breaks the rule."""
    outs = [Path(p) for p in outputs if p is not None]
    ins = {Path(p).resolve() for p in inputs if p is not None}
    for out in outs:
        if out.resolve() in ins:
            raise ConfigError(f"{what} would overwrite an input; choose another output path", out)
    existing = [p for p in outs if p.exists()]
    if existing and not overwrite:
        many = f" ({len(existing)} outputs exist)" if len(existing) > 1 else ""
        raise ConfigError(f"{what} exists{many}; pass --overwrite to replace it", existing[0])
    return outs

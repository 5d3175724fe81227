"""Resources bundled with the extension (the demo model, the demo segmenter): where they lie, or the user's choice.

Standard library only.
"""

from __future__ import annotations

from pathlib import Path

from kneeoa.errors import CheckpointError


def candidates(module_file: str | Path, file_name: str) -> list[Path]:
    """Where a bundled resource lies: next to the installed module, or in a source checkout."""
    module_dir = Path(module_file).resolve().parent
    return [module_dir / "Resources" / file_name, module_dir.parent / "Resources" / file_name]


def resolve(chosen: str | Path | None, module_file: str | Path, file_name: str, chosen_what: str,
            bundled_what: str, missing_hint: str) -> Path:
    """The chosen file, or the bundled one; CheckpointError with a clear message if either is missing."""
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise CheckpointError(f"{chosen_what} file not found", path)
        return path
    for candidate in candidates(module_file, file_name):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"the bundled demo {bundled_what} is missing from this installation; {missing_hint}",
                          candidates(module_file, file_name)[0])

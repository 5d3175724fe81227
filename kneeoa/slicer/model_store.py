"""The KneeOA Grading model manager: a per-user folder of checkpoints, their cards listed, the demo model always
there and marked synthetic. Standard library only (cards are read from the safetensors header, no torch).

Import takes a `.safetensors` checkpoint, or a `.zip` holding one (as checkpoints are shared), optionally with a
SHA-256 to check (given by the user or as a `<name>.sha256` file next to it / inside the zip). Nothing is
unpickled or executed: a file without a KneeOA model card in its safetensors header is refused before it is
copied. The copy is atomic, under a name that never replaces another model.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from kneeoa.contracts.checkpoint_meta import read_card
from kneeoa.contracts.trust import TRUST_KEY
from kneeoa.errors import CheckpointError
from kneeoa.utils.hashing import sha256_of

MODELS_ENV = "KNEEOA_MODELS_DIR"
SUFFIX = ".safetensors"
_MAX_ZIP_MEMBER = 4 * 2**30  # a checkpoint inside a zip larger than this is refused (a zip bomb, not a model)


def models_folder() -> Path:
    """The per-user models folder: $KNEEOA_MODELS_DIR, else ~/.kneeoa/models (created on first import)."""
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".kneeoa" / "models").expanduser()


@dataclass(frozen=True)
class ModelEntry:
    """One listed checkpoint and what its card says."""

    name: str
    path: Path
    backbone: str
    variant: str
    trained_on: str
    calibrated: bool
    synthetic: bool
    bundled: bool = False

    def label(self) -> str:
        """One line for the model list: 'demo_model - resnet3d dual, synthetic, bundled'."""
        marks = [m for m, on in (("calibrated", self.calibrated), ("SYNTHETIC", self.synthetic),
                                 ("bundled", self.bundled)) if on]
        return f"{self.name} - {self.backbone} {self.variant}" + (f" ({', '.join(marks)})" if marks else "")


def entry_for(path: str | Path, bundled: bool = False) -> ModelEntry:
    """A list entry from a checkpoint's card; CheckpointError when the file has no KneeOA card."""
    path = Path(path)
    card = read_card(path)
    spec = card.get("spec") if isinstance(card.get("spec"), dict) else {}
    trained_on = str(card.get("training_data") or "not stated")
    trust = card.get(TRUST_KEY)
    return ModelEntry(name=path.stem, path=path, backbone=str(spec.get("backbone", "?")),
                      variant=str(spec.get("variant", "?")), trained_on=trained_on,
                      calibrated=isinstance(trust, dict) and bool(trust),
                      synthetic=bundled or "synthetic" in trained_on.lower(), bundled=bundled)


def list_models(folder: str | Path | None = None, bundled: list[Path] | tuple[Path, ...] = ()) -> list[ModelEntry]:
    """The bundled models (first, always) and every readable checkpoint in `folder`, by name. Files without a
    card are left out of the list (they are not KneeOA models)."""
    entries = [entry_for(p, bundled=True) for p in bundled if Path(p).is_file()]
    folder = models_folder() if folder is None else Path(folder)
    for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        try:
            entries.append(entry_for(path))
        except CheckpointError:
            continue
    return entries


def _expected_sha(text: str | None) -> str | None:
    """A SHA-256 from the user's text or a `.sha256` file's first word (sha256sum's format)."""
    if not text:
        return None
    word = text.strip().split()[0].lower() if text.strip() else ""
    if not re.fullmatch(r"[0-9a-f]{64}", word):
        raise CheckpointError(f"not a SHA-256 checksum: {text.strip()[:80]!r}")
    return word


def _unique(folder: Path, stem: str) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "model"
    path, n = folder / f"{stem}{SUFFIX}", 2
    while path.exists():
        path, n = folder / f"{stem}_{n}{SUFFIX}", n + 1
    return path


def _from_zip(source: Path, work: Path) -> tuple[Path, str | None]:
    """The one checkpoint inside a zip (and its .sha256 member, if any), extracted into `work`."""
    try:
        with zipfile.ZipFile(source) as zf:
            members = [i for i in zf.infolist() if not i.is_dir()]
            models = [i for i in members if i.filename.endswith(SUFFIX)]
            if len(models) != 1:
                raise CheckpointError(f"a model zip must hold exactly one {SUFFIX} file, found {len(models)}",
                                      source)
            member = models[0]
            if member.file_size > _MAX_ZIP_MEMBER:
                raise CheckpointError(f"{member.filename} would inflate to {member.file_size} bytes", source)
            target = work / Path(member.filename).name
            with zf.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            sums = [i for i in members if i.filename.endswith(".sha256")]
            checksum = zf.read(sums[0]).decode("utf-8", "replace") if sums else None
    except zipfile.BadZipFile:
        raise CheckpointError("not a readable zip archive", source) from None
    return target, checksum


def import_model(source: str | Path, folder: str | Path | None = None, sha256: str | None = None) -> ModelEntry:
    """Copy a checkpoint (or the one in a zip) into the models folder after checking its card and, when one is
    given (argument, `<file>.sha256` beside it, or inside the zip), its SHA-256. Returns the new entry."""
    source = Path(source).expanduser()
    if not source.is_file():
        raise CheckpointError("file not found", source)
    folder = models_folder() if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kneeoa-import-", dir=folder) as tmp:
        if zipfile.is_zipfile(source) and source.suffix.lower() == ".zip":
            checkpoint, packed_sum = _from_zip(source, Path(tmp))
        else:
            checkpoint = source
            beside = source.with_name(source.name + ".sha256")
            packed_sum = beside.read_text(encoding="utf-8", errors="replace") if beside.is_file() else None
        expected = _expected_sha(sha256) or _expected_sha(packed_sum)
        if expected is not None and sha256_of(checkpoint) != expected:
            raise CheckpointError("SHA-256 checksum does not match: the file is damaged or not the one "
                                  "published", source)
        entry_for(checkpoint)  # refuses a file without a KneeOA card before anything is kept
        staged = Path(tmp) / ("staged" + SUFFIX)
        shutil.copyfile(checkpoint, staged)
        target = _unique(folder, checkpoint.stem)
        os.replace(staged, target)
    return entry_for(target)


def remove_model(entry: ModelEntry) -> None:
    """Delete an imported model from the models folder; the bundled demo model cannot be removed."""
    if entry.bundled:
        raise CheckpointError("the bundled demo model is part of the extension and cannot be removed", entry.path)
    entry.path.unlink(missing_ok=True)

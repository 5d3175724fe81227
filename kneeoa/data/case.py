"""A cohort's cases: `Case` (image, optional mask, KL grade, split) and `Cohort`, with the checks the readers
share. Its own module so the readers (`kneeoa.data.oaizib`, `kneeoa.data.folder`) and `kneeoa.data.cohort`
(which picks a reader) do not import each other.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kneeoa.contracts.vocab import SPLITS
from kneeoa.errors import InputError
from kneeoa.hierarchy import KL_GRADES, oa_from_kl


class CohortWarning(UserWarning):
    """Something in a cohort folder was skipped or is incomplete, but the cohort is still usable."""


def warn(message: str) -> None:
    """Report a cohort problem that does not stop loading."""
    warnings.warn(message, CohortWarning, stacklevel=3)


@dataclass
class Case:
    """One knee: its image, optional segmentation mask, KL grade (None = ungraded) and split."""

    case_id: str
    image: Path
    mask: Path | None = None
    kl: int | None = None
    split: str = "unlabelled"
    cmt_id: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def oa(self) -> int | None:
        """OA label (KL >= 2), None when ungraded."""
        return None if self.kl is None else int(oa_from_kl(int(self.kl)))


@dataclass
class Cohort:
    """Cases of one cohort folder; `kind` is 'oaizib' or 'folder'."""

    root: Path
    kind: str
    cases: list[Case]
    ungraded: list[str] = field(default_factory=list)

    def split(self, name: str, graded_only: bool = True) -> list[Case]:
        """Cases of split `name` ('train', 'test', 'unlabelled' or 'all'); ungraded ones left out by default."""
        if name not in (*SPLITS, "all"):
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join((*SPLITS, 'all'))}")
        return [c for c in self.cases
                if (name == "all" or c.split == name) and not (graded_only and c.kl is None)]

    def case(self, case_id: str) -> Case:
        """The case with this id."""
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)

    def summary(self) -> dict:
        """Counts per split and KL grade, ungraded ids, masks, and the first case's image shape."""
        splits = {}
        for name in SPLITS:
            members = [c for c in self.cases if c.split == name]
            if not members:
                continue
            kl = Counter(c.kl for c in members if c.kl is not None)
            splits[name] = {
                "n_cases": len(members),
                "n_graded": sum(kl.values()),
                "kl_counts": {g: kl.get(g, 0) for g in KL_GRADES},
                "oa_counts": {0: sum(kl.get(g, 0) for g in KL_GRADES if not oa_from_kl(g)),
                              1: sum(kl.get(g, 0) for g in KL_GRADES if oa_from_kl(g))},
            }
        return {
            "root": str(self.root),
            "kind": self.kind,
            "n_cases": len(self.cases),
            "n_graded": len(self.cases) - len(self.ungraded),
            "n_masks": sum(c.mask is not None for c in self.cases),
            "splits": splits,
            "ungraded": list(self.ungraded),
            "image_shape": list(volume_shape(self.cases[0].image)) if self.cases else None,
        }


def format_summary(summary: dict) -> str:
    """A few human-readable lines for `Cohort.summary()` (what `kneeoa phantom` and the demo print)."""
    lines = [f"{summary['kind']} cohort at {summary['root']}: {summary['n_cases']} cases, "
             f"{summary['n_graded']} graded, {summary['n_masks']} with masks, "
             f"image shape {summary['image_shape']}"]
    for name, s in summary["splits"].items():
        counts = "/".join(str(s["kl_counts"][g]) for g in KL_GRADES)
        lines.append(f"  {name:<10} {s['n_cases']:>4} cases, {s['n_graded']:>4} graded; KL 0/1/2/3/4 = {counts}; "
                     f"OA = {s['oa_counts'][1]}, no OA = {s['oa_counts'][0]}")
    if summary["ungraded"]:
        lines.append(f"  ungraded (excluded from supervised splits): {', '.join(summary['ungraded'])}")
    return "\n".join(lines)


def volume_shape(path: Path) -> tuple[int, ...]:
    """Image shape (i, j, k) from the header alone where the format allows (no voxel decoding)."""
    from kneeoa.data.volume import NIFTI_SUFFIXES, volume_suffix

    try:
        if volume_suffix(path) in NIFTI_SUFFIXES:
            import nibabel as nib

            return tuple(int(s) for s in nib.load(str(path)).shape)
        if path.is_file():
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return tuple(int(s) for s in reader.GetSize())
    except Exception as err:
        raise InputError(f"cannot read image header: {type(err).__name__}: {err}", path) from None
    from kneeoa.data.volume import read_volume

    return read_volume(path).shape


def report_ungraded(cases: list[Case], where: Path) -> list[str]:
    """Ids of cases without a KL grade, with one warning naming them."""
    ids = [c.case_id for c in cases if c.kl is None]
    if ids:
        warn(f"{where}: {len(ids)} case(s) have no KL grade and are excluded from supervised splits: "
             f"{', '.join(ids)}")
    return ids


def check_unique_ids(cases: list[Case], where: Path) -> None:
    """InputError naming duplicated case ids."""
    dupes = sorted(k for k, n in Counter(c.case_id for c in cases).items() if n > 1)
    if dupes:
        raise InputError(f"duplicate case ids {dupes}", where)

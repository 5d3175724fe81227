"""Cross-validated, multi-seed studies (SPEC section 10): `folds` (StratifiedGroupKFold, fold cohort views),
`plan` (one task per backbone x variant x fold x seed), `task` (what an executor slot runs), `aggregate`
(pooled out-of-fold predictions, clustered tests per seed and across seeds, latent per fold) and `study`
(prepare, execute with a `kneeoa.studyexec` executor, collect). The official protocol is `kneeoa.study`.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # lazy, so the CLI and Slicer can name the package without importing numpy
    if name in ("run_cv_study", "collect_cv_study", "prepare_cv_study"):
        from kneeoa.crossval import study

        return getattr(study, name)
    raise AttributeError(f"module 'kneeoa.crossval' has no attribute {name!r}")

"""Join shard score tables into one: every case once (an ok row beats an error row), in natural case-id order."""

from __future__ import annotations

from pathlib import Path

from kneeoa.contracts.schemas import SCORE_OK
from kneeoa.engine.score_io import natural_key, read_scores, write_scores
from kneeoa.errors import ConfigError, InputError
from kneeoa.utils.outputs import check_outputs


def merge_tables(out_csv: str | Path, parts: list[str | Path], overwrite: bool = False) -> dict:
    """Merge score tables; returns {'out_csv', 'rows', 'duplicates', 'errors'}. Inputs are never overwritten."""
    out_csv = Path(out_csv)
    if not parts:
        raise ConfigError("merge needs at least one table")
    check_outputs([out_csv], parts, overwrite, what="the merged table")
    if out_csv.suffix.lower() != ".csv":
        raise ConfigError("the merged table must be a .csv file", out_csv)
    from kneeoa.utils import locks

    # one writer per table: the lock `kneeoa score` takes on it too (a merge into a table being scored, or
    # two merges into one table, stop with one line instead of replacing each other's rows)
    with locks.sharded(out_csv, None, "the merged table"):
        check_outputs([out_csv], parts, overwrite, what="the merged table")  # again: someone may have written
        return _merge(out_csv, parts)


def _merge(out_csv: Path, parts: list[str | Path]) -> dict:
    best: dict[str, dict] = {}
    duplicates = 0
    for part in parts:
        part = Path(part)
        if not part.is_file():
            raise InputError("score table not found", part)
        for row in read_scores(part):
            case_id = row["case_id"]
            if case_id in best:
                duplicates += 1
                # a case scored twice (overlapping shards, a re-run): keep a success over a failure
                if best[case_id]["status"] == SCORE_OK or row["status"] != SCORE_OK:
                    continue
            best[case_id] = row
    rows = [best[k] for k in sorted(best, key=natural_key)]
    write_scores(out_csv, rows)
    return {"out_csv": out_csv, "rows": len(rows), "duplicates": duplicates,
            "errors": sum(r["status"] != SCORE_OK for r in rows)}

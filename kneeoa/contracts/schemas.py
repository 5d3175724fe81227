"""The CSV schemas KneeOA writes and reads, defined once (standard library only).

  predictions   the published per-subject format of the paper's `results/` folder (`kneeoa predict`,
                the synthetic predictions, `kneeoa stats`): CMT_ID,img_path,label_kl,pred_kl,label_oa,
                prob_oa,pred_oa,prob_oa_from_kl,prob_kl_0..4; Single-OA files have no KL columns.
  scores        the table `kneeoa score` appends one row per volume to (and `kneeoa merge` joins).
  stats         one row per Dual-vs-Single test (`kneeoa stats`, the study report).
"""

from __future__ import annotations

from kneeoa.contracts.trust import TRUST_COLUMNS
from kneeoa.hierarchy import N_KL  # standard library at import

# The column lists are lists (not tuples) because readers compare a parsed header (a list) with them.

# --- published per-subject predictions -----------------------------------------------------------------
ID_COLUMNS = ("CMT_ID", "case_id")  # subject id column: the paper's files say CMT_ID, generic tables case_id
PRED_KL_PROB_COLUMNS = tuple(f"prob_kl_{g}" for g in range(N_KL))
PRED_KL_COLUMNS = ("pred_kl", "prob_oa_from_kl", *PRED_KL_PROB_COLUMNS)  # absent for Single-OA
PRED_COLUMNS = ["CMT_ID", "img_path", "label_kl", "pred_kl", "label_oa", "prob_oa", "pred_oa", "prob_oa_from_kl",
                *PRED_KL_PROB_COLUMNS]


def pred_columns(variant: str, img_path: bool = True) -> list[str]:
    """The published column order of a variant ('single-oa' or 'single_oa': no KL columns).

    `img_path=False`: the layout of the paper's own files, which carry no image path."""
    cols = [c for c in PRED_COLUMNS if img_path or c != "img_path"]
    return [c for c in cols if c not in PRED_KL_COLUMNS] if variant.replace("_", "-") == "single-oa" else cols


def preds_file_name(model: str) -> str:
    """'resnet3d_dual' -> 'resnet3d_dual_preds.csv'."""
    return f"{model}_preds.csv"


# --- the scores table ------------------------------------------------------------------------------------
SCORE_KL_PROB_COLUMNS = tuple(f"kl_prob_{g}" for g in range(N_KL))
SCORE_COLUMNS = ["case_id", "path", "status", "error", "oa_prob", *SCORE_KL_PROB_COLUMNS, "pred_kl", "pred_oa",
                 "consistent_kl", "heads_agree", "saliency_path",
                 *TRUST_COLUMNS]  # calibrated probabilities, sets, OOD (blank for an uncalibrated checkpoint)
SCORE_OK, SCORE_ERROR = "ok", "error"  # the `status` values

# --- the statistics table --------------------------------------------------------------------------------
STATS_COLUMNS = ["backbone", "task", "metric", "single", "dual", "delta", "ci_lo", "ci_hi", "p_value", "test",
                 "mcnemar_table", "n_subjects", "q_value_BH", "sig_fdr_0.05"]

"""What the study report calls things: human column headers (with units) for the CSV column names, one
legend line per table, and the one model order (catalog order x VARIANTS) every table and figure uses.

The CSV files keep the machine names (`oa_auc`); the report shows the label and keeps the name as a tooltip,
so a reader can go from the page to the file. Standard library only.
"""

from __future__ import annotations

from typing import Any

from kneeoa.contracts.catalog import display_order
from kneeoa.contracts.vocab import VARIANT_TAGS

# machine column name -> header; every metric is a share or a score in [0, 1] unless the header says otherwise
COLUMN_LABELS: dict[str, str] = {
    "backbone": "Backbone", "variant": "Variant", "split": "Split", "knees": "Knees",
    "oa_auc": "OA AUC", "oa_acc": "OA accuracy", "oa_f1": "OA F1",
    "kl_acc": "KL accuracy", "kl_macro_f1": "KL macro-F1", "kl_macro_auc": "KL macro-AUC",
    "kl_qwk": "KL QWK (κ, −1…1)", "kl_bal_acc": "KL balanced accuracy",
    "task": "Task", "metric": "Metric", "single": "Single", "dual": "Dual", "delta": "Δ (dual − single)",
    "ci_lo": "95% CI low", "ci_hi": "95% CI high", "p_value": "p", "q_value_BH": "q (BH)",
    "sig_fdr_0.05": "q < 0.05", "test": "Test", "n_valid_resamples": "Valid resamples",
    "evr_pc1": "PC1 variance share", "abs_rho_pc1_kl": "|ρ(PC1, KL)|", "abs_rho_pc1_oa": "|ρ(PC1, OA)|",
    "probe_auroc_test": "OA probe AUROC (test)", "centroid_order": "KL centroid order on PC1",
    "centroid_monotone": "Monotone", "abs_rho_pc1_true_severity": "|ρ(PC1, true severity)|",
    "n_cases": "Knees", "mass_roi": "mass@ROI (share)", "mass_roi_chance": "chance (cartilage share)",
    "mass_roi_x_chance": "mass@ROI ÷ chance", "top5_roi": "top-5% in ROI (share)", "dice5": "Dice@5%",
    "femoral_mass_roi": "mass@femoral cartilage", "medial_tibial_mass_roi": "mass@medial tibial cartilage",
    "lateral_tibial_mass_roi": "mass@lateral tibial cartilage",
}

LEGENDS: dict[str, str] = {
    "metrics": "Test split, last epoch. AUC, accuracy, F1 and balanced accuracy: 0-1, higher is better (OA AUC "
               "0.5 = chance). KL QWK: quadratic-weighted Cohen's κ between predicted and recorded grade, 1 = "
               "perfect, 0 = chance level, < 0 = worse than chance; exactly 0.000 means the model predicts one "
               "grade for every knee (collapsed to the class prior), not a failed computation. – = the model has "
               "no KL head.",
    "stats": "Δ = dual − single on the same test knees (positive: Dual is better); CI = 95% paired bootstrap "
             "percentile interval; p from McNemar (OA accuracy) or the bootstrap; q = Benjamini–Hochberg over the "
             "family; shaded rows: q < 0.05.",
    "latent": "PC1 variance share: fraction of embedding variance on PC1 (0-1). |ρ|: absolute Spearman "
              "correlation of test PC1 with the label (0 = none, 1 = perfect rank agreement). KL centroid order: "
              "the KL grades sorted by the mean PC1 of their test knees, low to high (PC1 is oriented to rise "
              "with KL on train); 0<1<2<3<4 is a severity axis. Monotone: the centroids of the grades present "
              "(two at least) step one way along PC1, 0..4 or 4..0 (a grade with no test knee is skipped).",
    "saliency": "mass@ROI: share of the positive saliency inside the cartilage (labels 2, 4, 5); chance: the "
                "cartilage share of the voxels, what a map spread evenly would score; mass@ROI ÷ chance: how many "
                "times more saliency falls on cartilage than by chance (1 = none). top-5%: share of the 5% most "
                "salient voxels on cartilage; Dice@5%: their overlap with the cartilage. Means over the "
                "explained test knees.",
    "cohort": "Knees per split and recorded KL grade; OA = KL ≥ 2.",
}


def column_label(name: str) -> str:
    """The report header of a CSV column (the name itself when it has no label)."""
    return COLUMN_LABELS.get(name, name)


def model_sort_key(row: dict[str, Any]) -> tuple[int, int, str]:
    """Sort key of a row with `backbone` and `variant`: catalog order, then Single-OA, Single-KL, Dual.

    Variants may be spelled as tags (`single_oa`) or CLI names (`single-oa`); unknown names go last.
    """
    backbones = display_order()
    backbone = str(row.get("backbone", ""))
    variant = str(row.get("variant", "")).replace("-", "_")
    b = backbones.index(backbone) if backbone in backbones else len(backbones)
    v = VARIANT_TAGS.index(variant) if variant in VARIANT_TAGS else len(VARIANT_TAGS)
    return b, v, f"{backbone}/{variant}"


def in_model_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` in the one model order (stable for rows of the same model)."""
    return sorted(rows, key=model_sort_key)

"""`kneeoa latent`: train-fitted PCA of model embeddings, severity-axis numbers and the PCA scatter grid."""

from __future__ import annotations

import argparse

DESCRIPTION = """Latent geometry of model embeddings. For each <name>_embeddings.npz: StandardScaler + PCA(2) fitted
on train, then on test: explained variance, |Spearman rho| of PC1 with KL, OA (and the true severity on
the phantom), a 1-D logistic OA probe AUROC and the order of the KL centroids along PC1.

inputs:   EMB: <name>_embeddings.npz files (from `kneeoa predict --embeddings`) or folders holding them
outputs:  OUT/latent_summary.csv, OUT/latent_points.csv, OUT/pca_grid.png
example:  kneeoa latent study/predictions --out study/latent"""

def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "latent", help="latent geometry of embeddings: PCA fitted on train, rho(PC1, KL), OA probe, PCA grid",
        description=DESCRIPTION)
    p.add_argument("inputs", nargs="+", metavar="EMB", help="embeddings .npz files or folders holding them")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kneeoa.analysis.latent import analyse_files, write_latent_outputs
    from kneeoa.progress import emit

    results = analyse_files(args.inputs)
    paths = write_latent_outputs(results, args.out)
    for res in results:
        row = res["row"]
        print(f"{row['name']:>22}  EVR1 {row['evr_pc1']:.3f}  |rho KL| {row['abs_rho_pc1_kl']:.3f}  "
              f"|rho OA| {row['abs_rho_pc1_oa']:.3f}  probe AUROC {row['probe_auroc_test']:.3f}  "
              f"centroids {row['centroid_order']}{' (monotone)' if row['centroid_monotone'] else ''}"
              + (f"  |rho true severity| {row['abs_rho_pc1_true_severity']:.3f}"
                 if row['abs_rho_pc1_true_severity'] == row['abs_rho_pc1_true_severity'] else ""))
    print(f"{len(results)} model(s) -> {paths['summary']}, {paths['figure']}")
    emit("result", task="latent", **{k: str(v) for k, v in paths.items()}, n_models=len(results))
    return 0

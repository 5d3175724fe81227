"""Trust targets on the phantom (issue 14): calibration, conformal coverage, OOD AUROC, grading overhead.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_trust.py [--grid resnet3d|full] [--out DIR]

1. A phantom cohort (train + a large test split); each model of the grid trains with the quick preset and
   --calibration-fraction 0.25 (temperatures, sets and OOD statistics fitted on the held-out knees).
2. Calibration: ECE / NLL / Brier of the KL head (top-label) and the OA head on the TEST knees, raw vs
   temperature-scaled, per model.
3. Coverage: the calibrated test probabilities, 20+ random calibration/test splits (half/half), mean
   coverage and set size at alpha 0.1 and 0.2 (ordinal, LAC, APS, and MAPIE's own LAC/APS as reference;
   marginal and class-conditional).
4. OOD (dual ResNet3D): in-distribution test knees vs shifted copies of them; AUROC of the Mahalanobis
   score, the share flagged by the acquisition check, by either (the reported flag), and false flags.
5. Overhead: `grade_volume` with the calibrated vs the same weights without trust statistics, CPU,
   interleaved best-of-N; ratio.
Writes benchmarks/results_trust.json (or OUT/results_trust.json) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

GRIDS = {"resnet3d": [("resnet3d", v) for v in ("single-oa", "single-kl", "dual")],
         "full": [(b, v) for b in ("resnet3d", "nnmamba", "m3t") for v in ("single-oa", "single-kl", "dual")]}


def train_grid(cohort: Path, work: Path, grid: list, epochs: int, reuse: bool = False, fraction: float = 0.25) -> dict:
    from kneeoa.engine.train import train

    out = {}
    for backbone, variant in grid:
        t0 = time.perf_counter()
        run = work / f"{backbone}_{variant}"
        if reuse and (run / "checkpoints" / "last.safetensors").is_file():
            out[(backbone, variant)] = run / "checkpoints" / "last.safetensors"
            continue  # --reuse: the trained grid of an earlier run (to re-measure without retraining)
        overrides = {"epochs": epochs, "input_shape": [32, 32, 32], "width": 8, "device": "cpu",
                     "calibration_fraction": fraction, "seed": 0}
        if backbone == "m3t":
            overrides["input_shape"] = [24, 24, 24]
        shutil.rmtree(run, ignore_errors=True)  # a fresh run each time (benchmark scratch folder)
        train(cohort, backbone, variant, run, preset="quick", overrides=overrides)
        out[(backbone, variant)] = run / "checkpoints" / "last.safetensors"
        print(f"trained {backbone} {variant} in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def test_outputs(checkpoint: Path, cases: list) -> dict:
    import torch

    from kneeoa.engine.inference import input_shape_of, load_model, predict_cases

    model, card = load_model(checkpoint, torch.device("cpu"))
    return predict_cases(model, cases, input_shape_of(model, card), torch.device("cpu"), batch_size=8)


def calibration_rows(checkpoint: Path, res: dict) -> dict:
    from kneeoa.hierarchy import OA_THRESHOLD
    from kneeoa.trust.calibration import calibrated, calibration_metrics
    from kneeoa.trust.store import read_trust

    stats = read_trust(checkpoint)
    y = res["kl"]
    keep = y >= 0
    kl_cal, oa_cal = calibrated(res["kl_probs"], res["oa_prob"], stats.temperatures, stats.has_oa_head)
    row = {"T_kl": stats.temperatures.kl, "T_oa": stats.temperatures.oa, "n_test": int(keep.sum())}
    oa_y = (y[keep] >= OA_THRESHOLD).astype(int)
    row["oa_raw"] = calibration_metrics(res["oa_prob"][keep], oa_y)
    row["oa_cal"] = calibration_metrics(oa_cal[keep], oa_y)
    if res["kl_probs"] is not None:
        row["kl_raw"] = calibration_metrics(res["kl_probs"][keep], y[keep])
        row["kl_cal"] = calibration_metrics(kl_cal[keep], y[keep])
    return row, kl_cal, oa_cal


def mapie_coverage(probs: np.ndarray, y: np.ndarray, alpha: float, score: str, n_splits: int, seed: int) -> float:
    """MAPIE's split-conformal LAC/APS on the same random splits (the library reference)."""
    from baselines.mapie_reference import Probabilities
    from mapie.classification import SplitConformalClassifier

    rng = np.random.default_rng(seed)
    est = Probabilities().fit(probs)
    cov = []
    for _ in range(n_splits):
        order = rng.permutation(len(y))
        cal, test = order[: len(y) // 2], order[len(y) // 2:]
        m = SplitConformalClassifier(est, confidence_level=1 - alpha, conformity_score=score, prefit=True)
        m.conformalize(probs[cal], y[cal])
        sets = m.predict_set(probs[test])[1][:, :, 0]
        cov.append(sets[np.arange(len(test)), y[test]].mean())
    return float(np.mean(cov))


def coverage_rows(kl_cal: np.ndarray, y: np.ndarray, n_splits: int) -> dict:
    from kneeoa.trust.conformal import coverage_by_class, coverage_over_splits, fit_sets

    keep = y >= 0
    p, y = kl_cal[keep], y[keep]
    out = {}
    for alpha in (0.1, 0.2):
        for method in ("ordinal", "ordinal-conservative", "lac", "aps"):
            for cc in (False, True):
                r = coverage_over_splits(p, y, alpha, method, n_splits=n_splits, seed=1, class_conditional=cc)
                key = f"{method}{'_cc' if cc else ''}@{alpha}"
                out[key] = {"coverage": float(r["coverage"].mean()), "coverage_sd": float(r["coverage"].std()),
                            "size": float(r["size"].mean())}
        for score in ("lac", "aps"):
            out[f"mapie_{score}@{alpha}"] = {"coverage": mapie_coverage(p, y, alpha, score, n_splits, 1)}
        half = len(y) // 2  # one split, per true grade: what marginal coverage hides
        for cc in (False, True):
            rule = fit_sets(p[:half], y[:half], alpha, "ordinal", cc)
            per = coverage_by_class(rule.sets(p[half:]), y[half:])
            out[f"per_grade_ordinal{'_cc' if cc else ''}@{alpha}"] = {
                "coverage": [None if np.isnan(c) else float(c) for c in per["coverage"]],
                "size": [None if np.isnan(s) else float(s) for s in per["size"]]}
    return out


# --- shifted sets -------------------------------------------------------------------------------------------

def shifted_volumes(volume, kind: str, rng: np.random.Generator):
    """A shifted copy of a phantom test volume (array in i, j, k order, RAS affine)."""
    from kneeoa.data.volume import Volume

    a, aff = np.asarray(volume.array, dtype=np.float32), np.asarray(volume.affine, dtype=np.float64)
    if kind == "axial (voxel axes permuted)":  # the anatomy lies along other array axes; header as training
        return Volume(np.ascontiguousarray(np.transpose(a, (2, 0, 1))), aff)
    if kind == "axial (header permuted too)":  # a faithful header: slices along world x
        return Volume(np.ascontiguousarray(np.transpose(a, (2, 0, 1))), aff[:, [2, 0, 1, 3]])
    if kind == "intensity inverted":
        return Volume(a.max() - a, aff)
    if kind == "heavy noise":
        return Volume(a + rng.normal(0, 1.5 * a.std(), a.shape).astype(np.float32), aff)
    if kind == "non-knee volume":  # smooth blobs: a head-sized ellipsoid with random structures
        from scipy.ndimage import gaussian_filter

        g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in a.shape], indexing="ij"))
        body = ((g**2).sum(0) < 0.8).astype(np.float32)
        blobs = gaussian_filter(rng.normal(size=a.shape).astype(np.float32), 2.0)
        return Volume((body * (300 + 600 * blobs) + 20).astype(np.float32), aff)
    if kind == "10x field of view":  # the knee a tenth of the size in the middle of a 10x larger field
        from scipy.ndimage import zoom

        small = zoom(a, 0.1, order=1)
        canvas = np.full(a.shape, float(np.percentile(a, 5)), dtype=np.float32)
        lo = [(s - t) // 2 for s, t in zip(a.shape, small.shape)]
        canvas[lo[0]:lo[0] + small.shape[0], lo[1]:lo[1] + small.shape[1], lo[2]:lo[2] + small.shape[2]] = small
        big = aff.copy()
        big[:3, :3] *= 10
        return Volume(canvas, big)
    raise ValueError(kind)


SHIFTS = ("axial (voxel axes permuted)", "axial (header permuted too)", "intensity inverted", "heavy noise",
          "non-knee volume", "10x field of view")


def ood_rows(checkpoint: Path, cases: list, n_shift: int) -> dict:
    import torch
    from sklearn.metrics import roc_auc_score

    from kneeoa.data.preprocess import preprocess_volume
    from kneeoa.data.volume import read_volume
    from kneeoa.engine.inference import batch_outputs, input_shape_of, load_model, reorient_of
    from kneeoa.trust.ood import combined_score
    from kneeoa.trust.predict import load_trust_predictor

    model, card = load_model(checkpoint, torch.device("cpu"))
    shape = input_shape_of(model, card)
    trusted = load_trust_predictor(checkpoint, card)
    rng = np.random.default_rng(0)

    dims = [len(trusted.stats.ood.mean), len(trusted.stats.image_ood.mean)]

    def score(volumes: list) -> dict[str, np.ndarray]:
        x = torch.stack([preprocess_volume(v, shape, reorient=reorient_of(model)) for v in volumes])
        out = batch_outputs(model, x)
        looked = [trusted.inspect(v.array, v.affine) for v in volumes]
        warn = [w for w, _ in looked]
        rows = trusted(out["kl_probs"], out["oa_prob"], out["embedding"], warn, np.array([f for _, f in looked]))
        emb = np.array([r["ood_score"] for r in rows])
        img = np.array([r["ood_image_score"] for r in rows])
        env = np.array([bool(w) for w in warn])
        both = combined_score([emb, img], dims)  # the score the reported p-value is computed from
        return {"emb": emb, "img": img, "both": both, "env": env, "flag": np.array([r["ood_flag"] for r in rows]),
                "p_flag": np.array([r["ood_p"] <= trusted.ood_alpha for r in rows])}

    def auroc(a: np.ndarray, b: np.ndarray) -> float:
        return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))

    base = [read_volume(c.image) for c in cases]
    s_in = score(base)
    out = {"in_distribution": {"n": len(base), "p_value_flag_rate": float(s_in["p_flag"].mean()),
                               "envelope_flag_rate": float(s_in["env"].mean()),
                               "false_flag_rate": float(s_in["flag"].mean()), "ood_alpha": trusted.ood_alpha}}
    for kind in SHIFTS:
        s = score([shifted_volumes(v, kind, rng) for v in base[:n_shift]])
        out[kind] = {"n": len(s["emb"]), "auroc_embedding": auroc(s_in["emb"], s["emb"]),
                     "auroc_image_stats": auroc(s_in["img"], s["img"]),
                     "auroc_combined": auroc(s_in["both"], s["both"]),
                     "auroc_envelope_then_combined": auroc(s_in["both"] + 1e6 * s_in["env"], s["both"] + 1e6 * s["env"]),
                     "envelope_flag_rate": float(s["env"].mean()), "flag_rate": float(s["flag"].mean())}
    return out


def overhead_row(checkpoint: Path, image: Path, work: Path, repeats: int) -> dict:
    from safetensors import safe_open
    from safetensors.torch import save_file
    from timing import interleaved_best

    from kneeoa.contracts.trust import TENSOR_PREFIX, TRUST_KEY
    from kneeoa.engine.grade import grade_volume
    from kneeoa.models.checkpoint import CARD_KEY, read_card

    plain = work / "plain.safetensors"  # the same weights without the trust statistics
    card = {k: v for k, v in read_card(checkpoint).items() if k != TRUST_KEY}
    with safe_open(str(checkpoint), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if not k.startswith(TENSOR_PREFIX)}
    save_file(tensors, str(plain), metadata={CARD_KEY: json.dumps(card), "format": "pt"})
    from kneeoa.data.volume import read_volume
    from kneeoa.engine.inference import batch_outputs, input_shape_of, load_model
    from kneeoa.trust.predict import load_trust_predictor

    model, card = load_model(checkpoint, "cpu")
    vol = read_volume(image)
    from kneeoa.data.preprocess import preprocess_volume

    out = batch_outputs(model, preprocess_volume(vol, input_shape_of(model, card))[None])

    def trust_only():  # exactly what grade_volume adds: load the statistics, check the volume, apply them
        trusted = load_trust_predictor(checkpoint, card)
        warned, feats = trusted.inspect(vol.array, vol.affine)
        return trusted(out["kl_probs"], out["oa_prob"], out["embedding"], [warned], feats[None])

    fns = [lambda: grade_volume(image, checkpoint, device="cpu"), lambda: grade_volume(image, plain, device="cpu"),
           trust_only]
    (t_trust, r), (t_plain, _), (t_only, _) = interleaved_best(fns, repeats, lambda: None)
    assert r["trust"] is not None
    return {"grade_s_with_trust": t_trust, "grade_s_without": t_plain, "trust_part_s": t_only,
            "trust_share_of_grade": t_only / t_plain, "overhead_difference": t_trust / t_plain - 1,
            "checkpoint_bytes_with_trust": checkpoint.stat().st_size, "checkpoint_bytes_without": plain.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="resnet3d")
    parser.add_argument("--out", default=str(ROOT / "benchmarks"))
    parser.add_argument("--work", default="build/bench-trust")
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--splits", type=int, default=40)
    parser.add_argument("--reuse", action="store_true", help="keep the models already trained under --work")
    parser.add_argument("--calibration-fraction", type=float, default=0.25,
                        help="share of the training knees held out for calibration (half T, half sets)")
    args = parser.parse_args(argv)
    from kneeoa.data.cohort import load_cohort
    from kneeoa.data.phantom import generate_cohort

    work = Path(args.work)
    cohort = work / "phantom"
    if not (cohort / "subInfo_test.xlsx").exists():
        generate_cohort(cohort, args.train, args.test, shape=(32, 32, 32), seed=5)
    test_cases = load_cohort(cohort).split("test")
    results: dict = {"cohort": {"train": args.train, "test": len(test_cases), "shape": [32, 32, 32], "seed": 5,
                                "calibration_fraction": args.calibration_fraction},
                     "models": {}}
    checkpoints = train_grid(cohort, work, GRIDS[args.grid], args.epochs, args.reuse, args.calibration_fraction)
    for (backbone, variant), ckpt in checkpoints.items():
        res = test_outputs(ckpt, test_cases)
        row, kl_cal, _ = calibration_rows(ckpt, res)
        if kl_cal is not None:
            row["coverage"] = coverage_rows(kl_cal, res["kl"], args.splits)
        results["models"][f"{backbone}_{variant}"] = row
        print(json.dumps({f"{backbone}_{variant}": {k: v for k, v in row.items() if k != "coverage"}}), flush=True)
    dual = checkpoints[("resnet3d", "dual")]
    results["ood"] = ood_rows(dual, test_cases, n_shift=60)
    results["overhead"] = overhead_row(dual, test_cases[0].image, work, repeats=7)
    path = Path(args.out) / "results_trust.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"ood": results["ood"], "overhead": results["overhead"]}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`train_segmenter`: a MONAI network on a cohort's (image, mask) pairs, in an engine run directory.

Reused from the engine: `RunDir` (layout, --resume/--overwrite decision, log, metrics.jsonl), the pickle-free
trainer state (weights + optimizer + RNG in one atomic safetensors file), device choice, AMP, the
out-of-memory message, torchrun (DDP + distributed sampler) and `Progress`. Every epoch reseeds torch,
numpy and MONAI's transforms from (seed, epoch) and the learning rate is a function of the epoch alone
(polynomial decay), so a resumed run draws exactly the crops an uninterrupted one would. Loss: Dice + CE
(MONAI DiceCELoss). The last epoch is evaluated on the test split with sliding windows (Dice, HD95).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kneeoa.engine import distributed
from kneeoa.engine.rundir import RunDir
from kneeoa.errors import ConfigError, InputError

CONFIG_HEADER = "# resolved KneeOA segmentation config (written by `kneeoa train-seg`)\n"
RESUME_MUTABLE = {"epochs", "device", "workers"}


def _save_config(run: RunDir, cfg: dict) -> None:
    import yaml

    from kneeoa.utils.atomic import atomic_write_text

    atomic_write_text(run.config, CONFIG_HEADER + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))


def _load_config(run: RunDir, overrides: dict | None) -> dict:
    from kneeoa.segmentation.presets import validate_seg_config
    from kneeoa.utils.safe_yaml import load_yaml

    cfg = load_yaml(run.config)
    if not cfg.get("segmentation"):
        raise ConfigError("this run directory holds a grading run, not a segmentation run", run.root)
    changed = {k for k, v in (overrides or {}).items() if v is not None and cfg.get(k) != v}
    if changed - RESUME_MUTABLE:
        raise ConfigError(f"cannot change {', '.join(sorted(changed - RESUME_MUTABLE))} when resuming "
                          f"(only {', '.join(sorted(RESUME_MUTABLE))})", run.root)
    cfg.update({k: overrides[k] for k in changed})
    return validate_seg_config(cfg)


def train_segmenter(data: str | Path | None, out: str | Path, preset: str | Path = "quick",
                    overrides: dict | None = None, resume: bool = False, overwrite: bool = False) -> dict:
    """Train (or resume) a segmenter; returns {'run_dir', 'checkpoint', 'metrics', 'history'}."""
    from kneeoa.segmentation.presets import resolve_seg_config

    run = RunDir(out)
    mode = run.decide(resume, overwrite)
    if mode == "resume":
        cfg = _load_config(run, overrides)
    else:
        if data is None:
            raise ConfigError("--data is required for a new run")
        cfg = resolve_seg_config(preset, data, overrides)
        cfg["segmentation"] = True
    info, device = distributed.setup(cfg["device"])
    try:
        distributed.barrier(info)
        if info.is_main:
            if overwrite:
                run.clear()
            if mode == "resume":
                run.remove_stale_temp_files()
            else:
                run.start_new()  # the manifest: what a later --overwrite may delete
                _save_config(run, cfg)
        distributed.barrier(info)
        return _train(cfg, run, mode, info, device)
    finally:
        distributed.cleanup(info)


def _seed_epoch(seed: int, epoch: int, transform: Any) -> None:
    import random

    import numpy as np
    import torch

    value = (int(seed) * 1_000_003 + int(epoch)) % (2**31 - 1)
    torch.manual_seed(value)
    random.seed(value)
    np.random.seed(value)
    transform.set_random_state(seed=value)


def median_spacing(cases: list, at_most: int = 50) -> list[float]:
    """Median voxel spacing (mm) of the training images, from headers where the format allows."""
    import numpy as np

    from kneeoa.data.volume import NIFTI_SUFFIXES, read_volume, volume_suffix

    spacings = []
    for case in cases[:at_most]:
        if volume_suffix(case.image) in NIFTI_SUFFIXES:
            import nibabel as nib

            affine = np.asarray(nib.load(str(case.image)).affine)
        else:
            affine = read_volume(case.image).affine
        spacings.append(np.linalg.norm(affine[:3, :3], axis=0))
    return [round(float(v), 5) for v in np.median(np.asarray(spacings), axis=0)]


def poly_lr(base: float, epoch: int, epochs: int) -> float:
    """nnU-Net's polynomial decay: base * (1 - epoch / epochs) ** 0.9."""
    return float(base) * (1.0 - epoch / max(epochs, 1)) ** 0.9


def _segmented_cases(cohort: Any, split: str) -> list:
    return [c for c in cohort.split(split, graded_only=False) if c.mask is not None]


def _train(cfg: dict, run: RunDir, mode: str, info: Any, device: Any) -> dict:
    import torch
    from monai.losses import DiceCELoss
    from torch.utils.data import DataLoader

    from kneeoa.data.cohort import load_cohort
    from kneeoa.engine.devices import describe_device, grad_scaler
    from kneeoa.engine.state import load_trainer_state, restore
    from kneeoa.progress import Progress
    from kneeoa.segmentation.data import CropDataset, PairDataset, collate_crops, training_transform
    from kneeoa.segmentation.model import build_segmenter, n_parameters

    cohort = load_cohort(cfg["data"])
    train_cases = _segmented_cases(cohort, "train")
    if not train_cases:
        raise InputError("no training cases with masks (labelsTr/ or a mask per image)", cfg["data"])
    cfg = {**cfg, "model_spacing_mm": cfg["spacing_mm"] or median_spacing(train_cases)}
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    torch.manual_seed(cfg["seed"])
    model = build_segmenter(cfg["arch"], cfg["width"]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scaler = grad_scaler(device, cfg["amp"])
    done = 0
    if mode == "resume" and run.state.is_file():
        done = restore(load_trainer_state(run.state), model, optimizer, scaler)
        if info.is_main:
            run.repair_metrics()
            run.log(f"resumed after epoch {done} of {cfg['epochs']}")
    elif info.is_main:
        run.log(f"new segmentation run: {cfg['arch']} width {cfg['width']} ({n_parameters(model)} parameters), "
                f"preset {cfg['preset']}, {len(train_cases)} training cases, patch {cfg['patch']}, "
                f"device {describe_device(device)}, world size {info.world_size}")
    transform = training_transform(cfg)
    dataset = CropDataset(PairDataset(train_cases, cfg["spacing_mm"], cache=cfg["cache_rate"] > 0), transform)
    sampler = distributed.make_sampler(dataset, info, cfg["seed"], shuffle=True)
    per_step = max(1, int(cfg["batch_size"]) // int(cfg["samples_per_volume"]))  # volumes per step
    loader = DataLoader(dataset, batch_size=per_step, sampler=sampler, num_workers=cfg["workers"],
                        collate_fn=collate_crops, pin_memory=device.type == "cuda",
                        persistent_workers=cfg["workers"] > 0)
    net = distributed.wrap_model(model, info, device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    with Progress("train-seg", total=cfg["epochs"], unit="epoch", disable=not info.is_main) as bar:
        if done:
            bar.update(done)
        for epoch in range(done, cfg["epochs"]):
            _seed_epoch(cfg["seed"], epoch, transform)
            sampler.set_epoch(epoch)
            for group in optimizer.param_groups:
                group["lr"] = poly_lr(cfg["lr"], epoch, cfg["epochs"])
            row = _train_epoch(net, loader, loss_fn, optimizer, scaler, device, cfg, info, epoch)
            if info.is_main:
                _save_epoch(run, model, optimizer, scaler, cfg, cohort, train_cases, epoch + 1, row)
                bar.update(1, epoch=row["epoch"], loss=row["loss"])
            distributed.barrier(info)
    metrics = _finish(run, model, optimizer, scaler, cfg, cohort, train_cases, device, info)
    return {"run_dir": run.root, "checkpoint": run.last, "metrics": metrics, "history": run.read_metrics()}


def _train_epoch(net: Any, loader: Any, loss_fn: Any, optimizer: Any, scaler: Any, device: Any, cfg: dict,
                 info: Any, epoch: int) -> dict:
    from kneeoa.engine.devices import autocast, oom_guard
    from kneeoa.engine.steps import finite_loss, scaled_step

    net.train()
    t0 = time.perf_counter()
    loss_sum = n = 0.0
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        with oom_guard(device, "segmentation training", cfg["batch_size"]):
            with autocast(device, cfg["amp"]):
                loss = loss_fn(net(x), y)
            scaled_step(loss, optimizer, scaler)
        value = finite_loss(loss, "segmentation", epoch, "try a lower --lr")
        loss_sum += value * x.shape[0]
        n += x.shape[0]
    loss_sum, n = distributed.all_reduce_sum([loss_sum, n], info)
    return {"epoch": epoch + 1, "loss": loss_sum / max(n, 1), "lr": optimizer.param_groups[0]["lr"],
            "time_s": round(time.perf_counter() - t0, 3), "patches": int(n)}


def _description(cohort: Any, cases: list, cfg: dict, epochs_done: int) -> str:
    text = (f"{cohort.kind} cohort at {cohort.root}: {len(cases)} training cases with masks; preset "
            f"{cfg['preset']}, {epochs_done} of {cfg['epochs']} epochs, seed {cfg['seed']}")
    if any("TrueSeverity" in c.extra for c in cases):  # only the phantom writes the true severity
        text = "SYNTHETIC knee phantom (kneeoa phantom), not for clinical use. " + text
    return text


def _save_epoch(run: RunDir, model: Any, optimizer: Any, scaler: Any, cfg: dict, cohort: Any, cases: list,
                epochs_done: int, row: dict) -> None:
    """State first, then the checkpoint, then the log line (the engine's order: a kill leaves a consistent run)."""
    from kneeoa.engine.state import save_trainer_state
    from kneeoa.segmentation.checkpoint import save_segmenter, segmenter_card

    run.checkpoints.mkdir(parents=True, exist_ok=True)
    save_trainer_state(run.state, model, optimizer, scaler, epochs_done, finished=False,
                       info={"seed": cfg["seed"], "metrics_row": json.loads(json.dumps(row, default=float))})
    card = segmenter_card(cfg, _description(cohort, cases, cfg, epochs_done), {"train_last_epoch": row})
    save_segmenter(run.last, model, card)
    run.append_metrics(row)
    run.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def evaluate_cases(model: Any, card: dict, cases: list, device: Any) -> tuple[list[dict], dict]:
    """Segment `cases` (with masks) and score them: (per-case-per-label rows, per-label summary). A case's
    knee side (OAI-ZIB-CM's kneeSideInfo.csv) is used as `kneeoa segment` uses it."""
    from kneeoa.data.volume import read_volume
    from kneeoa.segmentation.infer import segment_volume
    from kneeoa.segmentation.metrics import label_metrics, summarize

    rows = []
    model.eval()
    for case in cases:
        image = read_volume(case.image)
        ref = read_volume(case.mask, is_label=True)
        pred = segment_volume(model, card, image, device, knee_side=case.extra.get("knee_side"))
        rows += [{"case_id": case.case_id, **r} for r in label_metrics(pred, ref.array, ref.spacing_mm)]
    return rows, summarize(rows)


def _finish(run: RunDir, model: Any, optimizer: Any, scaler: Any, cfg: dict, cohort: Any, cases: list,
            device: Any, info: Any) -> dict:
    from kneeoa.contracts.checkpoint_meta import read_card
    from kneeoa.engine.state import save_trainer_state
    from kneeoa.engine.train import finished_elsewhere
    from kneeoa.segmentation.checkpoint import save_segmenter, segmenter_card
    from kneeoa.utils import strict_json
    from kneeoa.utils.atomic import atomic_write_text

    settled = finished_elsewhere(run, info)
    if settled is not None:
        return settled
    metrics = dict(read_card(run.last).get("metrics", {}))
    test_cases = _segmented_cases(cohort, "test") if cfg["evaluate"] else []
    card = segmenter_card(cfg, _description(cohort, cases, cfg, cfg["epochs"]), metrics)
    if test_cases:
        rows, summary = evaluate_cases(model, card, test_cases, device)
        metrics["test"] = summary
        atomic_write_text(run.test_metrics, strict_json.dumps({"per_label": summary, "per_case": rows}, indent=1) + "\n")
        run.log("test dice " + " ".join(f"{k}={v['dice_mean']:.3f}" for k, v in summary.items()))
    card["metrics"] = metrics
    save_segmenter(run.last, model, card)
    save_trainer_state(run.state, model, optimizer, scaler, cfg["epochs"], finished=True, info={"seed": cfg["seed"]})
    run.log("finished")
    distributed.barrier(info)
    return metrics

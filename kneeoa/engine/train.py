"""Training: one backbone x variant on a cohort, into a run directory that survives interruption.

Every epoch ends with an atomic trainer state (weights + optimizer + RNG, no pickle), the deliverable
checkpoint (weights + model card) and one metrics line. `resume=True` continues from the last complete
epoch and, on CPU, gives bit-identical final weights to an uninterrupted run: the shuffling order and the
dropout RNG are reseeded from (seed, epoch) at the start of each epoch, so nothing depends on how many
epochs one process ran. The last epoch is evaluated on the test split (the paper's protocol).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from kneeoa.config import TrainConfig, apply_resume_overrides, load_config, resolve_config
from kneeoa.contracts.vocab import has_kl_head
from kneeoa.engine import distributed
from kneeoa.engine.rundir import RunDir
from kneeoa.errors import ConfigError, InputError
from kneeoa.utils import strict_json


def train(data: str | Path | None, backbone: str = "resnet3d", variant: str = "dual",
          out: str | Path = "runs/run", preset: str | Path = "quick", overrides: dict | None = None,
          resume: bool = False, overwrite: bool = False, tensorboard: bool = False,
          labels: str | Path | None = None) -> dict:
    """Train (or resume) a model; returns {'run_dir', 'checkpoint', 'epochs', 'metrics', 'history'}."""
    run = RunDir(out)
    mode = run.decide(resume, overwrite)
    if mode == "resume":
        cfg = apply_resume_overrides(load_config(run.config), overrides, source=run.config)
        _check_same_run(cfg, data, backbone, variant, run)
    else:
        if data is None:
            raise ConfigError("--data is required for a new run")
        cfg = resolve_config(preset, backbone, variant, data, overrides, labels)
        _check_spec(cfg, preset)
    info, device = distributed.setup(cfg.device)
    try:
        # one writer per run folder: a second train/resume into it stops here, before anything is changed
        with run.lock() if info.is_main else contextlib.nullcontext():
            distributed.barrier(info)  # every rank has read the folder before rank 0 changes it
            if info.is_main:
                if mode == "new" and not overwrite:
                    run.decide(resume, overwrite)  # again under the lock: another run may have started meanwhile
                if overwrite:
                    run.clear()
                if mode == "resume":
                    run.remove_stale_temp_files()
                if mode == "new":
                    from kneeoa.config import save_config

                    run.start_new()
                    save_config(run.config, cfg)
            distributed.barrier(info)
            return _train(cfg, run, mode, info, device, tensorboard)
    finally:
        distributed.cleanup(info)


def _check_spec(cfg: Any, preset: str | Path) -> None:
    """The model the config describes must be buildable (width, options in range) before the run folder is
    written: a preset with `width: 1000000` stops here with one line naming the preset, not mid-build."""
    from kneeoa.models.registry import ModelSpec

    try:
        ModelSpec.from_dict(cfg.spec_dict())
    except ConfigError as err:
        source = Path(preset) if Path(str(preset)).suffix in (".yaml", ".yml") else None
        raise ConfigError(err.problem, err.path or source) from None


def _check_same_run(cfg: TrainConfig, data: Any, backbone: str | None, variant: str | None, run: RunDir) -> None:
    given = {"backbone": backbone, "variant": variant,
             "data": None if data is None else str(Path(data).resolve())}
    for key, value in given.items():
        if value is not None and getattr(cfg, key) != value:
            raise ConfigError(f"--resume: the run was started with {key}={getattr(cfg, key)!r}, not {value!r}", run.root)


def _seed_epoch(seed: int, epoch: int) -> None:
    """Reseed every RNG from (seed, epoch): a resumed run draws exactly what an uninterrupted one would."""
    import random

    import numpy as np
    import torch

    value = (int(seed) * 1_000_003 + int(epoch)) % (2**31 - 1)
    torch.manual_seed(value)
    random.seed(value)
    np.random.seed(value)


def _train(cfg: TrainConfig, run: RunDir, mode: str, info: Any, device: Any, tensorboard: bool) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from kneeoa.data.cohort import load_cohort
    from kneeoa.data.dataset import CohortDataset
    from kneeoa.engine.devices import describe_device, grad_scaler
    from kneeoa.engine.state import load_trainer_state, restore
    from kneeoa.models.registry import ModelSpec, build_model
    from kneeoa.progress import Progress

    cohort = load_cohort(cfg.data, labels=cfg.labels)
    train_cases = cohort.split("train")
    if not train_cases:
        raise InputError("no graded training cases (need KL grades for split 'train')", cfg.data)
    cal_cases: list = []
    if cfg.calibration_fraction > 0:  # the same knees on resume: seeded by the run's seed
        from kneeoa.trust.fit import grouped_holdout

        train_cases, cal_cases = grouped_holdout(train_cases, cfg.calibration_fraction, cfg.seed)
    cache_dir = (Path(cfg.cache_dir) if cfg.cache_dir else run.cache) if cfg.cache else None
    input_shape = tuple(cfg.input_shape)
    deterministic = device.type == "cpu" or cfg.deterministic
    previous_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic

    torch.manual_seed(cfg.seed)  # weight init
    model = build_model(ModelSpec.from_dict(cfg.spec_dict())).to(device)
    if cfg.channels_last:
        model = model.to_channels_last_3d()  # 3-D conv weights only: M3T also holds 2-D ones
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(device, cfg.amp)
    done = 0
    if mode == "resume" and run.state.is_file():
        state = load_trainer_state(run.state)
        done = restore(state, model, optimizer, scaler)
        if info.is_main:
            run.repair_metrics()
            run.log(f"resumed after epoch {done} of {cfg.epochs}")
    else:
        from kneeoa.models.pretrained import apply_pretrained

        loaded = apply_pretrained(model, cfg.to_dict())  # M3T's ImageNet ResNet-18 (paper); ConfigError if unobtainable
        if info.is_main:
            run.log(f"new run: {cfg.backbone} {cfg.variant} preset {cfg.preset}, {len(train_cases)} "
                    f"training cases, input {list(input_shape)}, device {describe_device(device)}, world size "
                    f"{info.world_size}" + (f"; {loaded}" if loaded else ""))
    if cfg.amp != "none" and device.type != "cuda" and info.is_main:
        run.log(f"amp {cfg.amp} ignored on {device.type}: mixed precision is used on CUDA only")

    dataset = CohortDataset(train_cases, input_shape, cache_dir=cache_dir, reorient=cfg.reorient)
    sampler = distributed.make_sampler(dataset, info, cfg.seed, shuffle=True)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.workers > 0, drop_last=False)
    net = distributed.wrap_model(model, info, device)
    writer = _tensorboard(run) if tensorboard and info.is_main else None
    try:
        with Progress("train", total=cfg.epochs, unit="epoch", disable=not info.is_main) as bar:
            if done:
                bar.update(done)
            for epoch in range(done, cfg.epochs):
                _seed_epoch(cfg.seed, epoch)
                sampler.set_epoch(epoch)
                row = _train_epoch(net, loader, optimizer, scaler, device, cfg, info, epoch)
                if info.is_main:
                    _save_epoch(run, model, optimizer, scaler, cfg, cohort, train_cases, epoch + 1, row)
                    if writer is not None:
                        for key, value in row.items():
                            if key != "epoch" and isinstance(value, (int, float)):
                                writer.add_scalar(key, value, epoch + 1)
                    bar.update(1, **{k: row[k] for k in ("epoch", "loss", *_metric_keys(row))})
                distributed.barrier(info)
        metrics = _finish(run, model, optimizer, scaler, cfg, cohort, train_cases, device, info, cache_dir,
                          cal_cases)
    finally:
        if writer is not None:
            writer.close()
        torch.use_deterministic_algorithms(previous_det)
    return {"run_dir": run.root, "checkpoint": run.last, "epochs": cfg.epochs, "metrics": metrics,
            "history": run.read_metrics()}


def _metric_keys(row: dict) -> list[str]:
    return [k for k in ("train_oa_acc", "train_kl_acc") if k in row]


def _train_epoch(net: Any, loader: Any, optimizer: Any, scaler: Any, device: Any, cfg: TrainConfig, info: Any,
                 epoch: int) -> dict:
    """One pass over the training data; returns the epoch's metrics row (summed over ranks)."""
    import torch

    from kneeoa.engine.devices import autocast, oom_guard
    from kneeoa.engine.steps import finite_loss, scaled_step
    from kneeoa.models.heads import hierarchical_loss, probabilities
    from kneeoa.progress import Progress, mode

    net.train()
    t_start = time.perf_counter()
    wait = compute = 0.0
    loss_sum = n = oa_ok = kl_ok = 0.0
    steps = len(loader)
    # a per-step bar on a terminal only; JSON consumers get one line per epoch from the caller
    show = info.is_main and mode() == "bar"
    with Progress(f"epoch {epoch + 1}/{cfg.epochs}", total=steps, unit="step", disable=not show) as bar:
        t_prev = time.perf_counter()
        for batch in loader:
            t_got = time.perf_counter()
            wait += t_got - t_prev
            x = batch["image"].to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            kl = batch["kl"].to(device, non_blocking=True)
            oa = batch["oa"].to(device, non_blocking=True)
            with oom_guard(device, "training", cfg.batch_size):
                with autocast(device, cfg.amp):
                    out = net(x)
                    loss = hierarchical_loss(out, kl, oa, cfg.variant, lambda_oa=cfg.lambda_oa)
                scaled_step(loss, optimizer, scaler)
            value = finite_loss(loss, "training", epoch, "try a lower --lr (the run keeps its last complete epoch)")
            with torch.no_grad():
                probs = probabilities(out)
                b = x.shape[0]
                loss_sum += value * b
                n += b
                oa_ok += float(((probs["oa_prob"].float().reshape(-1) >= 0.5).long() == oa).sum())
                if probs.get("kl_probs") is not None:
                    kl_ok += float((probs["kl_probs"].argmax(-1) == kl).sum())
            t_prev = time.perf_counter()
            compute += t_prev - t_got
            bar.update(1, loss=value)
    loss_sum, n, oa_ok, kl_ok, wait, compute = distributed.all_reduce_sum(
        [loss_sum, n, oa_ok, kl_ok, wait, compute], info)
    ranks = info.world_size
    row = {"epoch": epoch + 1, "loss": loss_sum / max(n, 1), "lr": optimizer.param_groups[0]["lr"],
           "time_s": round(time.perf_counter() - t_start, 4), "loader_wait_s": round(wait / ranks, 4),
           "compute_s": round(compute / ranks, 4), "samples": int(n), "train_oa_acc": oa_ok / max(n, 1)}
    if has_kl_head(cfg.variant):
        row["train_kl_acc"] = kl_ok / max(n, 1)
    return row


def _card(model: Any, cfg: TrainConfig, cohort: Any, train_cases: list, epochs_done: int, metrics: dict) -> dict:
    from kneeoa.contracts.checkpoint_meta import model_card
    from kneeoa.hierarchy import KL_GRADES

    counts = [sum(1 for c in train_cases if c.kl == g) for g in KL_GRADES]
    description = (f"{cohort.kind} cohort at {cohort.root}: {len(train_cases)} graded training cases "
                   f"(KL 0-4 counts {'/'.join(map(str, counts))}); preset {cfg.preset}, "
                   f"{epochs_done} of {cfg.epochs} epochs, seed {cfg.seed}")
    if any("TrueSeverity" in c.extra for c in train_cases):  # only the phantom writes the true severity
        description = "SYNTHETIC knee phantom (kneeoa phantom), not for clinical use. " + description
    training = {k: getattr(cfg, k) for k in ("preset", "epochs", "lr", "weight_decay", "batch_size", "seed", "lambda_oa",
                                    "amp")} | {"epochs_done": epochs_done}
    return model_card(model.spec.to_dict(), cfg.input_shape, description, metrics, training=training)


def _save_epoch(run: RunDir, model: Any, optimizer: Any, scaler: Any, cfg: TrainConfig, cohort: Any,
                train_cases: list, epochs_done: int, row: dict) -> None:
    """State first, then the checkpoint, then the log line: a kill at any point leaves a consistent run."""
    from kneeoa.engine.state import save_trainer_state
    from kneeoa.models.checkpoint import save_checkpoint

    run.checkpoints.mkdir(parents=True, exist_ok=True)
    # the state carries the epoch's log line: a kill before the line is appended must not lose it
    save_trainer_state(run.state, model, optimizer, scaler, epochs_done, finished=False,
                       info={"seed": cfg.seed, "metrics_row": json.loads(strict_json.dumps(row))})
    train_metrics = {k: row[k] for k in ("loss", *_metric_keys(row))}
    save_checkpoint(run.last, model, _card(model, cfg, cohort, train_cases, epochs_done, {"train_last_epoch": train_metrics}))
    run.append_metrics(row)
    run.log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def finished_elsewhere(run: RunDir, info: Any) -> dict | None:
    """The metrics to return when this process must not finish the run, else None (after the barrier).

    Only the main rank evaluates and saves (the others get {}); a run already marked finished (a resumed
    finished run) returns its card's metrics. Shared by `kneeoa train` and `kneeoa train-seg`."""
    from kneeoa.engine.state import read_trainer_meta
    from kneeoa.models.checkpoint import read_card

    if not info.is_main:
        distributed.barrier(info)
        return {}
    if read_trainer_meta(run.state).get("finished"):
        distributed.barrier(info)
        return read_card(run.last).get("metrics", {})
    return None


def _finish(run: RunDir, model: Any, optimizer: Any, scaler: Any, cfg: TrainConfig, cohort: Any, train_cases: list,
            device: Any, info: Any, cache_dir: Path | None, cal_cases: list | None = None) -> dict:
    """Evaluate the last epoch on the test split, put the metrics in the card and mark the run finished."""

    from kneeoa.engine.inference import evaluation_metrics, predict_cases
    from kneeoa.engine.state import save_trainer_state
    from kneeoa.models.checkpoint import read_card, save_checkpoint
    from kneeoa.utils.atomic import atomic_write_text

    settled = finished_elsewhere(run, info)
    if settled is not None:
        return settled
    metrics = dict(read_card(run.last).get("metrics", {}))
    test_cases = cohort.split("test") if cfg.evaluate else []
    if test_cases:
        result = predict_cases(model, test_cases, tuple(cfg.input_shape), device, cfg.eval_batch_size,
                               cfg.workers, cache_dir, cfg.amp)
        metrics["test"] = evaluation_metrics(result)
        atomic_write_text(run.test_metrics, strict_json.dumps(metrics["test"], indent=2) + "\n")
        run.log("test " + " ".join(f"{k}={v:.4g}" for k, v in metrics["test"].items()))
    card = _card(model, cfg, cohort, train_cases, cfg.epochs, metrics)
    save_checkpoint(run.last, model, card)
    if cal_cases:
        _calibrate(run, model, card, cfg, cohort, train_cases, cal_cases, device, cache_dir)
    save_trainer_state(run.state, model, optimizer, scaler, cfg.epochs, finished=True, info={"seed": cfg.seed})
    run.log("finished")
    distributed.barrier(info)
    return metrics


def _calibrate(run: RunDir, model: Any, card: dict, cfg: TrainConfig, cohort: Any, train_cases: list, cal_cases: list,
               device: Any, cache_dir: Path | None) -> None:
    """Temperatures, conformal sets and OOD statistics on the held-out training knees, into the checkpoint."""
    from kneeoa.trust.fit import fit_trust
    from kneeoa.trust.store import write_trusted_checkpoint

    counts = "/".join(str(sum(c.kl == g for c in cal_cases)) for g in range(5))
    described = (f"{len(cal_cases)} training-split knees held out from training (--calibration-fraction "
                 f"{cfg.calibration_fraction}, subject-grouped, KL-stratified, KL 0-4 {counts}) of the "
                 f"{cohort.kind} cohort at {cohort.root}")
    stats = fit_trust(model, card, cal_cases, tuple(cfg.input_shape), device, fit_cases=train_cases,
                      calibrated_on=described, seed=cfg.seed, batch_size=cfg.eval_batch_size,
                      workers=cfg.workers, cache_dir=cache_dir)
    write_trusted_checkpoint(run.last, run.last, stats)
    t = stats.temperatures
    run.log(f"calibrated on {len(cal_cases)} held-out knees: T_kl={t.kl:.3g} T_oa={t.oa:.3g}")


def _tensorboard(run: RunDir) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package (pip install 'kneeoa[tensorboard]')") from None
    return SummaryWriter(str(run.tensorboard))

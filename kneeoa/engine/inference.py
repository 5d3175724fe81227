"""Batched inference shared by evaluation, `predict` and `score`: model outputs -> numpy probabilities."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kneeoa.contracts.prediction import Prediction
from kneeoa.hierarchy import consistent_kl, oa_from_kl


def load_model(checkpoint: str | Path, device: Any) -> tuple[Any, dict]:
    """(model in eval mode on `device`, model card) from a checkpoint (never unpickles)."""
    from kneeoa.errors import CheckpointError, ConfigError
    from kneeoa.models.checkpoint import load_checkpoint

    model, card = load_checkpoint(checkpoint, device="cpu")
    try:
        input_shape_of(model, card)
    except ConfigError as err:
        raise CheckpointError(f"the model card's preprocessing: {err.problem}", checkpoint) from None
    check_finite_weights(model, checkpoint)
    return model.to(device).eval(), card


def check_finite_weights(model: Any, checkpoint: str | Path) -> None:
    """CheckpointError naming the file when any weight or buffer is NaN/Inf (they would grade every knee 0)."""
    import torch

    from kneeoa.errors import CheckpointError

    def finite(t: Any) -> bool:
        # the float32 sum first (~50x cheaper than isfinite(t).all() on a paper-size model, measured); only a
        # non-finite sum, which huge finite weights could also give, is confirmed voxel by voxel
        return bool(torch.isfinite(t.sum(dtype=torch.float32))) or bool(torch.isfinite(t).all())

    bad = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
           if t.is_floating_point() and not finite(t.detach())]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise CheckpointError(f"weights hold NaN/Inf values ({', '.join(bad[:3])}{more}); the checkpoint is "
                              "corrupt or from a diverged training", checkpoint)


NONFINITE_OUTPUT = "the model's output is not finite (NaN/Inf): no grade is given for this volume"


def finite_rows(outputs: dict[str, np.ndarray | None]) -> np.ndarray:
    """(B,) bool: True where every model output of the row (probabilities, embedding) is finite."""
    ok = np.isfinite(outputs["oa_prob"])
    for key in ("kl_probs", "oa_prob_from_kl", "embedding"):
        value = outputs.get(key)
        if value is not None:
            ok &= np.isfinite(value.reshape(len(ok), -1)).all(axis=1)
    return ok


def input_shape_of(model: Any, card: dict) -> tuple[int, int, int]:
    """The model input (D, H, W): the card's preprocessing block, else the model spec."""
    from kneeoa.contracts.catalog import input_shape_problem
    from kneeoa.errors import ConfigError

    preprocessing = card.get("preprocessing") or {}
    shape = (preprocessing.get("input_shape") if isinstance(preprocessing, dict) else None) or model.spec.input_shape
    problem = input_shape_problem(shape)  # the card is data from a file: the same rule as ModelSpec's
    if problem:
        raise ConfigError(problem)
    return tuple(int(s) for s in shape)


def batch_outputs(model: Any, x: Any, amp_ctx: Any = None) -> dict[str, np.ndarray | None]:
    """One forward pass -> {'kl_probs' (B,5)|None, 'oa_prob' (B,), 'oa_prob_from_kl' (B,)|None, 'embedding' (B,E)}."""
    import contextlib

    import torch

    from kneeoa.models.heads import probabilities

    with torch.no_grad(), (amp_ctx or contextlib.nullcontext()):
        out = model(x)
        probs = probabilities(out)

    def np_or_none(t: Any) -> np.ndarray | None:
        return None if t is None else t.detach().float().cpu().numpy().astype(np.float64)

    return {"kl_probs": np_or_none(probs.get("kl_probs")), "oa_prob": np_or_none(probs["oa_prob"]).reshape(-1),
            "oa_prob_from_kl": np_or_none(probs.get("oa_prob_from_kl")),
            "embedding": np_or_none(out.embedding)}


def decisions(kl_probs: np.ndarray | None, oa_prob: np.ndarray) -> dict[str, np.ndarray | None]:
    """pred_oa (p >= 0.5), pred_kl (argmax), the hierarchy-consistent KL and whether the heads agree."""
    from kneeoa.hierarchy import OA_DECISION

    pred_oa = (np.asarray(oa_prob) >= OA_DECISION).astype(int)
    if kl_probs is None:
        return {"pred_oa": pred_oa, "pred_kl": None, "consistent_kl": None, "heads_agree": None}
    pred_kl = np.asarray(kl_probs).argmax(-1)
    return {"pred_oa": pred_oa, "pred_kl": pred_kl, "consistent_kl": np.asarray(consistent_kl(kl_probs, oa_prob)),
            "heads_agree": oa_from_kl(pred_kl) == pred_oa}


def predictions(outputs: dict[str, np.ndarray | None], embedding: bool = False) -> list[Prediction]:
    """One `Prediction` per row of a batch of model outputs (`batch_outputs`), decisions included."""
    dec = decisions(outputs["kl_probs"], outputs["oa_prob"])
    kl, from_kl, emb = outputs["kl_probs"], outputs.get("oa_prob_from_kl"), outputs.get("embedding")
    found = []
    for i in range(len(outputs["oa_prob"])):
        extra: dict = {}
        if kl is not None:
            extra = {"kl_probs": tuple(float(p) for p in kl[i]), "pred_kl": int(dec["pred_kl"][i]),
                     "consistent_kl": int(dec["consistent_kl"][i]), "heads_agree": bool(dec["heads_agree"][i])}
        if from_kl is not None:
            extra["oa_prob_from_kl"] = float(from_kl[i])
        if embedding and emb is not None:
            extra["embedding"] = tuple(float(v) for v in emb[i])
        found.append(Prediction(oa_prob=float(outputs["oa_prob"][i]), pred_oa=int(dec["pred_oa"][i]), **extra))
    return found


def predict_cases(model: Any, cases: list, input_shape: tuple[int, int, int], device: Any, batch_size: int = 2,
                  workers: int = 0, cache_dir: str | Path | None = None, amp: str = "none",
                  inspect: Callable[[Any, Any], Any] | None = None) -> dict[str, Any]:
    """Run a model over cohort cases; arrays in case order plus 'case_id', 'kl' (-1 unknown), 'oa'.

    With `cache_dir` the preprocessed tensors come from the cache (`CohortDataset`); without it the
    volumes go through the scoring feed (`kneeoa.engine.feed`: on CUDA decoded by the workers and
    preprocessed on the GPU). An unreadable case raises: an evaluation split must be whole.
    `inspect(array, affine)` (e.g. `TrustPredictor.inspect`) runs in the feed on each decoded volume, so
    nothing reads an image twice; its results, in case order, are 'inspected'. The cached path decodes no
    image: there `inspect` is not run and 'inspected' is absent (the caller reads the images itself).
    """
    from kneeoa.engine.devices import autocast, oom_guard

    inspected: list | None = [] if inspect is not None and cache_dir is None else None
    batches = (_cached_batches(model, cases, input_shape, device, batch_size, workers, cache_dir)
               if cache_dir is not None
               else _feed_batches(model, cases, input_shape, device, batch_size, workers, inspect, inspected))
    parts: dict[str, list] = {}
    was_training = model.training
    model.eval()
    try:
        with oom_guard(device, "inference", batch_size):
            for case_ids, kl, oa, x in batches:
                outputs = batch_outputs(model, x, autocast(device, amp))
                parts.setdefault("case_id", []).extend(case_ids)
                parts.setdefault("kl", []).append(kl)
                parts.setdefault("oa", []).append(oa)
                for key, value in outputs.items():
                    if value is not None:
                        parts.setdefault(key, []).append(value)
    finally:
        model.train(was_training)
    result: dict[str, Any] = {"case_id": list(parts.get("case_id", []))}
    for key in ("kl", "oa", "kl_probs", "oa_prob", "oa_prob_from_kl", "embedding"):
        result[key] = np.concatenate(parts[key]) if key in parts else None
    if inspected is not None:
        result["inspected"] = inspected
    return result


def _cached_batches(model: Any, cases: list, input_shape: tuple[int, int, int], device: Any, batch_size: int,
                    workers: int, cache_dir: str | Path) -> Iterator[tuple[list, np.ndarray, np.ndarray, Any]]:
    from torch.utils.data import DataLoader

    from kneeoa.data.dataset import CohortDataset

    dataset = CohortDataset(cases, tuple(input_shape), cache_dir=cache_dir, reorient=reorient_of(model))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=max(0, int(workers)),
                        pin_memory=device.type == "cuda")
    for batch in loader:
        yield (list(batch["case_id"]), batch["kl"].numpy(), batch["oa"].numpy(),
               batch["image"].to(device, non_blocking=True))


def _feed_batches(model: Any, cases: list, input_shape: tuple[int, int, int], device: Any, batch_size: int,
                  workers: int, inspect: Callable[[Any, Any], Any] | None = None,
                  inspected: list | None = None) -> Iterator[tuple[list, np.ndarray, np.ndarray, Any]]:
    """Model inputs from the feed; with `inspect`, its result of each volume appended to `inspected` in the
    order of the yielded case ids (the feed's item 'envelope', as `score` uses it)."""
    from kneeoa.engine import feed
    from kneeoa.errors import InputError

    spec = feed.InputSpec(tuple(input_shape), reorient_of(model), feed.model_dtype(model))
    items = [(str(i), str(case.image)) for i, case in enumerate(cases)]
    for batch in feed.iterate_batches(items, spec, device, int(workers), batch_size, check=inspect):
        good, x = feed.stack_inputs(batch, spec, device)
        failed = [item["error"] for item in batch if item["error"]]
        if failed:
            raise InputError(failed[0])
        if inspected is not None:
            inspected.extend(item["envelope"] for item in good)
        chosen = [cases[int(item["key"])] for item in good]
        kl = np.array([-1 if c.kl is None else int(c.kl) for c in chosen], dtype=np.int64)
        oa = np.array([-1 if c.kl is None else int(c.oa) for c in chosen], dtype=np.int64)
        yield [c.case_id for c in chosen], kl, oa, x


def evaluation_metrics(result: dict[str, Any]) -> dict[str, float]:
    """OA metrics (every variant) and KL metrics (KL heads) over the graded cases of a predict_cases result."""
    from kneeoa.analysis.metrics import kl_metrics, oa_metrics

    graded = result["kl"] >= 0
    metrics: dict[str, float] = {"n": int(graded.sum())}
    if not graded.any():
        return metrics
    metrics.update(oa_metrics(oa_from_kl(result["kl"][graded]), result["oa_prob"][graded]))
    if result.get("kl_probs") is not None:
        metrics.update(kl_metrics(result["kl"][graded], result["kl_probs"][graded]))
    return {k: (float(v) if not isinstance(v, int) else v) for k, v in metrics.items()}


def reorient_of(model: Any) -> str:
    """The model's input voxel order ('ras' or 'none', see contracts.vocab.REORIENT); 'ras' for plain modules."""
    return str(getattr(getattr(model, "spec", None), "reorient", "ras"))

"""`kneeoa calibrate`: fit temperatures, conformal sets and the OOD statistics on labelled knees -> a NEW checkpoint."""

from __future__ import annotations

import argparse

from kneeoa.contracts.vocab import DEVICES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "calibrate", help="calibrate a checkpoint (temperatures, KL/OA sets, OOD flag) -> new checkpoint",
        description="Fit one temperature per head, the conformal KL/OA sets and the out-of-distribution "
                    "statistics on labelled knees the model did not train on (subject-grouped, KL-stratified "
                    "halves: one fits the temperatures, the other the sets and the OOD p-values), and write them "
                    "with the weights into a NEW checkpoint whose card records the cohort. The input checkpoint "
                    "is never modified.\n\n"
                    "inputs:   --checkpoint, --data (a labelled cohort; --split knees the model did not train on)\n"
                    "outputs:  --out, a new checkpoint with the calibration in its card\n"
                    "example:  kneeoa calibrate --checkpoint model.safetensors --data cohort --split test "
                    "--ood-split train --out model_calibrated.safetensors")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.safetensors); only read")
    p.add_argument("--data", required=True, help="labelled cohort root (OAI-ZIB-CM layout or a generic folder)")
    p.add_argument("--labels", help="labels table for a generic folder")
    p.add_argument("--split", default="test", help="split whose graded knees calibrate (default: test); "
                                                    "use knees the model did not train on")
    p.add_argument("--ood-split", help="split that defines 'in distribution' (e.g. train: the training knees); "
                                       "default: the calibration knees")
    p.add_argument("--ood-data", help="cohort root of --ood-split when it is another cohort (default: --data)")
    p.add_argument("--out", required=True, help="the new checkpoint (.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="seed of the grouped half split (default 0)")
    p.add_argument("--device", default="auto", choices=DEVICES, help="auto = CUDA, then MPS, else CPU")
    p.add_argument("--batch-size", type=int, default=2, help="volumes per forward pass")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from kneeoa.data.cohort import load_cohort
    from kneeoa.engine.devices import resolve_device
    from kneeoa.engine.inference import input_shape_of, load_model
    from kneeoa.errors import ConfigError, InputError
    from kneeoa.hierarchy import KL_GRADES
    from kneeoa.progress import emit
    from kneeoa.trust.fit import fit_trust
    from kneeoa.trust.store import write_trusted_checkpoint
    from kneeoa.utils.hashing import sha256_of
    from kneeoa.utils.outputs import check_outputs

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError("the calibrated checkpoint must be a .safetensors file", out)
    check_outputs([out], [args.checkpoint], args.overwrite, what="the calibrated checkpoint")
    dev = resolve_device(args.device)
    model, card = load_model(args.checkpoint, dev)
    cohort = load_cohort(args.data, labels=args.labels)
    cases = cohort.split(args.split)
    if not cases:
        raise InputError(f"no graded cases in split {args.split!r}", args.data)
    if args.ood_data and not args.ood_split:
        raise ConfigError("--ood-data needs --ood-split (which of its splits the model trained on)")
    ood_cohort = load_cohort(args.ood_data) if args.ood_data else cohort
    fit_cases = ood_cohort.split(args.ood_split) if args.ood_split else None
    counts = "/".join(str(sum(c.kl == g for c in cases)) for g in KL_GRADES)
    described = (f"{cohort.kind} cohort at {cohort.root}, split {args.split}: {len(cases)} graded knees "
                 f"(KL 0-4 {counts})")
    stats = fit_trust(model, card, cases, input_shape_of(model, card), dev, fit_cases=fit_cases,
                      calibrated_on=described, seed=args.seed, batch_size=args.batch_size)
    # which weights were calibrated, by content (a local path means nothing on another machine)
    stats.info["source_checkpoint"] = {"file": Path(args.checkpoint).name,
                                       "sha256": sha256_of(args.checkpoint)}
    if fit_cases:
        stats.info["ood"]["fit_on"] = f"{len(fit_cases)} knees of split {args.ood_split} of {ood_cohort.root}"
    write_trusted_checkpoint(args.checkpoint, out, stats)
    block = stats.card_block()
    emit("result", task="calibrate", checkpoint=str(out), temperature=block["temperature"],
         n_conformal=block["n_conformal"])
    print(json.dumps({"checkpoint": str(out), "calibrated_on": described, "temperature": block["temperature"],
                      "n_temperature": block["n_temperature"], "n_conformal": block["n_conformal"]}, indent=2))
    return 0

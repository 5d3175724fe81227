"""Predictions a researcher can trust: temperature scaling, conformal KL/OA sets, an out-of-distribution flag.

calibration (temperatures, ECE/Brier/NLL), conformal (ordinal/LAC/APS sets, class-conditional option),
ood (Mahalanobis + conformal p-value), envelope (acquisition checks before the network runs), store (the
statistics as tensors in the checkpoint), fit (fitting them), predict (applying them). Names: kneeoa.contracts.trust.
"""

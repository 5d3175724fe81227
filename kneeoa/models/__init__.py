"""Backbones (ResNet3D, M3T, nnMamba), supervision heads, the model registry and safe checkpoints.

Import the submodules (`kneeoa.models.registry`, `.heads`, `.checkpoint`, ...): this package file
stays free of torch so `import kneeoa.models` is cheap.
"""

"""Contracts: the one definition of every name KneeOA uses, importable with the standard library alone.

  vocab     variants, heads, devices, AMP modes, saliency methods/targets, OAI-ZIB-CM labels, compartments,
            `model_name()`
  catalog   the backbone catalog (name -> "module:Class", paper width, default input shape)

Torch-free on purpose: 3D Slicer (before torch is installed), the CLI's argparse layer and the engine all
read the same tuples from here instead of keeping copies.
"""

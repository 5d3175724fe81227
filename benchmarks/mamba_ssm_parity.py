"""Parity of our PyTorch Mamba with `mamba_ssm`'s own Python code on CPU (no CUDA, nothing vendored).

`mamba_ssm` only ships CUDA kernels, but its sdist holds the module (`mamba_ssm/modules/mamba_simple.py`)
and the reference scan (`selective_scan_interface.selective_scan_ref`). As the paper's repository does to run
nnMamba without the extension, the CUDA modules are stubbed (`selective_scan_cuda` a fake module,
`causal_conv1d` unimportable, the triton layer-norm module empty), the module runs with
`use_fast_path=False`, and its `selective_scan_fn` is patched to `selective_scan_ref`. OUR state_dict is
loaded into it (strict) and outputs and gradients are compared in float32.

    pip download --no-deps --no-binary :all: --no-build-isolation mamba-ssm -d /tmp/mssm   # the sdist
    pip install einops            # mamba_ssm's own dependency (not one of kneeoa's)
    python benchmarks/mamba_ssm_parity.py /tmp/mssm/mamba_ssm-2.3.2.post1.tar.gz [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tarfile
import tempfile
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def source_root(sdist: Path, workdir: Path) -> Path:
    """The folder that holds the `mamba_ssm` package: the sdist unpacked into workdir, or a folder given as is."""
    if sdist.is_dir():
        roots = [sdist] + sorted(sdist.glob("*"))
    else:
        with tarfile.open(sdist) as tar:
            tar.extractall(workdir, filter="data")
        roots = sorted(workdir.glob("*"))
    for root in roots:
        if (root / "mamba_ssm" / "modules" / "mamba_simple.py").is_file():
            return root
    raise SystemExit(f"{sdist}: no mamba_ssm/modules/mamba_simple.py inside (is it the mamba-ssm sdist?)")


def load_mamba_ssm(root: Path):
    """mamba_ssm's Mamba class and selective_scan_ref, imported from source with the CUDA parts stubbed."""
    try:
        import einops  # noqa: F401
    except ImportError:
        raise SystemExit("mamba_ssm's own code needs einops: pip install einops") from None
    # the package __init__ imports Mamba2/Mamba3 (triton): register the package without running it
    package = types.ModuleType("mamba_ssm")
    package.__path__ = [str(root / "mamba_ssm")]
    sys.modules["mamba_ssm"] = package
    sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")  # fake CUDA extension
    sys.modules["causal_conv1d"] = None  # import fails -> the module's PyTorch conv1d path
    layer_norm = types.ModuleType("mamba_ssm.ops.triton.layer_norm")  # triton kernels: not used here
    layer_norm._layer_norm_fwd = layer_norm.RMSNorm = layer_norm.layer_norm_fn = layer_norm.rms_norm_fn = None
    sys.modules["mamba_ssm.ops.triton.layer_norm"] = layer_norm
    interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
    simple.selective_scan_fn = interface.selective_scan_ref  # the pure-PyTorch reference scan
    return simple.Mamba, interface.selective_scan_ref


def compare(theirs_cls, L: int, batch: int = 2, d_model: int = 32, d_state: int = 8, seed: int = 0) -> dict:
    """Max abs differences (fp32) of output and gradients, our module vs mamba_ssm's on our weights."""
    import torch

    from kneeoa.models.mamba import Mamba

    torch.manual_seed(seed)
    ours = Mamba(d_model, d_state=d_state, d_conv=4, expand=2, chunk_size=max(1, L // 3))  # several chunks
    theirs = theirs_cls(d_model=d_model, d_state=d_state, d_conv=4, expand=2, use_fast_path=False)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(batch, L, d_model)
    outs, grads = [], []
    for module in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        outs.append(y.detach())
        grads.append({"x": xi.grad, **{n: p.grad for n, p in module.named_parameters()}})
    grad_diff = {k: float((grads[0][k] - grads[1][k]).abs().max()) for k in grads[0]}
    return {"L": L, "batch": batch, "d_model": d_model, "d_state": d_state,
            "output_max_abs": float((outs[0] - outs[1]).abs().max()),
            "output_max": float(outs[1].abs().max()),
            "grad_max_abs": max(grad_diff.values()), "grad_worst": max(grad_diff, key=grad_diff.get),
            "grad_max": max(float(g.abs().max()) for g in grads[1].values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="mamba-ssm sdist (.tar.gz) or its unpacked folder")
    parser.add_argument("--lengths", default="1,37,1000,4096", help="sequence lengths to compare")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = source_root(args.sdist.resolve(), Path(tmp))
        theirs_cls, _ = load_mamba_ssm(root)
        version = (root / "mamba_ssm" / "__init__.py").read_text().split('__version__ = "')[-1].split('"')[0]
        rows = [compare(theirs_cls, int(L)) for L in args.lengths.split(",")]
    print(f"mamba_ssm {version} (own Python code, selective_scan_ref) vs kneeoa Mamba, float32, same weights")
    print(f"{'L':>6} {'output max abs':>15} {'output max':>11} {'grad max abs':>13} {'grad max':>9}  worst grad")
    for r in rows:
        print(f"{r['L']:6d} {r['output_max_abs']:15.3e} {r['output_max']:11.3g} {r['grad_max_abs']:13.3e} "
              f"{r['grad_max']:9.3g}  {r['grad_worst']}")
    worst = max(r["output_max_abs"] for r in rows)
    grad_rel = max(r["grad_max_abs"] / r["grad_max"] for r in rows)
    print(f"max abs output difference {worst:.3e} ({'below' if worst < 1e-4 else 'ABOVE'} 1e-4); "
          f"gradients differ by at most {grad_rel:.1e} of the largest gradient (float32 sums over B*L tokens)")
    if args.json:
        args.json.write_text(json.dumps({"mamba_ssm": version, "rows": rows}, indent=2))
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())

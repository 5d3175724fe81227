"""Mamba (selective SSM) mixer: `mamba_ssm.Mamba` on CUDA when installed, else a memory-bounded PyTorch scan.

`Mamba(d_model, d_state, d_conv, expand)` maps (B, L, d_model) -> (B, L, d_model) and owns exactly the
parameters of `mamba_ssm.Mamba` (in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj) with the same
initialisation, so one state_dict runs on either path. On CUDA with `mamba_ssm` importable the forward is
`mamba_ssm.Mamba.forward` evaluated with *these* parameters (torch.func.functional_call); everywhere else
the mixer runs in chunks along L with the blocked scan of `kneeoa.models.scan` (exact, no Python loop per
token, its own backward): at the paper's input size the nnMamba stem sequence is ~1.3M tokens and a plain
scan would materialise (L, ED, N) tensors of ~2.7 GB each.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kneeoa.models.scan import scan_chunk

BACKEND_ENV = "KNEEOA_MAMBA_BACKEND"  # "torch" forces the PyTorch scan even on CUDA with mamba_ssm
_MAMBA_SSM: dict[str, object] = {}


def mamba_ssm_status() -> tuple[bool, str]:
    """(importable, reason) for the CUDA `mamba_ssm` package; the import is attempted once."""
    if "ok" not in _MAMBA_SSM:
        try:
            from mamba_ssm import Mamba as MambaSSM

            _MAMBA_SSM.update(ok=True, reason="mamba_ssm importable", cls=MambaSSM)
        except Exception as err:  # ImportError, or a CUDA extension that fails to load
            _MAMBA_SSM.update(ok=False, reason=f"mamba_ssm not importable: {type(err).__name__}: {err}")
    return bool(_MAMBA_SSM["ok"]), str(_MAMBA_SSM["reason"])


def selective_scan(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                   chunk_size: int = 4096) -> Tensor:
    """y_t = C_t . h_t + D * x_t with h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t, h_0 = 0.

    Shapes: x, delta (b, L, E); A (E, N); B, C (b, L, N); D (E,). Computed in float32 chunk by chunk,
    carrying the state, so peak memory is O(chunk_size * E * N). With gradients on, each chunk is
    checkpointed (recomputed in backward) so training/saliency memory stays bounded too.
    """
    dtype = x.dtype
    x, delta, B, C = (t.float() for t in (x, delta, B, C))
    A = A.float()
    b, L, E = x.shape
    h = x.new_zeros(b, E, A.shape[1])
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, delta, A, B, C))
    ys = []
    for start in range(0, L, chunk_size):
        part = [t[:, start:start + chunk_size] for t in (x, delta)]
        bc = [t[:, start:start + chunk_size] for t in (B, C)]
        if grad and L > chunk_size:  # keep no (chunk, E, N) tensors per chunk: recompute them in backward
            y, h = checkpoint(scan_chunk, part[0], part[1], A, bc[0], bc[1], h, use_reentrant=False)
        else:
            y, h = scan_chunk(part[0], part[1], A, bc[0], bc[1], h)
        ys.append(y)
    y = torch.cat(ys, 1) if len(ys) > 1 else ys[0]
    return (y + x * D.float()).to(dtype)


def selective_scan_reference(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """The textbook token-by-token recurrence (slow; tests compare the chunked scan against it)."""
    b, L, E = x.shape
    h = x.new_zeros(b, E, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1) + x * D


class Mamba(nn.Module):
    """Drop-in for `mamba_ssm.Mamba` (same arguments, parameter names and init) that also runs without CUDA."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False, chunk_size: int | None = None,
                 backend: str = "auto"):
        super().__init__()
        if backend not in ("auto", "torch"):
            raise ValueError(f"Mamba backend must be 'auto' or 'torch', got {backend!r}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        # None: 4096 tokens on CPU, 131072 on GPUs. On an H100 the paper-size nnMamba training step took
        # 0.33 s at 131072 (7 GB), 0.37 s at 65536 (5 GB), 0.26 s unchunked (42 GB): see bench_mamba --paper
        self.chunk_size = chunk_size
        self.backend = backend
        self._ssm_kwargs = dict(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand,
                                dt_rank=self.dt_rank, conv_bias=conv_bias, bias=bias)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        # mamba_ssm's init: dt weights uniform(+-dt_rank^-0.5), softplus(dt bias) log-uniform in
        # [dt_min, dt_max], A = -[1..N] per channel (S4D real), D = 1
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True

    def uses_mamba_ssm(self, x: Tensor) -> bool:
        """True when this input goes through the CUDA `mamba_ssm` kernels."""
        if self.backend == "torch" or os.environ.get(BACKEND_ENV, "").lower() == "torch" or not x.is_cuda:
            return False
        return mamba_ssm_status()[0]

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, d_model) -> (B, L, d_model)."""
        if self.uses_mamba_ssm(x):
            return self._forward_mamba_ssm(x)
        return self._forward_torch(x)

    def _forward_mamba_ssm(self, x: Tensor) -> Tensor:
        # a parameter-less twin: kept out of the module tree (never in state_dict), fed our parameters
        twin = self.__dict__.get("_twin")
        if twin is None:
            twin = _MAMBA_SSM["cls"](**self._ssm_kwargs)
            self.__dict__["_twin"] = twin
        return torch.func.functional_call(twin, dict(self.named_parameters()), (x,))

    def _forward_torch(self, x: Tensor) -> Tensor:
        # The whole mixer (projections, causal conv, scan, gate) runs chunk by chunk along L, carrying the
        # SSM state and re-reading d_conv-1 tokens of history, so memory is O(chunk) besides input/output.
        L = x.shape[1]
        chunk = self.chunk_size or (131072 if x.is_cuda else 4096)
        h = x.new_zeros(x.shape[0], self.d_inner, self.d_state, dtype=torch.float32)
        if L <= chunk:
            return self._mix(x, 0, h)[0]
        grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        outs = []
        for start in range(0, L, chunk):
            history = min(start, self.d_conv - 1)
            piece = x[:, start - history:start + chunk]
            if grad:  # recompute in backward: activations of one chunk at a time
                out, h = checkpoint(self._mix, piece, history, h, use_reentrant=False)
            else:
                out, h = self._mix(piece, history, h)
            outs.append(out)
        return torch.cat(outs, 1)

    def _mix(self, x: Tensor, history: int, h: Tensor) -> tuple[Tensor, Tensor]:
        """Mixer on x (b, history + T, d_model) whose first `history` tokens only feed the causal conv."""
        T = x.shape[1] - history
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = F.silu(self.conv1d(xs.transpose(1, 2))[..., history:history + T]).transpose(1, 2)
        z = z[:, history:]
        dt, B, C = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log.float())
        y, h = scan_chunk(xs, delta, A, B, C, h)
        y = (y + xs.float() * self.D.float()).to(xs.dtype)
        return self.out_proj(y * F.silu(z)), h

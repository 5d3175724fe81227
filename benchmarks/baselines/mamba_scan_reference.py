"""Baseline for the Mamba benchmark: the scan kneeoa used before the blocked scan (kept verbatim).

A two-level sqrt(T) Python loop per chunk, differentiated by autograd step by step. `ReferenceMamba` is our
`Mamba` module with that scan in its mixer, so both run the same projections, conv and chunking.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from kneeoa.models.mamba import Mamba


def two_level_scan(x: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """Exact scan of one chunk of T tokens from state h0 (b, E, N): returns y (b, T, E) without the D term, h_T.

    Two levels keep both the Python loop and memory short: the chunk is cut into m blocks of c ~ sqrt(T)
    tokens laid out step-major (c, b, m, ...) so each step touches contiguous memory. Pass 1 runs the
    c-step recurrence in all blocks at once from a zero state; an m-step recurrence then carries the true
    state across blocks (a block's total decay is exp(A * sum(delta))); pass 2 reruns the c steps from the
    true block-start states and reads y out at each step, so no (T, E, N) state history is kept. Only
    factors exp(delta*A) in (0, 1] appear (no exp of positive sums): nothing can overflow.
    """
    b, T, E = x.shape
    N = A.shape[1]
    c = 1 << max(0, math.ceil(math.log2(max(T, 1))) // 2)
    m = -(-T // c)
    pad = m * c - T
    if pad:  # delta = 0 steps leave the state unchanged (decay 1, input 0)
        x, delta = F.pad(x, (0, 0, 0, pad)), F.pad(delta, (0, 0, 0, pad))
        B, C = F.pad(B, (0, 0, 0, pad)), F.pad(C, (0, 0, 0, pad))

    def step_major(t: Tensor) -> Tensor:  # (b, m*c, K) -> (c, b, m, K)
        return t.reshape(b, m, c, t.shape[-1]).permute(2, 0, 1, 3).contiguous()

    delta_s = step_major(delta)
    dA = torch.exp(delta_s.unsqueeze(-1) * A)  # (c, b, m, E, N)
    BX = (delta_s * step_major(x)).unsqueeze(-1) * step_major(B).unsqueeze(-2)  # (c, b, m, E, N)
    Cs = step_major(C).unsqueeze(-2)  # (c, b, m, 1, N)
    cur = BX.new_zeros(b, m, E, N)
    for j in range(c):
        cur = dA[j] * cur + BX[j]
    block_decay = torch.exp(delta_s.sum(0).unsqueeze(-1) * A)  # (b, m, E, N)
    starts = []
    h = h0
    for k in range(m):
        starts.append(h)
        h = block_decay[:, k] * h + cur[:, k]
    cur = torch.stack(starts, 1)
    ys = []
    for j in range(c):
        cur = dA[j] * cur + BX[j]
        ys.append((cur * Cs[j]).sum(-1))  # (b, m, E)
    y = torch.stack(ys, 2).reshape(b, m * c, E)  # (b, m, c, E) -> token order
    return y[:, :T], h


class ReferenceMamba(Mamba):
    """Our Mamba module with the old two-level scan in its mixer (same parameters, same chunking)."""

    def _mix(self, x: Tensor, history: int, h: Tensor) -> tuple[Tensor, Tensor]:
        T = x.shape[1] - history
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = F.silu(self.conv1d(xs.transpose(1, 2))[..., history:history + T]).transpose(1, 2)
        z = z[:, history:]
        dt, B, C = self.x_proj(xs).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log.float())
        y, h = two_level_scan(xs.float(), delta.float(), A, B.float(), C.float(), h)
        y = (y + xs.float() * self.D.float()).to(xs.dtype)
        return self.out_proj(y * F.silu(z)), h

"""The blocked scan (kneeoa.models.scan): exact against token-by-token loops, forward and backward."""

from __future__ import annotations

import pytest
import torch

from kneeoa.models.mamba import selective_scan_reference
from kneeoa.models.scan import SelectiveScan, linear_scan, scan_chunk


def loop_scan(a, b, h0, reverse=False):
    steps = range(a.shape[0] - 1, -1, -1) if reverse else range(a.shape[0])
    out, h = [None] * a.shape[0], h0
    for t in steps:
        h = a[t] * h + b[t]
        out[t] = h
    return torch.stack(out)


def scan_inputs(L: int, E: int = 6, N: int = 4, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, L, E, generator=g, dtype=dtype)
    delta = torch.rand(2, L, E, generator=g, dtype=dtype) * 0.5
    A = -torch.rand(E, N, generator=g, dtype=dtype) * 4
    B, C = torch.randn(2, L, N, generator=g, dtype=dtype), torch.randn(2, L, N, generator=g, dtype=dtype)
    h0 = torch.randn(2, E, N, generator=g, dtype=dtype)
    return x, delta, A, B, C, h0


def reference_with_state(x, delta, A, B, C, h0):
    """Token-by-token scan from h0: y without the D term and the last state (autograd does the backward)."""
    h, ys = h0, []
    for t in range(x.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * x[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1), h


@pytest.mark.parametrize("T", [1, 3, 4, 5, 16, 17, 70])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_equals_the_loop(T, reverse):
    g = torch.Generator().manual_seed(T)
    a, b, h0 = torch.rand(T, 3, 5, generator=g), torch.randn(T, 3, 5, generator=g), torch.randn(3, 5, generator=g)
    # block 4 makes 70 steps three levels deep (70 -> 18 -> 5 -> 2), padding at every level
    torch.testing.assert_close(linear_scan(a, b, h0, block=4, reverse=reverse), loop_scan(a, b, h0, reverse),
                               rtol=1e-5, atol=1e-6)


def test_selective_scan_gradcheck_float64():
    leaves = [t.requires_grad_(True) for t in scan_inputs(11, E=3, N=2, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *args: SelectiveScan.apply(*args, 3), leaves)


@pytest.mark.parametrize("L", [1, 50, 300])
def test_scan_and_its_gradients_equal_the_reference_in_float32(L):
    inputs = scan_inputs(L)
    results = []
    for fn in (scan_chunk, reference_with_state):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        y, h_last = fn(*leaves)
        (y.sin().sum() + h_last.cos().sum()).backward()  # both outputs feed the loss
        results.append([y.detach(), h_last.detach()] + [t.grad for t in leaves])
    for ours, ref in zip(*results):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_gradients_survive_strong_decay():
    x, delta, A, B, C, h0 = scan_inputs(64)
    inputs = (x, delta * 200, A, B, C, h0)  # exp(delta*A) underflows to 0 for most steps
    results = []
    for fn in (scan_chunk, reference_with_state):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        fn(*leaves)[0].pow(2).sum().backward()
        results.append([t.grad for t in leaves])
    for ours, ref in zip(*results):
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_state_carried_between_chunks_gives_the_whole_scan_and_gradients():
    inputs = scan_inputs(40)
    results = []
    for split in (40, 13):
        x, delta, A, B, C, h = [t.clone().requires_grad_(True) for t in inputs]
        leaves = (x, delta, A, B, C, h)
        ys = []
        for s in range(0, 40, split):
            y, h = scan_chunk(x[:, s:s + split], delta[:, s:s + split], A, B[:, s:s + split], C[:, s:s + split], h)
            ys.append(y)
        torch.cat(ys, 1).pow(2).sum().backward()
        results.append([t.grad for t in leaves])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_output_plus_D_term_equals_selective_scan_reference():
    x, delta, A, B, C, _ = scan_inputs(33)
    D = torch.randn(6)
    y, _ = scan_chunk(x, delta, A, B, C, torch.zeros(2, 6, 4))
    torch.testing.assert_close(y + x * D, selective_scan_reference(x, delta, A, B, C, D), rtol=1e-5, atol=1e-5)


def test_mamba_trains_inside_bfloat16_autocast_with_an_fp32_scan():
    from kneeoa.models.mamba import Mamba

    torch.manual_seed(0)
    m = Mamba(8, d_state=4, expand=2, chunk_size=16)
    x = torch.randn(2, 40, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    y.float().pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(m.A_log.grad).all()
    with torch.no_grad():  # same as fp32 up to the bf16 projections around the scan
        torch.testing.assert_close(y.float(), m(x), rtol=0.1, atol=0.05)

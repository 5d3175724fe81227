"""The PyTorch Mamba backend: parity with the independent `mambapy` package and exact chunked scans."""

from __future__ import annotations

import pytest
import torch
from mambapy.mamba import MambaBlock, MambaConfig

from kneeoa.models.mamba import Mamba, selective_scan, selective_scan_reference
from kneeoa.models.registry import ModelSpec, build_model


def mambapy_twin(m: Mamba) -> MambaBlock:
    return MambaBlock(MambaConfig(d_model=m.d_model, n_layers=1, d_state=m.d_state, d_conv=m.d_conv,
                                  expand_factor=m.expand))


def scan_inputs(L: int, E: int = 6, N: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, L, E, generator=g)
    delta = torch.rand(2, L, E, generator=g) * 0.5
    A = -torch.rand(E, N, generator=g) * 4
    B, C = torch.randn(2, L, N, generator=g), torch.randn(2, L, N, generator=g)
    return x, delta, A, B, C, torch.randn(E, generator=g)


def test_parameter_names_are_those_of_mamba_ssm():
    names = {n.split(".")[0] for n, _ in Mamba(8).named_parameters()}
    assert names == {"in_proj", "conv1d", "x_proj", "dt_proj", "A_log", "D", "out_proj"}


@pytest.mark.parametrize("L", [1, 37, 64])
def test_forward_matches_mambapy_on_the_same_weights(L):
    torch.manual_seed(0)
    ours = Mamba(16, d_state=8, d_conv=4, expand=2, chunk_size=16)
    theirs = mambapy_twin(ours)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, L, 16)
    with torch.no_grad():
        diff = (ours(x) - theirs(x)).abs().max().item()
    assert diff < 1e-4


def test_mambapy_weights_load_into_ours():
    torch.manual_seed(1)
    theirs = MambaBlock(MambaConfig(d_model=8, n_layers=1, d_state=4, d_conv=3, expand_factor=2))
    ours = Mamba(8, d_state=4, d_conv=3, expand=2)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 20, 8)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-4


def test_same_init_scheme_as_mamba_ssm():
    m = Mamba(32, d_state=8, expand=2)
    torch.testing.assert_close(m.A_log.exp(), torch.arange(1, 9.0).repeat(64, 1))
    assert torch.equal(m.D, torch.ones(64))
    dt = torch.nn.functional.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    assert m.dt_proj.weight.abs().max() <= m.dt_rank ** -0.5


@pytest.mark.parametrize("chunk", [1, 5, 16, 1000])
def test_chunked_scan_equals_sequential_reference(chunk):
    args = scan_inputs(50)
    torch.testing.assert_close(selective_scan(*args, chunk_size=chunk), selective_scan_reference(*args),
                               rtol=1e-5, atol=1e-5)


def test_chunked_scan_gradients_equal_unchunked():
    x, delta, A, B, C, D = scan_inputs(40)
    grads = []
    for chunk in (7, 1000):  # several checkpointed chunks vs one chunk
        leaves = [t.clone().requires_grad_(True) for t in (x, delta, A, B, C)]
        selective_scan(*leaves, D, chunk_size=chunk).pow(2).sum().backward()
        grads.append([t.grad for t in leaves])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_scan_survives_strong_decay_without_overflow():
    x, delta, A, B, C, D = scan_inputs(64)
    y = selective_scan(x, delta * 200, A, B, C, D, chunk_size=32)  # exp(delta*A) underflows to 0
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, selective_scan_reference(x, delta * 200, A, B, C, D), rtol=1e-5, atol=1e-5)


def test_bfloat16_input_is_scanned_in_float32():
    x, delta, A, B, C, D = scan_inputs(20)
    y = selective_scan(x.bfloat16(), delta.bfloat16(), A, B.bfloat16(), C.bfloat16(), D, chunk_size=8)
    assert y.dtype == torch.bfloat16
    ref = selective_scan_reference(*(t.bfloat16().float() for t in (x, delta)), A,
                                   *(t.bfloat16().float() for t in (B, C)), D)
    torch.testing.assert_close(y.float(), ref, rtol=2e-2, atol=2e-2)


def test_cpu_input_uses_the_torch_path():
    assert not Mamba(8).uses_mamba_ssm(torch.zeros(1, 4, 8))


def test_nnmamba_output_does_not_depend_on_the_scan_chunk():
    torch.manual_seed(0)
    big = build_model(ModelSpec("nnmamba", "dual", input_shape=(16, 16, 16), width=4)).eval()
    small = build_model(ModelSpec("nnmamba", "dual", input_shape=(16, 16, 16), width=4,
                                  options={"mamba_chunk": 7})).eval()
    small.load_state_dict(big.state_dict(), strict=True)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(big(x).kl_logits, small(x).kl_logits, rtol=1e-5, atol=1e-5)


def test_mixer_chunks_carry_state_and_conv_history_exactly():
    torch.manual_seed(0)
    whole = Mamba(8, d_state=4, d_conv=4, expand=2, chunk_size=1000)
    pieces = Mamba(8, d_state=4, d_conv=4, expand=2, chunk_size=5)
    pieces.load_state_dict(whole.state_dict())
    x = torch.randn(2, 37, 8)
    results = []
    for m in (whole, pieces):
        xi = x.clone().requires_grad_(True)
        y = m(xi)
        y.pow(2).sum().backward()
        results.append((y.detach(), xi.grad, m.in_proj.weight.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

"""Every Triton kernel against its pure-PyTorch reference.

On a machine without a GPU these run under Triton's interpreter (TRITON_INTERPRET=1, set in
conftest); with GPUPOOL_TEST_CUDA=1 on a GPU machine the same tests run the compiled kernels.
Shapes are small and odd on purpose: partial blocks, padding masks, non-power-of-two widths.
"""

from __future__ import annotations

import os

import pytest
import torch

from gpupool_worker.engine.kernels import reference, triton_support

DEVICE = torch.device("cuda" if os.environ.get("GPUPOOL_TEST_CUDA") == "1" else "cpu")
ok, why = triton_support(DEVICE)
pytestmark = pytest.mark.skipif(not ok, reason=why)

if ok:
    from gpupool_worker.engine.kernels import triton_ops

DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])
TOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def _randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(DEVICE, dtype)


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> None:
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    err = (got.float() - want.float()).abs().max().item()
    assert err <= TOL[dtype] * scale, f"max abs error {err} > {TOL[dtype] * scale}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "width"), [(1, 16), (7, 48), (5, 384), (3, 100)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_layer_norm_matches_reference(dtype: torch.dtype, rows: int, width: int, with_residual: bool) -> None:
    x = _randn(rows, width, dtype=dtype, seed=1) * 3 + 1
    residual = _randn(rows, width, dtype=dtype, seed=2) if with_residual else None
    w, b = _randn(width, dtype=dtype, seed=3), _randn(width, dtype=dtype, seed=4)
    _close(triton_ops.layer_norm(x, w, b, 1e-12, residual),
           reference.layer_norm(x, w, b, 1e-12, residual), dtype, scale=4)


def test_layer_norm_handles_three_dimensional_input() -> None:
    x = _randn(2, 9, 32)
    w, b = _randn(32, seed=5), _randn(32, seed=6)
    _close(triton_ops.layer_norm(x, w, b, 1e-5), reference.layer_norm(x, w, b, 1e-5), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 7), (2, 5, 64), (3, 1536), (4, 33, 130)])
def test_bias_gelu_matches_reference(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = _randn(*shape, dtype=dtype, seed=7) * 2
    bias = _randn(shape[-1], dtype=dtype, seed=8)
    _close(triton_ops.bias_gelu(x, bias), reference.bias_gelu(x, bias), dtype, scale=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "seq", "heads", "head_dim"), [(1, 1, 1, 16), (2, 37, 3, 16), (2, 70, 2, 32)])
def test_attention_matches_reference_with_padding(
    dtype: torch.dtype, batch: int, seq: int, heads: int, head_dim: int,
) -> None:
    qkv = _randn(batch, seq, 3, heads, head_dim, dtype=dtype, seed=9)
    q, k, v = qkv.unbind(2)  # strided views, as the encoder passes them
    mask = torch.ones(batch, seq, device=DEVICE)
    if batch > 1:
        mask[-1, seq // 2 + 1 :] = 0  # a padded sequence
    key_bias = (1.0 - mask) * -1e4
    scale = head_dim**-0.5
    got = triton_ops.attention(q, k, v, key_bias, scale)
    want = reference.attention(q, k, v, key_bias, scale)
    _close(got, want, dtype, scale=2)


def test_attention_rejects_head_dims_the_kernel_cannot_tile() -> None:
    q = _randn(1, 4, 1, 12)
    with pytest.raises(ValueError, match="head_dim"):
        triton_ops.attention(q, q, q, torch.zeros(1, 4, device=DEVICE), 0.3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "k", "n"), [(1, 16, 16), (7, 48, 70), (40, 96, 33)])
@pytest.mark.parametrize("gelu", [False, True])
def test_int8_linear_matches_reference(dtype: torch.dtype, m: int, k: int, n: int, gelu: bool) -> None:
    x = _randn(m, k, dtype=dtype, seed=10)
    qweight, scale = reference.quantize_int8(_randn(n, k, seed=11))
    bias = _randn(n, dtype=dtype, seed=12)
    got = triton_ops.int8_linear(x, qweight, scale, bias, gelu=gelu)
    want = reference.int8_linear(x, qweight, scale, bias, gelu=gelu)
    _close(got, want, dtype, scale=10 if dtype is not torch.float32 else 20)


def test_int8_quantization_is_close_to_the_dense_weights() -> None:
    w = _randn(64, 128, seed=13)
    q, scale = reference.quantize_int8(w)
    assert q.dtype is torch.int8
    assert int(q.abs().max()) == 127
    restored = q.float() * scale[:, None]
    assert (restored - w).abs().max().item() <= scale.max().item() / 2 + 1e-6


def test_int8_linear_without_bias() -> None:
    x = _randn(3, 32, seed=14)
    q, scale = reference.quantize_int8(_randn(16, 32, seed=15))
    _close(triton_ops.int8_linear(x, q, scale, None), reference.int8_linear(x, q, scale, None),
           torch.float32, scale=20)

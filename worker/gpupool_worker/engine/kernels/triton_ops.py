# mypy: disable-error-code="untyped-decorator,no-untyped-def"
"""Fused Triton kernels for the encoder's hot paths, each a drop-in for a function in
:mod:`gpupool_worker.engine.kernels.reference` (same signature, same result within tolerance).

- ``layer_norm``: residual add + LayerNorm in one pass over each row (one read, one write).
- ``bias_gelu``: bias add + exact GELU, the epilogue of the FFN's first matmul.
- ``attention``: flash-style attention with online softmax and the padding mask applied in-kernel;
  reads Q/K/V through strides straight out of the fused QKV projection (no transposes, no S x S
  score matrix in memory).
- ``int8_linear``: weight-only INT8 matmul; the weights stay int8 in memory (4x less traffic than
  fp32), are widened in registers, and per-channel scale, bias and optional GELU are fused.

Importing this module needs ``triton``. The kernels run on CUDA, or on the CPU under Triton's
interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which is how the test
suite checks them on machines without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["attention", "bias_gelu", "int8_linear", "layer_norm"]

_SQRT1_2 = 0.7071067811865476


@triton.jit
def _layer_norm_kernel(
    x_ptr, r_ptr, y_ptr, w_ptr, b_ptr, stride_x, stride_r, stride_y, n_cols, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        x += tl.load(r_ptr + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / n_cols
    diff = tl.where(mask, x - mean, 0.0)
    var = tl.sum(diff * diff, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = diff * rstd * w + b
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    r2 = x2
    if residual is not None:
        r2 = residual.reshape(-1, n)
        if r2.stride(-1) != 1:
            r2 = r2.contiguous()
    y = torch.empty((x2.shape[0], n), dtype=x.dtype, device=x.device)
    block = triton.next_power_of_2(n)
    _layer_norm_kernel[(x2.shape[0],)](
        x2, r2, y, weight, bias, x2.stride(0), r2.stride(0), y.stride(0), n, eps,
        HAS_RESIDUAL=residual is not None, BLOCK_N=block, num_warps=4 if block <= 1024 else 8,
    )
    return y.reshape(x.shape)


@triton.jit
def _bias_gelu_kernel(x_ptr, b_ptr, y_ptr, n_elements, n_cols, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs % n_cols, mask=mask, other=0.0).to(tl.float32)
    h = x + b
    y = 0.5 * h * (1.0 + tl.math.erf(h * 0.7071067811865476))
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    y = torch.empty_like(x)
    n = x.numel()
    block = 1024
    _bias_gelu_kernel[(triton.cdiv(n, block),)](x, bias, y, n, x.shape[-1], BLOCK=block)
    return y


@triton.jit
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, o_ptr,
    sq_b, sq_s, sq_h, sk_b, sk_s, sk_h, sv_b, sv_s, sv_h, so_b, so_s, so_h, sbias_b,
    n_heads, seq_len, scale,
    HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // n_heads
    h = pid_bh % n_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_D)
    m_valid = offs_m < seq_len
    q = tl.load(q_ptr + b * sq_b + h * sq_h + offs_m[:, None] * sq_s + offs_d[None, :],
                mask=m_valid[:, None], other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_D), dtype=tl.float32)
    for start in range(0, seq_len, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_valid = offs_n < seq_len
        k = tl.load(k_ptr + b * sk_b + h * sk_h + offs_n[None, :] * sk_s + offs_d[:, None],
                    mask=n_valid[None, :], other=0.0)
        s = tl.dot(q, k, input_precision=DOT_PRECISION).to(tl.float32) * scale
        key_bias = tl.load(bias_ptr + b * sbias_b + offs_n, mask=n_valid, other=0.0).to(tl.float32)
        s = s + key_bias[None, :]
        s = tl.where(n_valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + b * sv_b + h * sv_h + offs_n[:, None] * sv_s + offs_d[None, :],
                    mask=n_valid[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION).to(tl.float32)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + b * so_b + h * so_h + offs_m[:, None] * so_s + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=m_valid[:, None])


def _dot_precision(x: torch.Tensor) -> str:
    """fp32 dots follow PyTorch's own setting: TF32 only where torch allows it for matmuls."""
    if x.dtype == torch.float32 and x.is_cuda and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor, scale: float,
) -> torch.Tensor:
    batch, seq, heads, head_d = q.shape
    if head_d < 16 or head_d & (head_d - 1):
        raise ValueError(f"attention kernel needs a power-of-two head_dim >= 16, got {head_d}")
    out = torch.empty((batch, seq, heads, head_d), dtype=q.dtype, device=q.device)
    block_m = 16 if seq <= 16 else (32 if seq <= 32 or not q.is_cuda else 64)
    block_n = block_m
    key_bias = key_bias.contiguous()
    grid = (triton.cdiv(seq, block_m), batch * heads)
    _attention_kernel[grid](
        q, k, v, key_bias, out,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        key_bias.stride(0), heads, seq, scale,
        HEAD_D=head_d, BLOCK_M=block_m, BLOCK_N=block_n, DOT_PRECISION=_dot_precision(q), num_warps=4,
    )
    return out


@triton.jit
def _int8_linear_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr, M, N, K,
    stride_xm, stride_wn, stride_ym,
    HAS_BIAS: tl.constexpr, GELU: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + kk[None, :],
                    mask=(offs_m[:, None] < M) & (kk[None, :] < K), other=0.0)
        w = tl.load(w_ptr + offs_n[None, :] * stride_wn + kk[:, None],
                    mask=(offs_n[None, :] < N) & (kk[:, None] < K), other=0)
        acc += tl.dot(x, w.to(x.dtype), input_precision=DOT_PRECISION)
    scale = tl.load(scale_ptr + offs_n, mask=offs_n < N, other=0.0)
    acc = acc * scale[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    if GELU:
        acc = 0.5 * acc * (1.0 + tl.math.erf(acc * 0.7071067811865476))
    tl.store(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


_INT8_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
    for bm, bn, bk, w, st in [
        (16, 64, 128, 4, 4), (16, 128, 128, 4, 3), (32, 64, 128, 4, 4), (32, 128, 64, 4, 4),
        (64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3),
    ]
]


def _bucket(m: int) -> int:
    """Rows rounded up to a power of two: the autotuning key, so batch sizes share tunings."""
    return 1 << max(4, (m - 1).bit_length())


@triton.jit
def _int8_linear_entry(
    x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
    HAS_BIAS: tl.constexpr, GELU: tl.constexpr, DOT_PRECISION: tl.constexpr, M_BUCKET: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    _int8_linear_kernel(x_ptr, w_ptr, scale_ptr, bias_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                        HAS_BIAS, GELU, DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)


_int8_linear_tuned = triton.autotune(_INT8_CONFIGS, key=["M_BUCKET", "N", "K"])(_int8_linear_entry)


def int8_linear(
    x: torch.Tensor, weight_q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
    *, gelu: bool = False,
) -> torch.Tensor:
    k = x.shape[-1]
    n = weight_q.shape[0]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    common = (x2, weight_q, scale, bias if bias is not None else scale, y, m, n, k,
              x2.stride(0), weight_q.stride(0), y.stride(0))
    flags = {"HAS_BIAS": bias is not None, "GELU": gelu, "DOT_PRECISION": _dot_precision(x2)}
    if x.is_cuda:  # tile sizes tuned per (M bucket, N, K) on first use
        def grid(meta: dict[str, int]) -> tuple[int, int]:
            return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))

        _int8_linear_tuned[grid](*common, M_BUCKET=_bucket(m), **flags)
    else:  # the interpreter: fewer, larger steps run faster
        grid_cpu = (triton.cdiv(m, 32), triton.cdiv(n, 32))
        _int8_linear_kernel[grid_cpu](*common, **flags, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32)
    return y.reshape(*x.shape[:-1], n)

"""Pure-PyTorch references for every fused kernel: the ground truth the Triton kernels are tested
against, and the implementation the eager and torch.compile engines run.

Each function computes in float32 internally and returns the input's dtype, as the kernels do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "attention",
    "bias_gelu",
    "int8_linear",
    "layer_norm",
    "quantize_int8",
]


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """LayerNorm(x + residual) over the last dimension."""
    h = x.float() if residual is None else x.float() + residual.float()
    return F.layer_norm(h, (h.shape[-1],), weight.float(), bias.float(), eps).to(x.dtype)


def bias_gelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """GELU(x + bias), the exact (erf) form BERT uses."""
    return F.gelu(x.float() + bias.float()).to(x.dtype)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor, scale: float,
) -> torch.Tensor:
    """softmax(q k^T * scale + key_bias) v.

    q, k, v: (batch, seq, heads, head_dim); key_bias: (batch, seq) additive, 0 for real tokens and a
    large negative number for padding. Returns (batch, seq, heads, head_dim).
    """
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    scores = qf @ kf.transpose(-1, -2) * scale + key_bias.float()[:, None, None, :]
    out = torch.softmax(scores, dim=-1) @ vf
    return out.transpose(1, 2).to(q.dtype)


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel INT8: weight (out, in) -> (int8 (out, in), float32 scale (out,))."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def int8_linear(
    x: torch.Tensor, weight_q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
    *, gelu: bool = False,
) -> torch.Tensor:
    """Weight-only INT8 linear: (x @ dequant(weight_q)^T) + bias, optionally followed by GELU."""
    y = (x.float() @ weight_q.float().t()) * scale.float()
    if bias is not None:
        y = y + bias.float()
    if gelu:
        y = F.gelu(y)
    return y.to(x.dtype)


def softmax_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)

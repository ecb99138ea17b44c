"""A BERT-family sentence encoder (all-MiniLM-L6-v2 and its relatives) written against a small
set of fused operations, so the same weights run with PyTorch eager ops, torch.compile or the
Triton kernels.

Weights are read from a Hugging Face-layout directory (``config.json`` + ``model.safetensors``);
Q, K and V projections are fused into one matmul at load time. Pooling is the mean over real tokens,
optionally L2-normalized, as sentence-transformers does for this model family.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gpupool_worker.engine.kernels import reference
from gpupool_worker.engine.precision import EngineKind, Precision

__all__ = ["Encoder", "EncoderConfig", "Ops", "build_ops"]


@dataclass(frozen=True, slots=True)
class EncoderConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position: int
    type_vocab_size: int
    layer_norm_eps: float

    @classmethod
    def from_hf(cls, data: dict[str, Any]) -> EncoderConfig:
        if data.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"only gelu encoders are supported, got {data.get('hidden_act')}")
        return cls(
            vocab_size=int(data["vocab_size"]),
            hidden_size=int(data["hidden_size"]),
            num_layers=int(data["num_hidden_layers"]),
            num_heads=int(data["num_attention_heads"]),
            intermediate_size=int(data["intermediate_size"]),
            max_position=int(data["max_position_embeddings"]),
            type_vocab_size=int(data.get("type_vocab_size", 2)),
            layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position, "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps, "pad_token_id": 0,
        }

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class Ops(Protocol):
    """The fused operations the encoder is written against."""

    def layer_norm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   residual: torch.Tensor | None = None) -> torch.Tensor: ...

    def linear(self, x: torch.Tensor, p: Linear, *, gelu: bool = False) -> torch.Tensor: ...

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor,
                  scale: float) -> torch.Tensor: ...


@dataclass(slots=True)
class Linear:
    """A linear layer's parameters: dense (``weight``) or weight-only INT8 (``qweight`` + ``scale``)."""

    bias: torch.Tensor
    weight: torch.Tensor | None = None
    qweight: torch.Tensor | None = None
    scale: torch.Tensor | None = None

    @classmethod
    def build(cls, weight: torch.Tensor, bias: torch.Tensor, precision: Precision,
              dtype: torch.dtype, device: torch.device) -> Linear:
        if precision is Precision.INT8:
            q, scale = reference.quantize_int8(weight)
            return cls(bias=bias.to(device, dtype), qweight=q.to(device),
                       scale=scale.to(device, torch.float32))
        return cls(bias=bias.to(device, dtype), weight=weight.to(device, dtype).contiguous())


class TorchOps:
    """PyTorch ops: SDPA attention, cuBLAS/oneDNN matmuls; what eager and torch.compile run."""

    def layer_norm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   residual: torch.Tensor | None = None) -> torch.Tensor:
        h = x if residual is None else x + residual
        return F.layer_norm(h, (weight.shape[0],), weight, bias, eps)  # a static size: ONNX export traces it

    def linear(self, x: torch.Tensor, p: Linear, *, gelu: bool = False) -> torch.Tensor:
        if p.weight is not None:
            y = F.linear(x, p.weight, p.bias)
            return F.gelu(y) if gelu else y
        assert p.qweight is not None
        assert p.scale is not None
        return reference.int8_linear(x, p.qweight, p.scale, p.bias, gelu=gelu)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor,
                  scale: float) -> torch.Tensor:
        mask = key_bias.to(q.dtype)[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, scale=scale)
        return out.transpose(1, 2)


class TritonOps:
    """The fused Triton kernels (see :mod:`gpupool_worker.engine.kernels.triton_ops`)."""

    def __init__(self) -> None:
        from gpupool_worker.engine.kernels import triton_ops

        self._k = triton_ops

    def layer_norm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   residual: torch.Tensor | None = None) -> torch.Tensor:
        return self._k.layer_norm(x, weight, bias, eps, residual)

    def linear(self, x: torch.Tensor, p: Linear, *, gelu: bool = False) -> torch.Tensor:
        if p.qweight is not None:
            assert p.scale is not None
            return self._k.int8_linear(x, p.qweight, p.scale, p.bias, gelu=gelu)
        assert p.weight is not None
        if gelu:  # matmul on the vendor library, bias + GELU fused into one pass
            return self._k.bias_gelu(torch.matmul(x, p.weight.t()), p.bias)
        return F.linear(x, p.weight, p.bias)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor,
                  scale: float) -> torch.Tensor:
        return self._k.attention(q, k, v, key_bias, scale)


def build_ops(engine: EngineKind) -> Ops:
    return TritonOps() if engine is EngineKind.TRITON else TorchOps()


@dataclass(slots=True)
class _Layer:
    qkv: Linear
    out: Linear
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    ff1: Linear
    ff2: Linear
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor


class Encoder:
    """Token ids in, pooled sentence embeddings out. Holds weights, not an nn.Module: nothing here
    trains, and a plain callable is what torch.compile and the Triton path both want."""

    def __init__(self, config: EncoderConfig, tensors: dict[str, torch.Tensor], *, ops: Ops,
                 precision: Precision, device: torch.device, normalize: bool = True) -> None:
        self.config = config
        self.ops = ops
        self.precision = precision
        self.device = device
        self.dtype = precision.activation_dtype(device.type)
        self.normalize = normalize
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

        def t(name: str) -> torch.Tensor:
            try:
                return tensors[prefix + name]
            except KeyError:
                raise ValueError(f"weights lack tensor '{prefix + name}'") from None

        dt, dev = self.dtype, device
        self.word = t("embeddings.word_embeddings.weight").to(dev, dt)
        self.pos = t("embeddings.position_embeddings.weight").to(dev, dt)
        self.typ = t("embeddings.token_type_embeddings.weight").to(dev, dt)
        self.emb_ln_w = t("embeddings.LayerNorm.weight").to(dev, dt)
        self.emb_ln_b = t("embeddings.LayerNorm.bias").to(dev, dt)
        self.layers: list[_Layer] = []
        for i in range(config.num_layers):
            p = f"encoder.layer.{i}."
            qkv_w = torch.cat([t(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")])
            qkv_b = torch.cat([t(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")])

            def lin(name: str, p: str = p) -> Linear:
                return Linear.build(t(p + name + ".weight"), t(p + name + ".bias"), precision, dt, dev)

            self.layers.append(_Layer(
                qkv=Linear.build(qkv_w, qkv_b, precision, dt, dev),
                out=lin("attention.output.dense"),
                ln1_w=t(p + "attention.output.LayerNorm.weight").to(dev, dt),
                ln1_b=t(p + "attention.output.LayerNorm.bias").to(dev, dt),
                ff1=lin("intermediate.dense"),
                ff2=lin("output.dense"),
                ln2_w=t(p + "output.LayerNorm.weight").to(dev, dt),
                ln2_b=t(p + "output.LayerNorm.bias").to(dev, dt),
            ))
        self._scale = 1.0 / math.sqrt(config.head_dim)

    @classmethod
    def from_directory(cls, directory: Path, **kwargs: Any) -> Encoder:
        config = EncoderConfig.from_hf(json.loads((directory / "config.json").read_text()))
        tensors = load_file(str(directory / "model.safetensors"))
        return cls(config, tensors, **kwargs)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.forward(input_ids, attention_mask, token_type_ids)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        ops, cfg = self.ops, self.config
        batch, seq = input_ids.shape
        positions = torch.arange(seq, device=input_ids.device)
        x = self.word[input_ids] + self.pos[positions][None] + self.typ[token_type_ids]
        x = ops.layer_norm(x, self.emb_ln_w, self.emb_ln_b, cfg.layer_norm_eps)
        key_bias = (1.0 - attention_mask.to(torch.float32)) * -1e4
        heads, head_dim = cfg.num_heads, cfg.head_dim
        for layer in self.layers:
            qkv = ops.linear(x, layer.qkv).view(batch, seq, 3, heads, head_dim)
            q, k, v = qkv.unbind(2)
            ctx = ops.attention(q, k, v, key_bias, self._scale).reshape(batch, seq, cfg.hidden_size)
            x = ops.layer_norm(ops.linear(ctx, layer.out), layer.ln1_w, layer.ln1_b,
                               cfg.layer_norm_eps, residual=x)
            h = ops.linear(x, layer.ff1, gelu=True)
            x = ops.layer_norm(ops.linear(h, layer.ff2), layer.ln2_w, layer.ln2_b,
                               cfg.layer_norm_eps, residual=x)
        mask = attention_mask.to(torch.float32)[..., None]
        pooled = (x.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1) if self.normalize else pooled


def compiled(fn: Callable[..., torch.Tensor], *, backend: str = "inductor",
             mode: str | None = None) -> Callable[..., torch.Tensor]:
    """torch.compile with dynamic batch and sequence length (one graph for every shape)."""
    return torch.compile(fn, backend=backend, mode=mode, dynamic=True, fullgraph=True)

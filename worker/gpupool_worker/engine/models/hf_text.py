"""Hugging Face transformer folders as served models, through ``transformers`` (eager PyTorch):

- sentence embedding: text in, one vector per text out, pooled and normalized the way the
  folder's sentence-transformers config says (cls, mean, max, mean_sqrt_len_tokens,
  weightedmean, lasttoken; Dense and Normalize modules), mean pooling for a plain encoder;
- sequence classification: text in, logits and the top label (``id2label``) out;
- cross-encoder reranking: ``query`` and ``document`` (row i pairs query i with document i) in,
  one relevance ``score`` per pair out (the model's activation, sigmoid by default) and its
  raw ``logit``.

Weights load from safetensors only (``use_safetensors``: a pickle is never unpickled) and no
repository code runs (``trust_remote_code=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.errors import InferenceError
from gpupool_worker.engine.kernels import reference
from gpupool_worker.engine.model import Arrays, Model
from gpupool_worker.engine.models.st_config import FolderFacts, SentenceConfig
from gpupool_worker.engine.types import ModelMetadata, TensorSpec
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["TASKS", "TransformerTextModel"]

TASKS = ("sentence-embedding", "sequence-classification", "reranking")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}


class _Int8Linear(torch.nn.Module):
    """Weight-only int8 stand-in for ``nn.Linear`` (the same arithmetic as the encoder's kernels)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        q, scale = reference.quantize_int8(linear.weight.detach())
        self.qweight: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale)
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.int8_linear(x, self.qweight, self.scale, self.bias)


def _quantize(module: torch.nn.Module) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, _Int8Linear(child))
            count += 1
        else:
            count += _quantize(child)
    return count


def _utf8(inputs: Arrays, name: str) -> list[str]:
    out = []
    for i, element in enumerate(inputs[name].reshape(-1)):
        try:
            out.append(bytes(element).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InferenceError.invalid(f"tensor '{name}': element {i} is not valid UTF-8 "
                                         f"({exc.reason} at byte {exc.start})") from None
    return out


def _pool(hidden: torch.Tensor, mask: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    m = mask.to(hidden.dtype)[..., None]
    lengths = m.sum(1).clamp(min=1e-9)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "mean":
            parts.append((hidden * m).sum(1) / lengths)
        elif mode == "mean_sqrt_len_tokens":
            parts.append((hidden * m).sum(1) / lengths.sqrt())
        elif mode == "max":
            parts.append(hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1))
        elif mode == "weightedmean":
            w = m * torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)[None, :, None]
            parts.append((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9))
        else:  # lasttoken (right padding)
            last = mask.sum(1).long().clamp(min=1) - 1
            parts.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
    return torch.cat(parts, dim=-1)


class TransformerTextModel(Model):
    """One of :data:`TASKS` over a transformer folder; see the module docstring."""

    def __init__(self, name: str, version: str, directory: Path, *, task: str, facts: FolderFacts,
                 precision: str, device: torch.device, max_batch_size: int, max_sequence_length: int) -> None:
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        what = f"model {name}"
        self.task, self.device, self.precision = task, device, precision
        self.facts = facts
        self.sentence: SentenceConfig | None = facts.sentence if task == "sentence-embedding" else None
        head = AutoModel if task == "sentence-embedding" else AutoModelForSequenceClassification
        try:
            self.net = head.from_pretrained(str(directory), dtype=_DTYPES[precision], use_safetensors=True,
                                            trust_remote_code=False, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True,
                                                           trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: transformers cannot load {directory} as a "
                              f"{task} model: {' '.join(str(exc).split())[:300]}") from None
        if precision == "int8":
            _quantize(self.net)
        self.net.to(device).eval()
        limit = min(p for p in (max_sequence_length, facts.max_positions,
                                self.sentence.max_seq_length if self.sentence else None,
                                getattr(self.tokenizer, "model_max_length", None)) if p)
        self.max_tokens = int(limit)
        self.dense = self._dense(directory) if self.sentence else []
        super().__init__(ModelMetadata(name=name, versions=(version,), platform=f"transformers_{task}",
                                       inputs=self._inputs(), outputs=self._outputs(), max_batch_size=max_batch_size))

    # -- metadata ------------------------------------------------------------------------------
    def _inputs(self) -> tuple[TensorSpec, ...]:
        if self.task == "reranking":
            return (TensorSpec("query", DataType.BYTES, (-1,)), TensorSpec("document", DataType.BYTES, (-1,)))
        return (TensorSpec("text", DataType.BYTES, (-1,)),)

    def _outputs(self) -> tuple[TensorSpec, ...]:
        if self.task == "sentence-embedding":
            return (TensorSpec("embedding", DataType.FP32, (-1, self.embedding_dim)),)
        if self.task == "reranking":
            return (TensorSpec("score", DataType.FP32, (-1,)), TensorSpec("logit", DataType.FP32, (-1,)))
        n = int(self.net.config.num_labels)
        return (TensorSpec("logits", DataType.FP32, (-1, n)), TensorSpec("probabilities", DataType.FP32, (-1, n)),
                TensorSpec("label", DataType.BYTES, (-1,)))

    @property
    def embedding_dim(self) -> int:
        if self.dense:
            return int(self.dense[-1][0].out_features)
        assert self.sentence is not None or self.task == "sentence-embedding"
        modes = self.sentence.pooling if self.sentence else ("mean",)
        return int(self.net.config.hidden_size) * len(modes)

    def _dense(self, directory: Path) -> list[tuple[torch.nn.Linear, torch.nn.Module]]:
        from safetensors.torch import load_file

        assert self.sentence is not None
        layers = []
        for d in self.sentence.dense:
            weights = directory / d.path / "model.safetensors"
            if not weights.is_file():
                raise SourceError(Reason.FORMAT_MISMATCH, f"{d.path}: a Dense module needs model.safetensors "
                                  "(pickled pytorch_model.bin weights are not loaded)")
            tensors = load_file(str(weights))
            linear = torch.nn.Linear(d.in_features, d.out_features, bias=d.bias)
            linear.load_state_dict({k.removeprefix("linear."): v for k, v in tensors.items()})
            act = getattr(torch.nn, d.activation, None)
            if act is None:
                raise SourceError(Reason.FORMAT_MISMATCH, f"{d.path}: activation {d.activation} is unknown")
            layers.append((linear.to(self.device, _DTYPES[self.precision]).eval(), act()))
        return layers

    # -- the three phases ----------------------------------------------------------------------
    def check(self, inputs: Arrays) -> None:
        for spec in self.metadata.inputs:
            _utf8(inputs, spec.name)

    def prepare(self, inputs: Arrays) -> dict[str, torch.Tensor]:
        if self.task == "reranking":
            batch = self.tokenizer(_utf8(inputs, "query"), _utf8(inputs, "document"), padding=True,
                                   truncation=True, max_length=self.max_tokens, return_tensors="pt")
        else:
            batch = self.tokenizer(_utf8(inputs, "text"), padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def forward(self, prepared: Any) -> torch.Tensor:
        with torch.inference_mode():
            out = self.net(**prepared)
            if self.task == "sentence-embedding":
                modes = self.sentence.pooling if self.sentence else ("mean",)
                result = _pool(out.last_hidden_state, prepared["attention_mask"], modes)
                for linear, act in self.dense:
                    result = act(linear(result))
                if self.sentence is not None and self.sentence.normalize:
                    result = torch.nn.functional.normalize(result.float(), p=2.0, dim=-1)
            else:
                result = out.logits
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return result.float()

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        values = raw.cpu().numpy().astype(np.float32, copy=False)
        if self.task == "sentence-embedding":
            return {"embedding": values}
        if self.task == "reranking":
            logit = values[:, 0]
            return {"score": self._activation(logit), "logit": logit}
        shifted = values - values.max(axis=1, keepdims=True)
        probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        labels = self.net.config.id2label
        top = values.argmax(axis=1)
        return {"logits": values, "probabilities": probabilities.astype(np.float32),
                "label": np.array([str(labels.get(int(i), i)).encode() for i in top], dtype=object)}

    def _activation(self, logit: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        st = getattr(self.net.config, "sentence_transformers", None) or {}
        name = str(st.get("activation_fn", "Sigmoid")).rsplit(".", 1)[-1]
        if name == "Identity":
            return logit
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    def warmup(self) -> None:
        sample = np.array([b"warm up", b"a second, somewhat longer sentence"], dtype=object)
        rows = max(1, min(2, self.max_batch_size or 2))
        inputs = {spec.name: sample[:rows] for spec in self.metadata.inputs}
        self.execute(inputs)

    def describe(self) -> dict[str, str]:
        facts = {"engine": "transformers", "task": self.task, "precision": self.precision, "device": str(self.device)}
        if self.sentence is not None:
            facts["pooling"] = "+".join(self.sentence.pooling) + (", normalized" if self.sentence.normalize else "")
        return facts

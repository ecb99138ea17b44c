"""The schema of a model repository's ``model.json`` (also what a fetched source resolves to)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpupool_worker.engine.batcher import BatchPolicy
from gpupool_worker.engine.datatypes import DataType

__all__ = ["KINDS", "ModelConfig", "TensorConfig"]

KINDS = ("sentence-embedding", "torchscript", "torch-export", "transformers", "onnx")


class TensorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    datatype: DataType
    shape: list[int]


class ModelConfig(BaseModel):
    """``kind`` says which engine loads the model: ``sentence-embedding`` (gpupool's BERT encoder:
    eager, torch.compile or Triton kernels), ``transformers`` (any Hugging Face text model, with
    ``task``), ``onnx`` (ONNX Runtime, with ``task``), ``torchscript`` and ``torch-export``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sentence-embedding", "torchscript", "torch-export", "transformers", "onnx"]
    version: str = "1"
    task: Literal["sentence-embedding", "sequence-classification", "reranking", "image-classification",
                  "tensors"] | None = None
    file: str | None = None
    """The model file in the directory (model.onnx, model.pt, model.pt2) when not the default."""
    max_batch_size: Annotated[int, Field(ge=0)] = 32
    max_queue_delay_us: Annotated[int, Field(ge=0)] = 2_000
    max_queue_size: Annotated[int, Field(ge=1)] = 1_024
    inline_below_us: Annotated[int, Field(ge=0)] = 200
    batch_token_budget: Annotated[int, Field(ge=1)] = 8_192
    """Text models: padded tokens (rows x longest row) one batch may hold."""
    request_token_budget: Annotated[int, Field(ge=1)] = 1_024
    """Text models: a request of more padded tokens is split into chunks that take turns with
    other requests."""
    preempt_token_budget: Annotated[int, Field(ge=0)] = 0
    """Text models: a chunked request's next chunk while other requests wait (0: the model's
    longest row), never more than request_token_budget."""
    engine: Literal["auto", "eager", "compile", "triton", "onnx"] | None = None
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8", "fp8"] | None = None
    cuda_graphs: bool | None = None
    """Replay CUDA graphs for small batches (eager and triton engines, CUDA only); None: the
    worker default (on)."""
    weights: str = "weights"
    max_sequence_length: Annotated[int, Field(ge=1)] = 256
    normalize: bool = True
    inputs: list[TensorConfig] = []
    outputs: list[TensorConfig] = []

    @property
    def policy(self) -> BatchPolicy:
        return BatchPolicy(self.max_batch_size, self.max_queue_delay_us, self.max_queue_size,
                           self.inline_below_us, self.batch_token_budget, self.request_token_budget,
                           self.preempt_token_budget)

"""What a model is and what serves it: its task, its declared tensors, and the runtime its pods run.

Most models are served by gpupool's own worker (``runtime.type: gpupool``, the default), which
fetches the source, loads the format and serves the KServe v2 protocol. Models this worker should
not pretend to run (a 70B chat LLM) name an LLM runtime instead: ``vllm`` or ``triton`` launch
those servers' images with the right GPUs, or ``custom`` runs any image with its command and port.
The operator then reads that runtime's own queue signal (``vllm:num_requests_waiting``, Triton's
``nv_inference_pending_request_count``, or ``runtime.queueMetric``) for scaling and cost.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from ._base import ApiModel, CelRule, schema_extra

__all__ = ["EnvVar", "ModelTask", "ModelTensors", "RuntimeSpec", "RuntimeType", "TensorDatatype",
           "TensorDeclaration"]

IMAGE_PATTERN = r"^[a-z0-9]+([._/:@-][A-Za-z0-9_.-]+)*$"
PROMETHEUS_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"


class ModelTask(StrEnum):
    """What the model does, which decides its request and response tensors."""

    AUTO = "Auto"
    SENTENCE_EMBEDDING = "SentenceEmbedding"
    SEQUENCE_CLASSIFICATION = "SequenceClassification"
    RERANKING = "Reranking"
    IMAGE_CLASSIFICATION = "ImageClassification"
    TENSORS = "Tensors"
    TEXT_GENERATION = "TextGeneration"


class RuntimeType(StrEnum):
    """Which server the model's pods run."""

    GPUPOOL = "gpupool"
    VLLM = "vllm"
    TRITON = "triton"
    CUSTOM = "custom"


class TensorDatatype(StrEnum):
    """A KServe v2 tensor datatype."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


class TensorDeclaration(ApiModel):
    """One input or output tensor of a tensor program."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$", max_length=128)]
    """Tensor name as clients send it (and, for inputs, the position the program takes it in)."""
    datatype: TensorDatatype
    """KServe v2 datatype, e.g. FP32, INT64, BYTES."""
    shape: list[Annotated[int, Field(ge=-1)]] = Field(max_length=8)
    """Dimensions; -1 is variable. The first is the batch (-1) when the model batches."""


class ModelTensors(ApiModel):
    """The tensors of a TorchScript archive (which carries no types or shapes), or names to give a
    torch.export program's tensors (checked against the program's own signature)."""

    inputs: list[TensorDeclaration] = Field(min_length=1, max_length=32)
    """Input tensors, in the order the program takes them."""
    outputs: list[TensorDeclaration] = Field(min_length=1, max_length=32)
    """Output tensors, in the order the program returns them."""


class EnvVar(ApiModel):
    """An environment variable for a custom runtime's container."""

    name: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=128)]
    """Variable name."""
    value: Annotated[str, StringConstraints(max_length=4096)] = ""
    """Variable value."""


_RUNTIME_RULES = (
    CelRule("self.type != 'custom' || (has(self.image) && has(self.port))",
            "a custom runtime needs image and port", ".image"),
    CelRule("self.type == 'custom' || !has(self.command)",
            "command is only for a custom runtime (vllm, triton and gpupool run their own)", ".command"),
)


class RuntimeSpec(ApiModel):
    """The server a model's replica pods run, and where the operator reads its queue depth."""

    model_config = ConfigDict(json_schema_extra=schema_extra(*_RUNTIME_RULES))

    type: RuntimeType = RuntimeType.GPUPOOL
    """gpupool (the gpupool worker, default), vllm (vLLM's OpenAI-compatible server), triton (NVIDIA
    Triton Inference Server over a model repository) or custom (any image)."""
    image: Annotated[str, StringConstraints(pattern=IMAGE_PATTERN, max_length=512)] | None = None
    """Container image; vllm and triton default to the versions the operator pins."""
    command: list[Annotated[str, StringConstraints(max_length=1024)]] | None = Field(default=None, max_length=64)
    """Entrypoint of a custom runtime (the image's own when unset)."""
    args: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(default_factory=list, max_length=128)
    """Extra arguments, appended to those the operator sets (vllm: after --model and
    --tensor-parallel-size; triton: after --model-repository)."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Port the server answers on (vllm 8000, triton 8001 gRPC; required for custom)."""
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """Port of the Prometheus endpoint (vllm: port, triton 8002, custom: port)."""
    queue_metric: Annotated[str, StringConstraints(pattern=PROMETHEUS_NAME, max_length=256)] | None = None
    """Prometheus metric whose value is the number of requests waiting, read for scaling and cost
    (vllm: vllm:num_requests_waiting, triton: nv_inference_pending_request_count)."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment of a custom or vllm/triton runtime's container."""

    @model_validator(mode="after")
    def _custom(self) -> RuntimeSpec:
        if self.type is RuntimeType.CUSTOM and (self.image is None or self.port is None):
            raise ValueError("image: a custom runtime needs image and port")
        if self.type is not RuntimeType.CUSTOM and self.command is not None:
            raise ValueError("command: command is only for a custom runtime (vllm, triton and gpupool run their own)")
        return self

"""Which precision a model format's engine runs at: applied, or refused with the reason.

A purely computational module. Every engine states what it can do at each precision on each
device; asking for something else is a PrecisionUnsupported error naming what would work, never a
silent fall back to fp32. ``auto`` picks the engine's best default for the device.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["ENGINE_PRECISIONS", "Choice", "choose_precision"]


@dataclass(frozen=True, slots=True)
class Choice:
    precision: str
    how: str
    """How the engine applies it (for the log and the model's description)."""


_WEIGHT_ONLY = "weight-only int8 Linear layers (per-output-channel scales), activations float"
# engine -> device type -> precision -> how it is applied
ENGINE_PRECISIONS: dict[str, dict[str, dict[str, str]]] = {
    "transformers": {
        "cpu": {"fp32": "as trained", "bf16": "weights and activations cast to bfloat16",
                "int8": _WEIGHT_ONLY},
        "cuda": {"fp32": "as trained", "fp16": "weights and activations cast to float16",
                 "bf16": "weights and activations cast to bfloat16", "int8": _WEIGHT_ONLY},
    },
    "onnxruntime": {
        "cpu": {"fp32": "the graph as exported",
                "int8": "dynamic int8 quantization of MatMul/Gemm weights (onnxruntime.quantization)"},
        "cuda": {"fp32": "the graph as exported",
                 "fp16": "the graph converted to float16, inputs and outputs kept float32"},
    },
    "torch-program": {
        "cpu": {"fp32": "as exported", "bf16": "parameters cast to bfloat16, float inputs cast in and out"},
        "cuda": {"fp32": "as exported", "fp16": "parameters cast to float16, float inputs cast in and out",
                 "bf16": "parameters cast to bfloat16, float inputs cast in and out"},
    },
}
_AUTO = {("transformers", "cuda"): "fp16", ("onnxruntime", "cuda"): "fp32"}


def choose_precision(engine: str, requested: str, *, device_type: str,
                     capability: tuple[int, int] | None = None) -> Choice:
    """The precision ``engine`` runs at for ``requested`` on ``device_type``, or SourceError.

    ``capability`` (CUDA compute capability) gates bf16, which needs 8.0 (Ampere) or newer.
    """
    table = ENGINE_PRECISIONS[engine][device_type]
    precision = requested
    if requested in ("", "auto"):
        precision = _AUTO.get((engine, device_type), "fp32")
        if precision == "fp16" and capability is not None and capability >= (8, 0):
            precision = "bf16"
    how = table.get(precision)
    if how is None:
        offered = ", ".join(table)
        raise SourceError(Reason.PRECISION_UNSUPPORTED, f"precision {precision} is not available with the "
                          f"{engine} engine on {device_type.upper()} (available there: {offered})")
    if precision == "bf16" and device_type == "cuda" and capability is not None and capability < (8, 0):
        raise SourceError(Reason.PRECISION_UNSUPPORTED, f"precision bf16 needs compute capability >= 8.0, this GPU "
                          f"has {capability[0]}.{capability[1]}; use fp16")
    return Choice(precision, how)

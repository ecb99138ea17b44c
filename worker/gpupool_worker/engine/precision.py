"""Which engine and precision a model runs with: chosen by configuration and by the hardware.

A purely computational module over what is passed in (device kind, compute capability, whether the
Triton kernels can run); the runtime probes the hardware and calls :func:`resolve`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only where a torch engine asks for its dtype: a CPU-only worker has none
    import torch

__all__ = ["EngineKind", "Precision", "Resolved", "resolve"]


class EngineKind(enum.Enum):
    EAGER = "eager"
    COMPILE = "compile"
    TRITON = "triton"
    ONNX = "onnx"  # ONNX Runtime on the CPU (sentence-embedding encoders: engine.models.ort_encoder)


class Precision(enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"  # weight-only INT8; activations fp16 on a GPU, fp32 on a CPU

    def activation_dtype(self, device_type: str) -> torch.dtype:
        import torch

        if self is Precision.FP16:
            return torch.float16
        if self is Precision.BF16:
            return torch.bfloat16
        if self is Precision.INT8 and device_type == "cuda":
            return torch.float16
        return torch.float32


@dataclass(frozen=True, slots=True)
class Resolved:
    engine: EngineKind
    precision: Precision
    reason: str


def resolve(
    engine: str, precision: str, *, device_type: str, capability: tuple[int, int] | None,
    triton_ok: bool, triton_reason: str, onnx_ok: bool = False,
    cpu_bf16: tuple[bool, str] = (False, "the CPU's bf16 support is unknown"),
) -> Resolved:
    """Pick the engine and precision, or raise ValueError naming the setting that cannot be met.

    ``auto`` engine: Triton kernels on a GPU that runs them, else torch.compile on a GPU; on a CPU
    ONNX Runtime where the model can run on it (``onnx_ok``), else eager.
    ``auto`` precision: bf16 on compute capability >= 8.0, fp16 on older GPUs, fp32 on a CPU.
    bf16 on a CPU only where it computes bf16 natively (``cpu_bf16``: AMX or AVX512-BF16) and on
    a torch engine; ONNX Runtime runs fp32 or int8 on the CPU, fp32 on a GPU (``onnx_ok`` there: its
    CUDAExecutionProvider is installed).
    """
    try:
        wanted_engine = None if engine == "auto" else EngineKind(engine)
    except ValueError:
        raise ValueError(f"engine '{engine}' is not one of auto, eager, compile, triton, onnx") from None
    try:
        wanted_precision = None if precision == "auto" else Precision(precision)
    except ValueError:
        raise ValueError(f"precision '{precision}' is not one of auto, fp32, fp16, bf16, int8") from None

    reasons: list[str] = []
    if wanted_engine is None:
        if device_type == "cuda" and triton_ok:
            chosen_engine = EngineKind.TRITON
            reasons.append(f"engine auto -> triton ({triton_reason})")
        elif device_type == "cuda":
            chosen_engine = EngineKind.COMPILE
            reasons.append(f"engine auto -> compile (triton unusable: {triton_reason})")
        elif onnx_ok and wanted_precision in (None, Precision.FP32, Precision.INT8):
            chosen_engine = EngineKind.ONNX
            reasons.append("engine auto -> onnx (CPU)")
        else:
            chosen_engine = EngineKind.EAGER
            reasons.append("engine auto -> eager (CPU)")
    else:
        chosen_engine = wanted_engine
        if chosen_engine is EngineKind.TRITON and not triton_ok:
            raise ValueError(f"engine 'triton' cannot run here: {triton_reason}")
        if chosen_engine is EngineKind.ONNX and not onnx_ok:
            raise ValueError("engine 'onnx' on a GPU needs ONNX Runtime's CUDAExecutionProvider (install "
                             "onnxruntime-gpu)" if device_type == "cuda" else "engine 'onnx' cannot run this model")

    if wanted_precision is None:
        if chosen_engine is EngineKind.ONNX:
            chosen_precision = Precision.FP32  # the graph as exported, on a CPU or a GPU
        elif device_type == "cuda" and capability is not None and capability >= (8, 0):
            chosen_precision = Precision.BF16
        elif device_type == "cuda":
            chosen_precision = Precision.FP16
        else:
            chosen_precision = Precision.FP32
        reasons.append(f"precision auto -> {chosen_precision.value}")
    else:
        chosen_precision = wanted_precision
        if chosen_precision is Precision.BF16 and device_type == "cpu":
            if chosen_engine is EngineKind.ONNX:
                raise ValueError("precision 'bf16' on a CPU is the torch engines' (engine eager), "
                                 "ONNX Runtime runs fp32 or int8")
            if not cpu_bf16[0]:
                raise ValueError(f"precision 'bf16' is refused on this CPU: {cpu_bf16[1]}")
        if (chosen_precision is Precision.BF16 and device_type == "cuda" and capability is not None
                and capability < (8, 0)):
            raise ValueError(
                f"precision 'bf16' needs compute capability >= 8.0, this GPU has "
                f"{capability[0]}.{capability[1]}")
    return Resolved(chosen_engine, chosen_precision, "; ".join(reasons) or "as configured")

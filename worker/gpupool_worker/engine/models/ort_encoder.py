"""Sentence embeddings on ONNX Runtime: the CPU engine for BERT-family encoders (``engine: onnx``,
what ``auto`` picks on a CPU).

The encoder (the same :class:`~gpupool_worker.engine.models.encoder.Encoder` the torch engines
run, pooling and normalization included) is exported once to ONNX and cached on disk, keyed by the
weights and the exporter's inputs (``GPUPOOL_ONNX_CACHE``, default ``$TMPDIR/gpupool-onnx``); a
model directory that already holds ``model.onnx`` beside its weights is used as is. ONNX Runtime
runs it with every graph optimization on (``ORT_ENABLE_ALL``: attention, GELU and LayerNorm
fusions), one inter-op thread and as many intra-op threads as the worker's CPU allowance
(``GPUPOOL_TORCH_THREADS``, else the container's CPU limit, else the CPUs this process may use).

Precisions: fp32 as exported; int8 through ONNX Runtime's dynamic quantization, accepted only when
its embeddings stay within cosine 0.99 of fp32 on a calibration set (:func:`check_accuracy`),
else refused with the figure; anything else is refused with the reason (bf16 is the torch engine's,
on CPUs with AMX or AVX512-BF16: :func:`cpu_bf16_support`).

Tokenization, truncation and token batching are the torch model's (this class extends it): only
``prepare``/``forward``/``finish`` differ.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gpupool_worker.engine.model import Arrays
from gpupool_worker.engine.models.sentence import INPUT, OUTPUT, SentenceEmbeddingModel
from gpupool_worker.engine.precision import EngineKind, Precision
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["CALIBRATION", "MIN_INT8_COSINE", "OrtSentenceModel", "check_accuracy", "cpu_bf16_support",
           "cpu_threads"]

log = logging.getLogger(__name__)

MIN_INT8_COSINE = 0.99
_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_EXPORT_VERSION = "2"  # bump when the export changes, to leave old cached graphs behind

# Sentences of several lengths and topics: what the int8 guard measures on.
CALIBRATION = (
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "GPU slices cut the cost of inference.",
    "Kubernetes schedules pods onto nodes that have the requested resources.",
    "The quarterly report shows revenue growth in every region except the north-east.",
    "How do I reset my password if I no longer have access to my email account?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The committee postponed the vote until the budget figures were independently verified.",
    "Une phrase en français pour vérifier les mots hors vocabulaire.",
    "error: connection refused while dialing 10.0.0.12:8001 (retry 3 of 5)",
    "def embed(texts): return model.encode(texts, normalize_embeddings=True)",
    " ".join(["Long inputs are truncated to the model's maximum sequence length."] * 12),
    " ".join(["An embedding server batches requests of many lengths together."] * 6),
    "ok", "yes please", "Thanks!", "What time is it?",
)


def cpu_threads(configured: int = 0) -> int:
    """Intra-op threads: ``configured`` if set, else the cgroup CPU limit (rounded up), else the
    CPUs this process may run on."""
    if configured > 0:
        return configured
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def cpu_bf16_support(flags: Sequence[str] | None = None) -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16), and why (not). ``flags``:
    the CPU's feature flags (default: read from /proc/cpuinfo)."""
    if flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False, "cannot read /proc/cpuinfo to check for AMX-BF16 or AVX512-BF16"
        line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        flags = line.split(":", 1)[-1].split()
    have = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    if have:
        return True, f"the CPU has {' and '.join(have)}"
    return False, ("this CPU has neither AMX-BF16 nor AVX512-BF16: bf16 would be emulated, slower than fp32; "
                   "use fp32 (or int8 where it passes its accuracy guard)")


def check_accuracy(reference: npt.NDArray[Any], candidate: npt.NDArray[Any], *, what: str,
                   min_cosine: float = MIN_INT8_COSINE) -> float:
    """The lowest cosine similarity between matching rows; raises SourceError (PrecisionUnsupported)
    naming it when it is under ``min_cosine``."""
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True).clip(1e-12)
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True).clip(1e-12)
    worst = float((ref * cand).sum(axis=1).min())
    if worst < min_cosine:
        raise SourceError(Reason.PRECISION_UNSUPPORTED, (
            f"{what}: int8 is refused, its embeddings reach only cosine {worst:.3f} to fp32 (lowest of "
            f"{len(ref)} calibration sentences; at least {min_cosine} is required); serve fp32"))
    return worst


def _cache_dir() -> Path:
    return Path(os.environ.get("GPUPOOL_ONNX_CACHE") or Path(tempfile.gettempdir()) / "gpupool-onnx")


def _weights_key(weights: Path, max_tokens: int, normalize: bool) -> str:
    h = hashlib.sha256(f"{_EXPORT_VERSION}:{max_tokens}:{normalize}:{torch.__version__}".encode())
    for name in ("config.json", "model.safetensors"):
        path = weights / name
        stat = path.stat()
        h.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _constants_to_initializers(model: Any) -> None:
    """Turn the graph's large Constant nodes (the tracer writes the encoder's weights as constants)
    into initializers, where ONNX Runtime's quantizer and weight pre-packing look for weights."""
    import onnx

    graph = model.graph
    keep = []
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None) if node.op_type == "Constant" else None
        if value is not None and value.t is not None and int(np.prod(value.t.dims or [1])) >= 64:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


class _Wrapped(torch.nn.Module):
    def __init__(self, forward: Any) -> None:
        super().__init__()
        self._f = forward

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        return self._f(input_ids, attention_mask, token_type_ids)  # type: ignore[no-any-return]


class OrtSentenceModel(SentenceEmbeddingModel):
    def __init__(self, name: str, version: str, weights: Path, *, precision: Precision, max_batch_size: int,
                 max_sequence_length: int = 256, normalize: bool = True, threads: int = 0) -> None:
        if precision not in (Precision.FP32, Precision.INT8):
            why = cpu_bf16_support()[1] if precision is Precision.BF16 else "ONNX Runtime's CPU kernels"
            raise SourceError(Reason.PRECISION_UNSUPPORTED, (
                f"model {name}: engine onnx runs fp32 or int8, not {precision.value} ({why}); for bf16 on a "
                f"CPU with AMX or AVX512-BF16 use engine eager"))
        super().__init__(name, version, weights, engine=EngineKind.EAGER, precision=Precision.FP32,
                         device=torch.device("cpu"), max_batch_size=max_batch_size,
                         max_sequence_length=max_sequence_length, normalize=normalize, cuda_graphs=False)
        import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

        self.ort_precision = precision
        self.threads = cpu_threads(threads)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._options = options
        graph = self._graph(weights, normalize)
        self.graph_path = graph if isinstance(graph, Path) else None
        self.session = ort.InferenceSession(str(graph) if isinstance(graph, Path) else graph, options,
                                            providers=["CPUExecutionProvider"])
        self.int8_cosine: float | None = None
        if precision is Precision.INT8:
            self.session, self.int8_cosine = self._quantized(graph)
        self.engine_name = "onnx"
        del self.encoder  # the torch weights were only needed to export (and, for int8, to compare)

    # -- loading ------------------------------------------------------------------------------
    def _graph(self, weights: Path, normalize: bool) -> Path | bytes:
        """The graph file (shipped, or exported into the cache), or, where the cache cannot be
        written (a read-only root filesystem without GPUPOOL_ONNX_CACHE on a volume), the exported
        graph's bytes."""
        shipped = weights / "model.onnx"
        if shipped.is_file():
            return shipped
        path = _cache_dir() / f"encoder-{_weights_key(weights, self.max_tokens, normalize)}.onnx"
        if path.is_file():
            return path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(self._export())
        except OSError as exc:
            log.warning("model %s: cannot write the ONNX cache %s (%s): exporting in memory on every start; "
                        "set GPUPOOL_ONNX_CACHE to a writable volume", self.name, path.parent, exc)
            return self._export()
        partial.replace(path)  # atomic: a concurrent worker sees the whole graph or none
        log.info("model %s: exported the encoder to %s", self.name, path)
        return path

    def _export(self) -> bytes:
        import io

        import onnx

        sample = self.tokenize({INPUT: np.array([b"export the encoder", b"to onnx, once"], dtype=object)})
        args = tuple(torch.from_numpy(sample.arrays[k]) for k in _NAMES)
        dynamic = {k: {0: "batch", 1: "tokens"} for k in _NAMES}
        buffer = io.BytesIO()
        # the TorchScript-based exporter (deprecated in favour of torch.export's) traces the
        # encoder, a plain callable over constant weights, in seconds and with no extra package
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Wrapped(self.encoder.forward), args, buffer,  # type: ignore[arg-type]
                              input_names=list(_NAMES),
                              output_names=[OUTPUT], dynamic_axes={**dynamic, OUTPUT: {0: "batch"}},
                              opset_version=17, dynamo=False)
        model = onnx.load_from_string(buffer.getvalue())
        _constants_to_initializers(model)
        return bytes(model.SerializeToString())

    def _quantized(self, graph: Path | bytes) -> tuple[Any, float]:
        import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]
        from onnxruntime.quantization import (  # type: ignore[import-untyped, unused-ignore]
            QuantType,
            quantize_dynamic,
        )

        if not isinstance(graph, Path):
            raise SourceError(Reason.PRECISION_UNSUPPORTED, (
                f"model {self.name}: int8 is quantized and checked against fp32 in GPUPOOL_ONNX_CACHE, "
                f"which cannot be written here; set it to a writable volume or serve fp32"))
        path = graph.with_name(graph.stem + ".int8.onnx")
        if not path.is_file():
            partial = path.with_suffix(f".{os.getpid()}.partial")
            quantize_dynamic(str(graph), str(partial), weight_type=QuantType.QInt8)
            partial.replace(path)
        quantized = ort.InferenceSession(str(path), self._options, providers=["CPUExecutionProvider"])
        sample = self.tokenize({INPUT: np.array([t.encode() for t in CALIBRATION], dtype=object)}).arrays
        feed = {k: sample[k] for k in _NAMES}
        reference = self.session.run(None, feed)[0]
        worst = check_accuracy(reference, quantized.run(None, feed)[0], what=f"model {self.name}")
        log.info("model %s: int8 accepted, cosine to fp32 >= %.4f on %d calibration sentences",
                 self.name, worst, len(CALIBRATION))
        return quantized, worst

    # -- execution ------------------------------------------------------------------------------
    def prepare(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:  # type: ignore[override]
        if INPUT in inputs:
            inputs = self.tokenize(inputs).arrays
        return {k: np.ascontiguousarray(inputs[k]) for k in _NAMES}

    def forward(self, prepared: Any) -> Any:
        return self.session.run(None, prepared)[0]

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        return {OUTPUT: np.asarray(raw, dtype=np.float32)}

    def warmup(self) -> None:
        sample = np.array([b"warm up the encoder", b"a second, longer sentence to warm up with"], dtype=object)
        for rows in sorted({1, max(1, min(2, self.max_batch_size or 1))}):
            self.execute({INPUT: sample[:rows]})

    def describe(self) -> dict[str, str]:
        facts = {"engine": "onnx", "precision": self.ort_precision.value, "device": "cpu",
                 "threads": str(self.threads)}
        if self.int8_cosine is not None:
            facts["int8_cosine"] = f"{self.int8_cosine:.4f}"
        return facts

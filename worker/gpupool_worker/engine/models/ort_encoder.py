"""Sentence embeddings on ONNX Runtime: the CPU engine for BERT-family encoders (``engine: onnx``,
what ``auto`` picks on a CPU). It needs no torch: a worker installed with ``gpupool[worker-cpu]``
(the default, CPU-only worker image) serves encoders this way and nothing else imports torch.

The graph, first found wins: ``model.onnx`` or ``onnx/model.onnx`` beside the tokenizer (a folder
written by :mod:`.onnx_export`, or a Hugging Face repository's ONNX export, as many
sentence-transformers repositories ship), else one exported earlier into the cache
(``GPUPOOL_ONNX_CACHE``, default ``$TMPDIR/gpupool-onnx``, keyed by the weights and the exporter's
version), else exported now from the torch weights (:func:`.onnx_export.export_encoder`, the same
:class:`~gpupool_worker.engine.models.encoder.Encoder` the torch engines run, mean pooling
included), which needs torch: without it the model is refused saying so. A graph whose output is
already pooled (``[batch, hidden]``) is taken as is; one that returns token states
(``[batch, tokens, hidden]``, ``last_hidden_state``) is pooled here the way its ``modules.json``
says, as sentence-transformers pools: mean over the attention mask (MiniLM, e5), the first token
(``cls``: the bge family) or the masked maximum (other poolings and dense layers are refused). L2
normalization (``normalize``) is applied here too. ONNX Runtime runs the graph with every graph
optimization on (``ORT_ENABLE_ALL``: attention, GELU and LayerNorm fusions), one inter-op thread
and as many intra-op threads as the worker's CPU allowance (``GPUPOOL_TORCH_THREADS``, else the
container's CPU limit, else the CPUs this process may use), and with intra-op spinning off
(:func:`session_options`; ``GPUPOOL_ORT_SPINNING=1`` turns it back on).

On a GPU (``device`` cuda) the session runs on ONNX Runtime's CUDAExecutionProvider (the
``onnxruntime-gpu`` wheel; without it the model is refused saying so) with IO binding: the token
arrays are copied to the device once per batch and the output is allocated there by ONNX Runtime
and copied back once, without the per-run staging of ``session.run``; fp32 only there (the graph
as exported). Its speed on a GPU has not been measured.

Precisions: fp32 as exported; int8 through ONNX Runtime's dynamic quantization, accepted only when
its embeddings stay within cosine 0.99 of fp32 on a calibration set (:func:`check_accuracy`),
else refused with the figure; anything else is refused with the reason (bf16 is the torch engine's,
on CPUs with AMX or AVX512-BF16: :func:`cpu_bf16_support`).

Tokenization, truncation and token batching are the torch model's (:mod:`.tokens`): only
``prepare``/``forward``/``finish`` differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_worker.engine.device import TORCH_FREE_HINT, Device, torch_available
from gpupool_worker.engine.model import Arrays
from gpupool_worker.engine.models.tokens import INPUT, OUTPUT, TOKEN_ARRAYS, TextEncoder, embedding_metadata
from gpupool_worker.engine.precision import EngineKind, Precision
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["CALIBRATION", "CUDA_PROVIDER", "EXPORT_VERSION", "MIN_INT8_COSINE", "POOLINGS", "SHIPPED_GRAPHS",
           "SPINNING_ENTRY", "OrtSentenceModel", "check_accuracy", "cpu_bf16_support", "cpu_threads", "cuda_provider",
           "session_options"]

log = logging.getLogger(__name__)

MIN_INT8_COSINE = 0.99
EXPORT_VERSION = "3"  # bump when the export changes, to leave old cached graphs behind
SHIPPED_GRAPHS = ("model.onnx", "onnx/model.onnx")
_POOLED_NAMES = ("embedding", "sentence_embedding", "pooler_output_mean")
SPINNING_ENTRY = "session.intra_op.allow_spinning"
CUDA_PROVIDER = "CUDAExecutionProvider"
#: how token states become one vector, as sentence-transformers' Pooling module names them
POOLINGS = ("mean", "cls", "max")

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


def session_options(threads: int, *, spinning: bool = False) -> Any:
    """ONNX Runtime session options for a worker's CPU session: ``threads`` intra-op threads (see
    :func:`cpu_threads`), one inter-op thread, and intra-op spinning off unless ``spinning``
    (``GPUPOOL_ORT_SPINNING=1``).

    Why spinning is off: by default ONNX Runtime's idle intra-op threads busy-wait for the next
    piece of work. In a worker the cores are shared with the asyncio event loop (gRPC, parsing,
    tokenizing), the batcher that forms the next batch and, on a small machine, the clients: the
    spinning threads steal exactly the time those need between batches. With it off both the worker
    and PyTriton ran MiniLM faster and steadier on 2 cores (benchmarks/results/worker-engines.md);
    a worker with cores to spare may turn it back on."""
    import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry(SPINNING_ENTRY, "1" if spinning else "0")
    return options


def cuda_provider() -> tuple[bool, str]:
    """Whether ONNX Runtime here can run on a GPU (its CUDAExecutionProvider), and why not."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        return False, "onnxruntime is not installed"
    providers = list(ort.get_available_providers())
    if CUDA_PROVIDER in providers:
        return True, f"onnxruntime {ort.__version__} has {CUDA_PROVIDER}"
    return False, (f"onnxruntime {ort.__version__} here has only {', '.join(providers)}: install onnxruntime-gpu "
                   f"for {CUDA_PROVIDER}")


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


def _weights_key(weights: Path) -> str:
    """The export cache's key: the exporter's version and the weights' files (size and mtime).
    Torch's version is not in it, so a worker without torch finds a graph a torch worker exported
    into a shared cache."""
    h = hashlib.sha256(f"{EXPORT_VERSION}".encode())
    for name in ("config.json", "model.safetensors"):
        path = weights / name
        stat = path.stat()
        h.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:24]


def _max_positions(weights: Path) -> int:
    config = weights / "config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return 512


class OrtSentenceModel(TextEncoder):
    def __init__(self, name: str, version: str, weights: Path, *, precision: Precision, max_batch_size: int,
                 max_sequence_length: int = 256, normalize: bool = True, threads: int = 0,
                 spinning: bool = False, device: Device | None = None, io_binding: bool = False) -> None:
        device = device or Device("cpu")
        if device.type == "cuda" and precision is not Precision.FP32:
            raise SourceError(Reason.PRECISION_UNSUPPORTED, (
                f"model {name}: engine onnx on a GPU runs the graph as exported, fp32, not {precision.value}; "
                f"for fp16 or bf16 on a GPU serve SafeTensors weights with the torch engines"))
        if precision not in (Precision.FP32, Precision.INT8):
            why = cpu_bf16_support()[1] if precision is Precision.BF16 else "ONNX Runtime's CPU kernels"
            raise SourceError(Reason.PRECISION_UNSUPPORTED, (
                f"model {name}: engine onnx runs fp32 or int8, not {precision.value} ({why}); for bf16 on a "
                f"CPU with AMX or AVX512-BF16 use engine eager"))
        import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

        self._name = name
        self._load_tokenizer(weights, min(max_sequence_length, _max_positions(weights)))
        self.engine, self.precision, self.device = EngineKind.ONNX, precision, device
        self.ort_precision = precision
        self.normalize = normalize
        self.threads = cpu_threads(threads)
        options = session_options(self.threads, spinning=spinning)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._options = options
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            ok, why = cuda_provider()
            if not ok:
                raise SourceError(Reason.ENGINE_UNSUPPORTED, f"model {name}: engine onnx on a GPU: {why}")
            providers = [(CUDA_PROVIDER, {"device_id": device.index or 0}), "CPUExecutionProvider"]
        #: where outputs are bound (IO binding): the GPU's memory on CUDA; ``io_binding=True`` binds on
        #: the CPU too (the same code path, which the CPU tests run)
        self._bind_to = ("cuda", device.index or 0) if device.type == "cuda" else \
            (("cpu", 0) if io_binding else None)
        graph = self._graph(weights)
        self.graph_path = graph if isinstance(graph, Path) else None
        self.session = ort.InferenceSession(str(graph) if isinstance(graph, Path) else graph, options,
                                            providers=providers)
        self.pooling = "mean"  # of token states, unless the folder's modules.json says otherwise
        hidden = self._read_graph(weights)
        super().__init__(embedding_metadata(name, version, hidden, max_batch_size))
        self.int8_cosine: float | None = None
        if precision is Precision.INT8:
            self.session, self.int8_cosine = self._quantized(graph)
        self.engine_name = "onnx"

    # -- loading ------------------------------------------------------------------------------
    def _graph(self, weights: Path) -> Path | bytes:
        """The graph file (shipped, or exported into the cache), or, where the cache cannot be
        written (a read-only root filesystem without GPUPOOL_ONNX_CACHE on a volume), the exported
        graph's bytes."""
        for shipped in SHIPPED_GRAPHS:
            if (weights / shipped).is_file():
                return weights / shipped
        if not (weights / "model.safetensors").is_file():
            raise SourceError(Reason.FORMAT_MISMATCH, (
                f"model {self._name}: no ONNX graph ({' or '.join(SHIPPED_GRAPHS)}) and no model.safetensors to "
                f"export one from in {weights}"))
        path = _cache_dir() / f"encoder-{_weights_key(weights)}.onnx"
        if path.is_file():
            return path
        if not torch_available():
            raise SourceError(Reason.ENGINE_UNSUPPORTED, (
                f"model {self._name}: no ONNX graph in {weights} ({' or '.join(SHIPPED_GRAPHS)}) nor in the export "
                f"cache {path.parent}, and exporting one from model.safetensors needs torch, while "
                f"{TORCH_FREE_HINT}: ship the graph (python -m gpupool_worker.engine.models.onnx_export "
                f"WEIGHTS OUT, on a machine with torch)"))
        from gpupool_worker.engine.models.onnx_export import export_encoder

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(export_encoder(weights))
        except OSError as exc:
            log.warning("model %s: cannot write the ONNX cache %s (%s): exporting in memory on every start; "
                        "set GPUPOOL_ONNX_CACHE to a writable volume", self._name, path.parent, exc)
            return export_encoder(weights)
        partial.replace(path)  # atomic: a concurrent worker sees the whole graph or none
        log.info("model %s: exported the encoder to %s", self._name, path)
        return path

    def _read_graph(self, weights: Path) -> int:
        """Which output is the embedding, whether it still needs pooling, and its width."""
        names = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in names if n not in TOKEN_ARRAYS]
        if unknown:
            raise SourceError(Reason.FORMAT_MISMATCH, f"model {self._name}: the ONNX graph takes {unknown}, "
                              f"not only {list(TOKEN_ARRAYS)}: it is not a BERT-style text encoder")
        self.graph_inputs = tuple(names)
        outputs = self.session.get_outputs()
        chosen = next((o for o in outputs if o.name in _POOLED_NAMES), None) or \
            next((o for o in outputs if o.name == "last_hidden_state"), outputs[0])
        self.output_index = outputs.index(chosen)
        rank = len(chosen.shape)
        if rank not in (2, 3):
            raise SourceError(Reason.FORMAT_MISMATCH, f"model {self._name}: the graph's output {chosen.name} has "
                              f"shape {chosen.shape}, neither [batch, hidden] nor [batch, tokens, hidden]")
        self.pool_tokens = rank == 3
        if self.pool_tokens and (weights / "modules.json").is_file():
            from gpupool_worker.engine.models.st_config import read_folder

            st = read_folder(weights, f"model {self._name}").sentence
            if st is not None and (len(st.pooling) != 1 or st.pooling[0] not in POOLINGS or st.dense):
                raise SourceError(Reason.FORMAT_MISMATCH, (
                    f"model {self._name}: the graph returns token states and the model pools with "
                    f"{list(st.pooling)}{' and dense layers' if st.dense else ''}; the ONNX engine pools with one "
                    f"of {', '.join(POOLINGS)} and no dense layers: serve it with engine eager (torch)"))
            if st is not None:
                self.pooling = st.pooling[0]
        width = chosen.shape[-1]
        if isinstance(width, int) and width > 0:
            return width
        config = weights / "config.json"
        if config.is_file() and isinstance(json.loads(config.read_text()).get("hidden_size"), int):
            return int(json.loads(config.read_text())["hidden_size"])
        probe = self._run(self.prepare({INPUT: np.array([b"width"], dtype=object)}))
        return int(np.shape(probe)[-1])

    def _quantized(self, graph: Path | bytes) -> tuple[Any, float]:
        import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]
        from onnxruntime.quantization import (  # type: ignore[import-untyped, unused-ignore]
            QuantType,
            quantize_dynamic,
        )

        if not isinstance(graph, Path):
            raise SourceError(Reason.PRECISION_UNSUPPORTED, (
                f"model {self._name}: int8 is quantized and checked against fp32 in GPUPOOL_ONNX_CACHE, "
                f"which cannot be written here; set it to a writable volume or serve fp32"))
        # quantized into the cache (a shipped graph may sit on a read-only filesystem)
        path = _cache_dir() / f"encoder-{_file_key(graph)}.int8.onnx"
        if not path.is_file():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(f".{os.getpid()}.partial")
                quantize_dynamic(str(graph), str(partial), weight_type=QuantType.QInt8)
            except OSError:
                raise SourceError(Reason.PRECISION_UNSUPPORTED, (
                    f"model {self._name}: int8 is quantized and checked against fp32 in GPUPOOL_ONNX_CACHE "
                    f"({path.parent}), which cannot be written here; set it to a writable volume or serve "
                    f"fp32")) from None
            partial.replace(path)
        quantized = ort.InferenceSession(str(path), self._options, providers=["CPUExecutionProvider"])
        feed = self.prepare({INPUT: np.array([t.encode() for t in CALIBRATION], dtype=object)})
        reference = self._finish_raw(self._run(feed), feed)
        candidate = self._finish_raw(self._run(feed, quantized), feed)
        worst = check_accuracy(reference, candidate, what=f"model {self._name}")
        log.info("model %s: int8 accepted, cosine to fp32 >= %.4f on %d calibration sentences",
                 self._name, worst, len(CALIBRATION))
        return quantized, worst

    # -- execution ------------------------------------------------------------------------------
    def prepare(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        if INPUT in inputs:
            inputs = self.tokenize(inputs).arrays
        return {k: np.ascontiguousarray(inputs[k]) for k in self.graph_inputs} | \
            ({"attention_mask": np.ascontiguousarray(inputs["attention_mask"])} if self.pool_tokens else {})

    def _run(self, feed: dict[str, npt.NDArray[Any]], session: Any = None) -> Any:
        graph_feed = {k: feed[k] for k in self.graph_inputs}
        session = session or self.session
        if self._bind_to is None:
            return session.run(None, graph_feed)[self.output_index]
        return self._run_bound(session, graph_feed)

    def _run_bound(self, session: Any, feed: dict[str, npt.NDArray[Any]]) -> Any:
        """One run through IO binding: inputs copied to the bound device, the embedding output
        allocated there by ONNX Runtime (its shape varies with the batch), one copy back."""
        kind, index = self._bind_to or ("cpu", 0)
        binding = session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        wanted = session.get_outputs()[self.output_index].name
        binding.bind_output(wanted, kind, index)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def forward(self, prepared: Any) -> Any:
        return self._run(prepared), prepared.get("attention_mask")

    def _finish_raw(self, out: Any, feed: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        return self.finish((out, feed.get("attention_mask")))[OUTPUT]

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        out, mask = raw
        x = np.asarray(out, dtype=np.float32)
        if self.pool_tokens:  # over the real tokens, as sentence-transformers pools
            m = np.asarray(mask, dtype=np.float32)[..., None]
            if self.pooling == "cls":
                x = x[:, 0]
            elif self.pooling == "max":
                x = np.where(m > 0, x, np.float32(-1e9)).max(axis=1)
            else:
                x = (x * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        if self.normalize:
            x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
        return {OUTPUT: np.ascontiguousarray(x, dtype=np.float32)}

    def warmup(self) -> None:
        sample = np.array([b"warm up the encoder", b"a second, longer sentence to warm up with"], dtype=object)
        for rows in sorted({1, max(1, min(2, self.max_batch_size or 1))}):
            self.execute({INPUT: sample[:rows]})

    def describe(self) -> dict[str, str]:
        facts = {"engine": "onnx", "precision": self.ort_precision.value, "device": str(self.device),
                 "threads": str(self.threads), "pooling": self.pooling if self.pool_tokens else "in the graph"}
        if self._bind_to is not None:
            facts["io_binding"] = self._bind_to[0]
        if self.int8_cosine is not None:
            facts["int8_cosine"] = f"{self.int8_cosine:.4f}"
        return facts

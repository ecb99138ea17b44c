"""From a fetched model folder and the pool's format and task to the ``model.json`` that loads it.

This is where a format/task mismatch is caught, before any weights are read: a format whose
files are not there (format ONNX, no ``.onnx`` file), a task the format cannot serve (image
classification from a TorchScript archive), a task the model cannot do (reranking with a model
that has no single-score classification head), a TorchScript archive without declared tensors.
Each is one FormatMismatch naming the pool's setting and what the folder holds.

A BERT-family sentence encoder with mean pooling (all-MiniLM-L6-v2 and its kin) is served by
gpupool's own encoder (eager, torch.compile or Triton kernels); every other transformer folder by
``transformers``. An ONNX sentence encoder (format ONNX, task SentenceEmbedding, or Auto on a
sentence-transformers folder: a Hub repository's ``onnx/model.onnx`` beside its ``tokenizer.json``)
is served by ONNX Runtime (:mod:`.ort_encoder`) and needs no torch, which is what lets the
CPU-only worker image serve a Hub encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpupool_worker.engine.models.model_json import ModelConfig, TensorConfig
from gpupool_worker.engine.models.pool_model import PoolModel
from gpupool_worker.engine.models.st_config import read_folder
from gpupool_worker.sources import Fetched
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["FORMAT_TASKS", "resolve_config"]

FORMAT_TASKS = {
    "SafeTensors": ("sentence-embedding", "sequence-classification", "reranking"),
    "Builtin": ("sentence-embedding",),
    "ONNX": ("sentence-embedding", "image-classification", "tensors"),
    "TorchScript": ("tensors",),
    "TorchExport": ("tensors",),
}
_API_TASK = {"sentence-embedding": "SentenceEmbedding", "sequence-classification": "SequenceClassification",
             "reranking": "Reranking", "image-classification": "ImageClassification", "tensors": "Tensors",
             "text-generation": "TextGeneration"}
_SUFFIX = {"ONNX": ".onnx", "TorchScript": ".pt", "TorchExport": ".pt2"}


def _mismatch(model: PoolModel, why: str) -> SourceError:
    return SourceError(Reason.FORMAT_MISMATCH, f"{model.uri} (format {model.model_format}): {why}")


def _listing(directory: Path) -> str:
    names = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.is_file() and not p.name.startswith("."))
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") or "nothing"


def _model_file(model: PoolModel, fetched: Fetched) -> str:
    suffix = _SUFFIX[model.model_format]
    if fetched.main is not None:
        if fetched.main.suffix != suffix:
            raise _mismatch(model, f"{fetched.main.name} is not a {suffix} file")
        return fetched.main.name
    root = fetched.path
    for preferred in (f"model{suffix}", f"onnx/model{suffix}"):
        if (root / preferred).is_file():
            return preferred
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob(f"*{suffix}"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise _mismatch(model, f"no {suffix} file in the source (it holds: {_listing(root)})")
    raise _mismatch(model, f"several {suffix} files and none named model{suffix}: {', '.join(found)}")


def _declared(model: PoolModel, directory: Path) -> tuple[list[TensorConfig], list[TensorConfig]]:
    """Tensors from the pool (``tensors``), else from a model.json shipped with the files."""
    source: dict[str, Any] = dict(model.tensors)
    shipped = directory / "model.json"
    if not source and shipped.is_file():
        source = {k: v for k, v in json.loads(shipped.read_text()).items() if k in ("inputs", "outputs")}
    try:
        return ([TensorConfig.model_validate(t) for t in source.get("inputs", [])],
                [TensorConfig.model_validate(t) for t in source.get("outputs", [])])
    except ValueError as exc:
        raise _mismatch(model, f"declared tensors are invalid: {' '.join(str(exc).split())[:300]}") from None


def _check_task(model: PoolModel) -> None:
    if model.task == "text-generation":
        raise _mismatch(model, "task TextGeneration is served by an LLM runtime, not the gpupool worker: set "
                        "runtime.type vllm (or triton) on this model")
    allowed = FORMAT_TASKS[model.model_format]
    if model.task and model.task not in allowed:
        raise _mismatch(model, f"task {_API_TASK[model.task]} cannot be served from this format (format "
                        f"{model.model_format} serves: {', '.join(_API_TASK[t] for t in allowed)})")


def _transformer_config(model: PoolModel, fetched: Fetched, base: dict[str, Any]) -> ModelConfig:
    root = fetched.path
    if not (root / "config.json").is_file() or not any(root.glob("*.safetensors")):
        extra = " (pickled .bin weights are never loaded: convert them to safetensors)" \
            if any(root.glob("*.bin")) else ""
        raise _mismatch(model, f"a SafeTensors model needs config.json and *.safetensors{extra}; the source "
                        f"holds: {_listing(root)}")
    facts = read_folder(root, model.uri)
    task = model.task or facts.guess_task()
    if task in ("sequence-classification", "reranking") and not facts.has_classifier:
        raise _mismatch(model, f"task {_API_TASK[task]} needs a sequence-classification head, and config.json "
                        f"says architectures {list(facts.architectures)}")
    if task == "reranking" and facts.num_labels != 1:
        raise _mismatch(model, f"task Reranking needs a cross-encoder with one score (num_labels 1); this model "
                        f"has {facts.num_labels} labels {list(facts.labels)}: use task SequenceClassification")
    st = facts.sentence
    fast = (task == "sentence-embedding" and facts.model_type == "bert" and (root / "tokenizer.json").is_file()
            and (st is None or (st.pooling == ("mean",) and not st.dense)))
    if fast:
        limit = min(base["max_sequence_length"], (st.max_seq_length if st and st.max_seq_length else 512))
        return ModelConfig(kind="sentence-embedding", weights=str(root), normalize=st is not None and st.normalize,
                           **{**base, "max_sequence_length": limit})
    return ModelConfig(kind="transformers", task=task, weights=str(root), **base)


def _guess_onnx_task(root: Path, file: str) -> str:
    if (root / Path(file).parent / "preprocessor_config.json").is_file():
        return "image-classification"
    if (root / "tokenizer.json").is_file() and (root / "modules.json").is_file():
        return "sentence-embedding"  # a sentence-transformers folder with its ONNX export
    return "tensors"


def _onnx_encoder_config(model: PoolModel, root: Path, file: str, base: dict[str, Any]) -> ModelConfig:
    """An ONNX text encoder: the graph at model.onnx or onnx/model.onnx with the tokenizer at the
    folder's root (the layout sentence-transformers repositories ship), pooling and normalization
    from its modules.json (none: the graph's output is taken as the embedding, mean-pooled when
    it is token states), served by ONNX Runtime."""
    from gpupool_worker.engine.models.ort_encoder import SHIPPED_GRAPHS

    if file not in SHIPPED_GRAPHS:
        raise _mismatch(model, f"an ONNX sentence encoder's graph must be {' or '.join(SHIPPED_GRAPHS)} beside "
                        f"tokenizer.json; the source has {file}")
    if not (root / "tokenizer.json").is_file():
        raise _mismatch(model, f"task SentenceEmbedding from ONNX needs the tokenizer (tokenizer.json) at the "
                        f"folder's root; the source holds: {_listing(root)}")
    facts = read_folder(root, model.uri) if (root / "config.json").is_file() else None
    st = facts.sentence if facts is not None else None
    limit = min(base["max_sequence_length"], st.max_seq_length if st and st.max_seq_length else 512)
    engine = base.get("engine") if base.get("engine") not in (None, "auto") else "onnx"
    if engine != "onnx":
        raise _mismatch(model, f"format ONNX is served by ONNX Runtime (engine onnx), not engine {engine}: serve "
                        f"SafeTensors weights for the torch engines")
    return ModelConfig(kind="sentence-embedding", weights=str(root), normalize=st is not None and st.normalize,
                       **{**base, "max_sequence_length": limit, "engine": "onnx"})


def resolve_config(model: PoolModel, fetched: Fetched, base: dict[str, Any]) -> tuple[Path, ModelConfig]:
    """The directory and config that load ``model`` from ``fetched`` (``base``: batching, engine,
    precision keyword arguments of ModelConfig). Raises SourceError(FORMAT_MISMATCH)."""
    _check_task(model)
    root = fetched.path
    if model.model_format == "Builtin":
        return root, ModelConfig(kind="sentence-embedding", weights=str(root), **base)
    if model.model_format == "SafeTensors":
        return root, _transformer_config(model, fetched, base)
    file = _model_file(model, fetched)
    inputs, outputs = _declared(model, root)
    if model.model_format == "ONNX":
        task = model.task or _guess_onnx_task(root, file)
        if task == "sentence-embedding":
            return root, _onnx_encoder_config(model, root, file, base)
        directory = (root / file).parent
        return directory, ModelConfig(kind="onnx", task=task, file=Path(file).name, **base)
    if model.model_format == "TorchScript" and not (inputs and outputs):
        raise _mismatch(model, "a TorchScript archive carries no tensor names, types or shapes: declare them in "
                        "the pool (spec.models[].tensors.inputs/outputs) or ship a model.json beside model.pt")
    kind = "torchscript" if model.model_format == "TorchScript" else "torch-export"
    return root, ModelConfig(kind=kind, task="tensors", file=file, inputs=inputs, outputs=outputs,
                             **base)

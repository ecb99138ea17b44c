"""The model a pool asks this worker to serve, as the operator passes it in the environment.

| variable | meaning | default |
|---|---|---|
| GPUPOOL_MODEL_URI | where the model is: hf://, s3://, https://, oci://, pvc://, builtin:// | (none) |
| GPUPOOL_MODEL_FORMAT | SafeTensors, ONNX, TorchScript, TorchExport, Builtin | SafeTensors |
| GPUPOOL_MODEL_TASK | Auto, SentenceEmbedding, SequenceClassification, Reranking, ImageClassification, Tensors | Auto |
| GPUPOOL_MODEL_REVISION | hf:// revision or OCI tag to pin | (the uri's, else main/latest) |
| GPUPOOL_MODEL_SHA256 | sha256 of an https:// download | (none) |
| GPUPOOL_MODEL_TENSORS | JSON ``{"inputs": [...], "outputs": [...]}`` of ``{name, datatype, shape}`` | (none) |
| GPUPOOL_MODEL_CACHE | the node's model cache directory | ~/.cache/gpupool/models |
| GPUPOOL_SOURCE_CREDENTIALS | where the credentials Secret is mounted | (none: no credentials) |
| GPUPOOL_PVC_ROOT | where pvc:// claims are mounted (``<root>/<claim>``) | /mnt/gpupool/pvc |
| GPUPOOL_DEVICE_MEMORY | memory of this replica's slice (bytes or a quantity, e.g. 10Gi) | the device's |

The model's name and batching come from GPUPOOL_MODEL_NAME / GPUPOOL_MAX_BATCH_SIZE /
GPUPOOL_MAX_QUEUE_DELAY (:mod:`gpupool_worker.config`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpupool_worker.sources import FetchRequest

__all__ = ["FORMATS", "TASKS", "PoolModel", "parse_memory"]

FORMATS = ("SafeTensors", "ONNX", "TorchScript", "TorchExport", "Builtin")
TASKS = {"Auto": "", "": "", "SentenceEmbedding": "sentence-embedding",
         "SequenceClassification": "sequence-classification", "Reranking": "reranking",
         "ImageClassification": "image-classification", "Tensors": "tensors", "TextGeneration": "text-generation"}
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def parse_memory(raw: str) -> int:
    """A byte count or a Kubernetes quantity (``10Gi``, ``9728Mi``, ``40G``) in bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P|)\s*", raw)
    if not match:
        raise ValueError(f"GPUPOOL_DEVICE_MEMORY={raw!r} is not a byte count or quantity such as 10Gi")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True, slots=True)
class PoolModel:
    name: str
    uri: str
    model_format: str = "SafeTensors"
    task: str = ""
    """Internal task name (``sentence-embedding``, ...); empty: decided from the model's files."""
    revision: str = ""
    sha256: str = ""
    tensors: Mapping[str, Any] = field(default_factory=dict)
    cache_root: Path = Path.home() / ".cache" / "gpupool" / "models"
    credentials_dir: Path | None = None
    pvc_root: Path = Path("/mnt/gpupool/pvc")
    device_memory: int | None = None
    problem: str = ""
    """A setting that could not be read: the model is reported UNAVAILABLE with it, never crashes."""

    @classmethod
    def from_env(cls, name: str, env: Mapping[str, str] | None = None) -> PoolModel | None:
        env = os.environ if env is None else env
        uri = env.get("GPUPOOL_MODEL_URI", "").strip()
        if not uri:
            return None
        name = name or re.sub(r"[^a-z0-9-]+", "-", uri.rsplit("/", 1)[-1].split("@")[0].split(":")[0].lower()) \
            or "model"
        problems = []
        fmt = env.get("GPUPOOL_MODEL_FORMAT", "") or "SafeTensors"
        if fmt not in FORMATS:
            problems.append(f"GPUPOOL_MODEL_FORMAT={fmt!r} is not one of {', '.join(FORMATS)}")
        task_name = env.get("GPUPOOL_MODEL_TASK", "")
        if task_name not in TASKS:
            problems.append(f"GPUPOOL_MODEL_TASK={task_name!r} is not one of {', '.join(k for k in TASKS if k)}")
        tensors: dict[str, Any] = {}
        if env.get("GPUPOOL_MODEL_TENSORS"):
            try:
                tensors = json.loads(env["GPUPOOL_MODEL_TENSORS"])
            except ValueError as exc:
                problems.append(f"GPUPOOL_MODEL_TENSORS is not JSON: {exc}")
        memory = None
        if env.get("GPUPOOL_DEVICE_MEMORY"):
            try:
                memory = parse_memory(env["GPUPOOL_DEVICE_MEMORY"])
            except ValueError as exc:
                problems.append(str(exc))
        cache = env.get("GPUPOOL_MODEL_CACHE") or str(Path(env.get("GPUPOOL_CACHE", "") or
                                                           Path.home() / ".cache" / "gpupool") / "models")
        creds = env.get("GPUPOOL_SOURCE_CREDENTIALS")
        return cls(name=name, uri=uri, model_format=fmt, task=TASKS.get(task_name, ""),
                   revision=env.get("GPUPOOL_MODEL_REVISION", ""), sha256=env.get("GPUPOOL_MODEL_SHA256", ""),
                   tensors=tensors, cache_root=Path(cache), credentials_dir=Path(creds) if creds else None,
                   pvc_root=Path(env.get("GPUPOOL_PVC_ROOT") or "/mnt/gpupool/pvc"), device_memory=memory,
                   problem="; ".join(problems))

    def fetch_request(self, memory_limit: int | None, memory_what: str) -> FetchRequest:
        return FetchRequest(uri=self.uri, cache_root=self.cache_root, revision=self.revision, sha256=self.sha256,
                            model_format=self.model_format, credentials_dir=self.credentials_dir,
                            pvc_root=self.pvc_root, memory_limit_bytes=memory_limit, memory_what=memory_what)

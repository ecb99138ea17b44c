"""ONNX models through ONNX Runtime, with the metadata the graph itself declares.

Two tasks:

- ``tensors``: the graph's own inputs and outputs, names, element types and shapes as ONNX
  declares them (a symbolic or unknown dimension is ``-1``). When every input's first dimension
  is symbolic, that dimension is the batch and the dynamic batcher merges requests along it.
- ``image-classification``: ``image`` UINT8 ``[batch, height, width, 3]`` in; the declared
  preprocessing contract (:mod:`.image_contract`) turns it into the graph's float32 NCHW input;
  ``logits``, ``probabilities`` and the top ``label`` (``config.json`` ``id2label`` or
  ``labels.txt``) out.

Execution providers: CUDA on a GPU (refused, with the providers this onnxruntime has, when it
lacks CUDA), CPU otherwise, with the compute thread's intra-op thread count. Precision: fp32 runs
the graph as exported; int8 applies ONNX Runtime's dynamic quantization (CPU); fp16 converts the
graph on CUDA keeping float32 inputs and outputs; anything else is refused (:mod:`.precisions`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.device import DeviceLike, require_torch
from gpupool_worker.engine.model import Arrays, Model
from gpupool_worker.engine.models.image_contract import ImageContract
from gpupool_worker.engine.types import ModelMetadata, TensorSpec
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["ONNX_TYPES", "OnnxModel", "load_labels"]

ONNX_TYPES = {
    "tensor(float)": DataType.FP32, "tensor(float16)": DataType.FP16, "tensor(double)": DataType.FP64,
    "tensor(int8)": DataType.INT8, "tensor(int16)": DataType.INT16, "tensor(int32)": DataType.INT32,
    "tensor(int64)": DataType.INT64, "tensor(uint8)": DataType.UINT8, "tensor(uint16)": DataType.UINT16,
    "tensor(uint32)": DataType.UINT32, "tensor(uint64)": DataType.UINT64, "tensor(bool)": DataType.BOOL,
    "tensor(string)": DataType.BYTES,
}


def load_labels(directory: Path) -> tuple[str, ...]:
    config = directory / "config.json"
    if config.is_file():
        id2label = json.loads(config.read_text()).get("id2label") or {}
        if id2label:
            return tuple(str(id2label.get(str(i), i)) for i in range(len(id2label)))
    text = directory / "labels.txt"
    if text.is_file():
        return tuple(line.strip() for line in text.read_text().splitlines() if line.strip())
    return ()


def _graph_bytes(path: Path, precision: str, what: str) -> bytes | str:
    """The graph to run: the file as is (fp32), or converted for the precision."""
    if precision == "fp32":
        return str(path)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic  # type: ignore[import-untyped, unused-ignore]

        with tempfile.TemporaryDirectory(prefix="gpupool-int8-") as tmp:
            out = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8)
            return out.read_bytes()
    import onnx
    from onnxruntime.transformers.float16 import (  # type: ignore[import-untyped, unused-ignore]
        convert_float_to_float16,
    )

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    return bytes(model.SerializeToString())


def _spec(arg: Any, batched: bool) -> TensorSpec:
    dtype = ONNX_TYPES.get(arg.type)
    if dtype is None:
        raise SourceError(Reason.FORMAT_MISMATCH, f"ONNX tensor {arg.name!r} has type {arg.type}, which the "
                          "KServe v2 protocol cannot carry")
    shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape)
    if batched and shape:
        shape = (-1, *shape[1:])
    return TensorSpec(arg.name, dtype, shape)


class OnnxModel(Model):
    def __init__(self, name: str, version: str, path: Path, *, task: str, precision: str, device: DeviceLike,
                 max_batch_size: int, threads: int = 0, spinning: bool = False) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped, unused-ignore]

        what = f"model {name}"
        self.task, self.precision, self.device = task, precision, device
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.type == "cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                raise SourceError(Reason.LOAD_FAILED,
                                  f"{what}: this onnxruntime has no CUDAExecutionProvider (it has "
                                  f"{', '.join(available)}); install onnxruntime-gpu or give the model a CPU option")
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        from gpupool_worker.engine.models.ort_encoder import cpu_threads, session_options

        options = session_options(cpu_threads(threads), spinning=spinning)  # spinning off: see session_options
        try:
            self.session = ort.InferenceSession(_graph_bytes(path, precision, what), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: ONNX Runtime cannot load {path.name}: "
                              f"{' '.join(str(exc).split())[:300]}") from None
        graph_in, graph_out = self.session.get_inputs(), self.session.get_outputs()
        batched = max_batch_size > 0 and all(a.shape and not isinstance(a.shape[0], int) for a in graph_in)
        self.graph_inputs = tuple(_spec(a, batched) for a in graph_in)
        self.graph_outputs = tuple(_spec(a, batched) for a in graph_out)
        self.contract: ImageContract | None = None
        self.labels: tuple[str, ...] = ()
        if task == "image-classification":
            require_torch(f"{what}: image classification's preprocessing (resize, crop)")
            inputs, outputs = self._image_task(path.parent, what)
        else:
            inputs, outputs = self.graph_inputs, self.graph_outputs
        super().__init__(ModelMetadata(name=name, versions=(version,), platform="onnxruntime_onnx", inputs=inputs,
                                       outputs=outputs, max_batch_size=max_batch_size if batched else 0))

    def _image_task(self, directory: Path, what: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        if len(self.graph_inputs) != 1 or len(self.graph_inputs[0].shape) != 4 or \
                self.graph_inputs[0].shape[1] not in (3, -1) or self.graph_inputs[0].datatype is not DataType.FP32:
            shown = [(s.name, s.datatype.value, list(s.shape)) for s in self.graph_inputs]
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: image classification needs one FP32 NCHW input "
                              f"with 3 channels; the graph has {shown}")
        if len(self.graph_outputs[0].shape) != 2:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: image classification needs [batch, classes] "
                              f"logits first; the graph's first output is {list(self.graph_outputs[0].shape)}")
        self.contract = ImageContract.read(directory, what)
        want = tuple(self.graph_inputs[0].shape[2:])
        fixed = self.contract.fixed_size()
        if all(d > 0 for d in want) and fixed is not None and tuple(fixed) != want:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: the preprocessing contract ends at {list(fixed)} "
                              f"but the graph takes {list(want)}")
        self.labels = load_labels(directory)
        classes = self.graph_outputs[0].shape[1]
        if self.labels and classes > 0 and len(self.labels) != classes:
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: {len(self.labels)} labels for {classes} classes")
        return ((TensorSpec("image", DataType.UINT8, (-1, -1, -1, 3)),),
                (TensorSpec("logits", DataType.FP32, (-1, classes)),
                 TensorSpec("probabilities", DataType.FP32, (-1, classes)),
                 TensorSpec("label", DataType.BYTES, (-1,))))

    def prepare(self, inputs: Arrays) -> dict[str, npt.NDArray[Any]]:
        if self.contract is not None:
            return {self.graph_inputs[0].name: self.contract.apply(inputs["image"])}
        return {spec.name: np.ascontiguousarray(inputs[spec.name], dtype=spec.datatype.numpy_dtype)
                for spec in self.graph_inputs}

    def forward(self, prepared: Any) -> list[Any]:
        return list(self.session.run(None, prepared))

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        if self.contract is None:
            return {spec.name: np.asarray(value) for spec, value in zip(self.graph_outputs, raw, strict=True)}
        logits = np.asarray(raw[0], dtype=np.float32)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        top = logits.argmax(axis=1)
        names = [self.labels[i] if i < len(self.labels) else str(i) for i in top]
        return {"logits": logits, "probabilities": (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32),
                "label": np.array([n.encode() for n in names], dtype=object)}

    def warmup(self) -> None:
        sample: dict[str, npt.NDArray[Any]] = {}
        for spec in self.metadata.inputs:
            shape = [d if d > 0 else 1 for d in spec.shape]
            if spec.name == "image" and self.contract is not None:
                h, w = self.contract.fixed_size() or (224, 224)
                shape = [1, h, w, 3]
            sample[spec.name] = np.zeros(shape, dtype=spec.datatype.numpy_dtype) \
                if spec.datatype is not DataType.BYTES else np.array([b""] * shape[0], dtype=object)
        self.execute(sample)

    def describe(self) -> dict[str, str]:
        return {"engine": "onnxruntime", "task": self.task, "precision": self.precision,
                "providers": ",".join(self.session.get_providers())}

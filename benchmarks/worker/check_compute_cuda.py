"""GPU smoke check (not a benchmark): the data plane with its one compute thread on CUDA.

A tiny encoder (fp16, eager and Triton engines) is loaded on the compute thread, so its CUDA graphs
are captured there; it serves 2 sequential and 12 concurrent requests, and every embedding must
match the same model served with graphs off (cosine > 0.999). Needs a CUDA device:

    PYTHONPATH=operator:worker:proto python benchmarks/worker/check_compute_cuda.py

Last run: benchmarks/results/worker-gpu-compute-thread-checks-nvidia-h100-80gb-hbm3.txt
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpupool_worker.engine.compute import ComputeThread
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.dataplane import DataPlane
from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.models.examples import write_tiny_encoder
from gpupool_worker.engine.repository import ModelRepository, RuntimeDefaults
from gpupool_worker.engine.types import InferRequest, Tensor

TEXTS = [b"gpu slices", b"cut the cost of serving sentence embeddings at scale", b"a"]


def _request(texts: list[bytes]) -> InferRequest:
    return InferRequest("tiny", (Tensor("text", DataType.BYTES, (len(texts),), np.array(texts, dtype=object)),))


async def _serve(root: Path, *, graphs: bool, engine: str) -> list[Any]:
    cost = CostModel(price_per_hour_usd=6.88, device_share=1.0, accelerator="h100")
    defaults = RuntimeDefaults(device=torch.device("cuda"), engine=engine, precision="fp16", cuda_graphs=graphs)
    repo = ModelRepository(root, defaults)
    plane = DataPlane(repo, cost, WorkerMetrics(cost), compute=ComputeThread(4))
    await plane.load()
    assert plane.ready, plane.index()
    entry = repo.get("tiny")
    assert entry is not None
    assert entry.model is not None
    print(engine, "graphs", graphs, entry.model.describe())
    outputs = [(await plane.infer(_request(TEXTS[:n]))).outputs[0].data.copy() for n in (1, 3)]
    together = await asyncio.gather(*(plane.infer(_request([t])) for t in TEXTS * 4))
    await plane.drain()
    return outputs + [r.outputs[0].data for r in together]


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    for engine in ("eager", "triton"):
        with tempfile.TemporaryDirectory() as tmp:
            write_tiny_encoder(Path(tmp) / "tiny")
            on = asyncio.run(_serve(Path(tmp), graphs=True, engine=engine))
            off = asyncio.run(_serve(Path(tmp), graphs=False, engine=engine))
        for a, b in zip(on, off, strict=True):
            cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
            assert cos.min() > 0.999, cos
        print(engine, "ok: graphs on == off through the data plane on the compute thread;",
              len(on) - 2, "concurrent requests")


if __name__ == "__main__":
    main()

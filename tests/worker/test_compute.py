"""The worker's one compute thread (engine.compute): configured intra-op threads, and the data plane
loads and runs every model there, so only one OpenMP team exists in the process."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gpupool_worker.engine.compute import ComputeThread
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.dataplane import DataPlane
from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.metrics import WorkerMetrics
from gpupool_worker.engine.models.examples import write_add_sub
from gpupool_worker.engine.repository import ModelRepository, RuntimeDefaults
from gpupool_worker.engine.types import InferRequest, Tensor

from .gate_model import GateModel


class _WhereModel(GateModel):
    """Records which thread ran each batch and how many intra-op threads torch had there. It takes a
    few milliseconds per batch, so the batcher keeps it off the event loop."""

    def __init__(self) -> None:
        super().__init__("where", width=3)
        self.seen: list[tuple[str, int]] = []

    def forward(self, prepared: Any) -> Any:
        self.seen.append((threading.current_thread().name, torch.get_num_threads()))
        time.sleep(0.005)
        return super().forward(prepared)


def test_the_compute_thread_has_the_configured_intra_op_threads_and_the_caller_keeps_its_own() -> None:
    before = torch.get_num_threads()
    compute = ComputeThread(3, name="probe")
    try:
        assert compute.executor.submit(torch.get_num_threads).result() == 3
        assert compute.executor.submit(lambda: threading.current_thread().name).result().startswith("probe")
        assert torch.get_num_threads() == before  # nothing changes for the caller until asked
    finally:
        compute.shutdown()


def test_default_thread_count_is_what_torch_would_use() -> None:
    compute = ComputeThread(0)
    try:
        assert compute.threads == torch.get_num_threads()
        assert compute.executor.submit(torch.get_num_threads).result() == compute.threads
    finally:
        compute.shutdown()


async def test_the_data_plane_loads_and_runs_models_on_the_compute_thread(tmp_path: Path) -> None:
    cost = CostModel(price_per_hour_usd=1.0, device_share=1.0, accelerator="cpu")
    write_add_sub(tmp_path / "add_sub")
    repo = ModelRepository(tmp_path, RuntimeDefaults(device=torch.device("cpu")))
    where = _WhereModel()
    repo.add("where", where)
    compute = ComputeThread(2, name="gpupool-compute")
    plane = DataPlane(repo, cost, WorkerMetrics(cost), compute=compute)
    await plane.load()
    assert plane.ready, plane.index()
    for _ in range(3):
        response = await plane.infer(InferRequest(
            "where", (Tensor("x", DataType.FP32, (1, 3), np.ones((1, 3), np.float32)),)))
        np.testing.assert_array_equal(response.outputs[0].data, np.full((1, 3), 2.0, np.float32))
    assert where.seen
    assert {name.split("_")[0] for name, _ in where.seen} == {"gpupool-compute"}
    assert {threads for _, threads in where.seen} == {2}
    await plane.drain()
    with pytest.raises(RuntimeError):  # the plane owns it: shut down with the models
        compute.executor.submit(int)

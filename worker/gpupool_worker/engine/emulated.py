"""The emulated accelerator: a model whose batches take the time the shape's profile says.

On the local cluster's real kubelet nodes, GPUs and MIG slices are emulated: the emulated NVIDIA
device plugin (``gpupool_operator.local.deviceplugin``) hands a container ``GPUPOOL_EMULATED=1``
and the device's shape (``GPUPOOL_EMULATED_PRODUCT``, ``GPUPOOL_EMULATED_MIG_PROFILE``). A worker
that gets one and sees no CUDA device serves every model through :class:`EmulatedModel`: the real
model is loaded once on the CPU for its metadata and input checks, then dropped; a batch of ``b``
rows sleeps for the batch time of the placement engine's model (``core.scaling.offers``: a full
batch of ``B`` rows takes ``B / T``, any batch a fixed share of that, 0.5 on a GPU, plus its rows),
with ``T`` the shape's ``inferencesPerSecond`` (``GPUPOOL_INFERENCES_PER_SECOND``). Outputs have the
real model's names, datatypes and shapes (floating outputs are unit vectors). gRPC, batching,
queueing, metrics and cost are the worker's real ones; only the device's work is a sleep.

It is labelled wherever a user looks: the worker's log, ``gpupool_engine_emulated 1`` in its
metrics, and ``describe()`` (the model's metadata and load log line).

Without a declared throughput the shape gets ``DEFAULT_GPU_THROUGHPUT`` scaled by its compute share
(compute slices / 7 for a MIG slice), and the log says so.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.core import GaugeMetricFamily, Metric

from gpupool_worker.engine.datatypes import DataType
from gpupool_worker.engine.model import Arrays, Model, rows_of

__all__ = ["DEFAULT_GPU_THROUGHPUT", "EmulatedCollector", "EmulatedDevice", "EmulatedModel"]

log = logging.getLogger(__name__)

#: inferences/s of a whole emulated GPU when the pool declares no profile for the shape
DEFAULT_GPU_THROUGHPUT = 1000.0
#: the batch-time model's fixed share on a GPU (``core.scaling.offers``)
GPU_FIXED_FRACTION = 0.5
COMPUTE_SLICES = 7


@dataclass(frozen=True, slots=True)
class EmulatedDevice:
    """The emulated GPU or MIG slice this worker was given, and its throughput."""

    product: str
    mig_profile: str
    devices: str
    throughput: float
    declared: bool  # the throughput came from the pool's profile (else the default rule)
    fixed_fraction: float = GPU_FIXED_FRACTION

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EmulatedDevice | None:
        """The emulated device named by the device plugin's variables, or ``None`` on real hardware."""
        env = os.environ if env is None else env
        if env.get("GPUPOOL_EMULATED") != "1":
            return None
        profile = env.get("GPUPOOL_EMULATED_MIG_PROFILE", "") or env.get("GPUPOOL_MIG_PROFILE", "")
        count = max(1, int(env.get("GPUPOOL_EMULATED_DEVICE_COUNT", "1") or 1))
        raw = env.get("GPUPOOL_INFERENCES_PER_SECOND", "")
        try:
            declared = float(raw) if raw else 0.0
        except ValueError:
            declared = 0.0
        if declared > 0:
            throughput, is_declared = declared, True
        else:
            match = re.match(r"(\d+)g\.", profile)
            share = int(match.group(1)) / COMPUTE_SLICES if match else float(count)
            throughput, is_declared = DEFAULT_GPU_THROUGHPUT * share, False
        return cls(product=env.get("GPUPOOL_EMULATED_PRODUCT", "GPU"), mig_profile=profile,
                   devices=env.get("NVIDIA_VISIBLE_DEVICES", ""), throughput=throughput, declared=is_declared)

    @property
    def shape(self) -> str:
        return f"{self.product} MIG {self.mig_profile}" if self.mig_profile else self.product

    def batch_seconds(self, rows: int, max_batch: int) -> float:
        """The placement engine's batch time: ``B / T`` for a full batch, a fixed share for any."""
        batch = max(1, max_batch)
        full = batch / self.throughput
        return full * (self.fixed_fraction + (1.0 - self.fixed_fraction) * min(rows, batch) / batch)

    def describe(self) -> str:
        source = "the pool's profile" if self.declared else f"default {DEFAULT_GPU_THROUGHPUT:g}/s per GPU x share"
        return f"EMULATED {self.shape} ({self.devices or 'no device id'}), {self.throughput:g} inferences/s ({source})"


class EmulatedModel(Model):
    """A model that answers with the real model's shapes after the emulated device's batch time."""

    def __init__(self, real: Model, device: EmulatedDevice) -> None:
        super().__init__(real.metadata)
        self.device = device
        # a text model reads (and refuses bad) text where it tokenizes: that is its check here
        self._check = real.tokenize if real.tokenizes else real.check
        self.batches = 0

    def check(self, inputs: Arrays) -> None:
        self._check(inputs)

    def prepare(self, inputs: Arrays) -> int:
        return rows_of(inputs) if self.max_batch_size > 0 else 1

    def forward(self, prepared: Any) -> int:
        rows = int(prepared)
        time.sleep(self.device.batch_seconds(rows, self.max_batch_size or 1))
        self.batches += 1
        return rows

    def finish(self, raw: Any) -> dict[str, npt.NDArray[Any]]:
        rows = int(raw)
        out: dict[str, npt.NDArray[Any]] = {}
        for spec in self.metadata.outputs:
            dims = list(spec.shape)
            if self.max_batch_size > 0 and dims:
                dims[0] = rows
            shape = tuple(1 if d < 0 else d for d in dims)
            if spec.datatype is DataType.BYTES:
                out[spec.name] = np.full(shape, b"", dtype=object)
            elif spec.datatype in (DataType.FP16, DataType.FP32, DataType.FP64):
                width = shape[-1] if shape else 1
                out[spec.name] = np.full(shape, 1.0 / np.sqrt(max(width, 1)), dtype=spec.datatype.numpy_dtype)
            else:
                out[spec.name] = np.zeros(shape, dtype=spec.datatype.numpy_dtype)
        return out

    def describe(self) -> dict[str, str]:
        return {"engine": "emulated", "device": self.device.describe()}


class EmulatedCollector:
    """``gpupool_engine_emulated`` (1 on an emulated device, 0 on real hardware) with the shape."""

    def __init__(self, device: EmulatedDevice | None) -> None:
        self.device = device

    def collect(self) -> list[Metric]:
        g = GaugeMetricFamily("gpupool_engine_emulated",
                              "1 when this worker's accelerator is emulated (its batch time follows the shape's "
                              "throughput profile; nothing runs on a GPU)", labels=["shape", "throughput"])
        d = self.device
        g.add_metric([d.shape if d else "", f"{d.throughput:g}" if d else ""], 1.0 if d else 0.0)
        return [g]

"""Where models run, without importing torch until a torch model needs it.

A CPU worker installed with ``gpupool[worker-cpu]`` has no torch at all: it serves encoders and
ONNX graphs on ONNX Runtime. So the device is a small value (:class:`Device`: ``type`` and
``index``, spelled as torch spells it, ``cpu`` or ``cuda:0``) that the torch engines turn into a
``torch.device`` when they load, and :func:`torch_available` is how the worker decides, without
importing it, whether the torch engines exist here. :func:`require_torch` is the one place a
torch-only feature asked for on a torch-free worker is refused, with what to do instead.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

__all__ = ["TORCH_FREE_HINT", "Device", "DeviceLike", "TorchMissingError", "device_name", "require_torch",
           "resolve_device", "torch_available"]

TORCH_FREE_HINT = ("this worker has no torch (a CPU-only install, gpupool[worker-cpu]): it serves "
                   "sentence-embedding encoders and ONNX graphs on ONNX Runtime; install gpupool[worker] "
                   "or use the torch worker image for the rest")


class DeviceLike(Protocol):
    """A ``torch.device`` or a :class:`Device`: what the repository and loaders read."""

    @property
    def type(self) -> str: ...

    @property
    def index(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Device:
    type: str = "cpu"
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


class TorchMissingError(RuntimeError):
    """A torch-only feature on a worker without torch."""


def torch_available() -> bool:
    """Whether torch can be imported here (found, not imported)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def require_torch(feature: str) -> ModuleType:
    """``torch``, imported now; or TorchMissingError saying ``feature`` needs it."""
    if not torch_available():
        raise TorchMissingError(f"{feature} needs torch, and {TORCH_FREE_HINT}")
    import torch

    return torch


def resolve_device(setting: str) -> Device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a :class:`Device` (CUDA only where torch sees
    one; ``auto`` without torch is the CPU)."""
    setting = setting.strip() or "auto"
    if setting == "auto":
        if torch_available():
            import torch

            if torch.cuda.is_available():
                return Device("cuda", 0)
        return Device("cpu")
    kind, _, index = setting.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise ValueError(f"GPUPOOL_DEVICE={setting} is not auto, cpu, cuda or cuda:N")
    if kind == "cpu":
        return Device("cpu")
    torch = require_torch(f"GPUPOOL_DEVICE={setting}")
    if not torch.cuda.is_available():
        raise ValueError(f"GPUPOOL_DEVICE={setting} but no CUDA device is visible")
    return Device("cuda", int(index) if index else 0)


def device_name(device: DeviceLike) -> str:
    """The accelerator's name (a CUDA device's product), or ``cpu``."""
    if device.type != "cuda":
        return "cpu"
    torch = require_torch("a CUDA device")
    return str(torch.cuda.get_device_name(device.index or 0))

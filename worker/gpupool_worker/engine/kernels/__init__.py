"""Kernels for the encoder: pure-PyTorch references and their fused Triton counterparts.

``triton_ops`` is imported lazily (only by the Triton engine), so serving on a CPU never needs
Triton installed. :func:`triton_support` says whether the kernels can run on a device, and why not.
"""

from __future__ import annotations

import importlib.util
import os

from gpupool_worker.engine.device import DeviceLike, torch_available

__all__ = ["triton_support"]


def triton_support(device: DeviceLike) -> tuple[bool, str]:
    """Whether the Triton kernels can run on ``device`` (and the reason when they cannot)."""
    if not torch_available():
        return False, "torch is not installed (the Triton kernels are a torch engine)"
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    if device.type == "cuda":
        import torch

        major, minor = torch.cuda.get_device_capability(torch.device(str(device)))
        if major < 7:
            return False, f"compute capability {major}.{minor} < 7.0"
        return True, f"CUDA compute capability {major}.{minor}"
    if device.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") == "1":
            return True, "Triton interpreter on the CPU (TRITON_INTERPRET=1)"
        return False, "no GPU: Triton kernels run on the CPU only under TRITON_INTERPRET=1"
    return False, f"unsupported device type {device.type}"

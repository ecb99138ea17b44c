"""Label keys more than one layer reads or writes (the operator's adapters, the inventory reader,
the local cluster's nodes), defined once. Plain strings; no side-effects."""

from __future__ import annotations

__all__ = ["EMULATED_LABEL"]

EMULATED_LABEL = "gpupool.io/emulated"
"""On a Node: ``"true"`` when its GPUs are emulated (the local cluster's real nodes, served by the
emulated NVIDIA device plugin): a worker placed there runs the emulated engine."""

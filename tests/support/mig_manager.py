"""NVIDIA's MIG manager for the operator's tests: the emulated one in ``gpupool_operator.local``.

It speaks the GPU Operator's label protocol (it alone writes ``nvidia.com/mig.config.state``:
pending, then success or failed) and, on these KWOK nodes, rewrites allocatable and the
per-profile count labels after ``delay_s``; ``fail_nodes`` makes a node's GPUs refuse and
``silent_nodes`` makes it never answer; it writes as field manager ``FIELD_MANAGER``. The name
``MigManagerStandIn`` is kept for the tests that import it.
"""

from __future__ import annotations

from gpupool_operator.local.migmanager import (
    CONFIG_LABEL,
    FIELD_MANAGER,
    REQUEST_ANNOTATION,
    STATE_LABEL,
    MigManager,
)

MigManagerStandIn = MigManager

__all__ = ["CONFIG_LABEL", "FIELD_MANAGER", "REQUEST_ANNOTATION", "STATE_LABEL", "MigManagerStandIn"]

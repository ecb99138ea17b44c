"""``gpupool-worker fetch``: fetch the pool's model into the node cache and stop. The init container
of replica pods whose server is not the gpupool worker (vLLM, Triton, a custom image) runs this, so
every runtime gets the same sources, cache, checks and credentials handling.

On failure it exits 3 and writes ``<Reason>: <message>`` to the container's termination message
(``/dev/termination-log``), where the operator reads it for the pool's ModelLoadFailed condition.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from gpupool_worker.sources.errors import Reason, SourceError
from gpupool_worker.sources.fetch import fetch

__all__ = ["EXIT_UNAVAILABLE", "run_fetch"]

log = logging.getLogger(__name__)
EXIT_UNAVAILABLE = 3
TERMINATION_LOG = Path("/dev/termination-log")


def _report(text: str, termination_log: Path) -> None:
    log.error("%s", text)
    if termination_log.exists():  # the kubelet creates it in a container; never made elsewhere
        with contextlib.suppress(OSError):
            termination_log.write_text(text[:4000])


def run_fetch(link: Path | None, *, termination_log: Path = TERMINATION_LOG) -> int:
    from gpupool_worker.engine.models.pool_model import PoolModel  # the settings parser (no torch)

    model = PoolModel.from_env(os.environ.get("GPUPOOL_MODEL_NAME", ""))
    if model is None:
        _report(f"{Reason.INVALID_SETTING.value}: GPUPOOL_MODEL_URI is not set", termination_log)
        return EXIT_UNAVAILABLE
    if model.problem:
        _report(f"{Reason.INVALID_SETTING.value}: {model.problem}", termination_log)
        return EXIT_UNAVAILABLE
    try:
        fetched = fetch(model.fetch_request(model.device_memory, "this replica's slice (GPUPOOL_DEVICE_MEMORY)"))
    except SourceError as exc:
        _report(f"{exc.reason.value}: {exc.message}", termination_log)
        return EXIT_UNAVAILABLE
    target = fetched.main or fetched.path
    if link is not None:
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    print(target, flush=True)
    return 0

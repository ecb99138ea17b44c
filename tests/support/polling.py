"""Polling a live system until something holds, for tests against real processes (a control
plane, kubelets, workers): never an unbounded loop, and a timeout that says what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 120, every: float = 0.5,
               why: Callable[[], str] | None = None) -> Any:
    """``check()``'s first truthy result, polled every ``every`` seconds; after ``timeout_s`` an
    AssertionError naming ``what`` and, with ``why``, what the system said about it then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}" + (f":\n{why()}" if why else ""))

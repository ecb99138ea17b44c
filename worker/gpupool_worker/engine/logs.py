"""Error logs that cannot flood: the first occurrence of each kind is logged in full (with its
traceback), later ones within ``interval_s`` are only counted, and the next line logged for that
kind says how many were held back. A client sending a million bad requests costs a line a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RateLimitedLog"]


@dataclass(slots=True)
class _Kind:
    last_s: float
    held: int = 0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, *, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval_s
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}
        self._lock = threading.Lock()
        self.total: dict[str, int] = {}
        """Every occurrence of each kind, logged or not."""

    def log(self, level: int, kind: str, message: str, *args: object,
            exc_info: BaseException | None = None) -> bool:
        """Log ``message`` for ``kind`` unless one was logged within the interval; True if logged."""
        now = self._clock()
        with self._lock:
            self.total[kind] = self.total.get(kind, 0) + 1
            seen = self._kinds.get(kind)
            if seen is not None and now - seen.last_s < self._interval:
                seen.held += 1
                return False
            held = seen.held if seen is not None else 0
            self._kinds[kind] = _Kind(now)
        suffix = f" ({held} more like this in the last {self._interval:.0f} s not logged)" if held else ""
        self._log.log(level, message + suffix, *args, exc_info=exc_info)
        return True

    def error(self, kind: str, message: str, *args: object, exc_info: BaseException | None = None) -> bool:
        return self.log(logging.ERROR, kind, message, *args, exc_info=exc_info)

    def warning(self, kind: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, message, *args)

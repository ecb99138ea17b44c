"""Exponential back-off for a pool whose writes the API server refused.

Why per pool: one namespace's ResourceQuota, RBAC or termination must not stall the others, and
retrying a refused write every cycle would hammer the API server (the refusal is usually not
transient). The pool is held back for ``base * 2**(failures-1)`` seconds (capped) and marked
Degraded with the API server's own reason meanwhile. A purely computational module: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff", "Refusal", "after_refusal"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A write the API server refused: its HTTP status, its reason (CamelCase) and message."""

    status: int
    reason: str
    message: str
    stage: str = "act"


@dataclass(frozen=True, slots=True)
class Backoff:
    """A pool held back after ``failures`` refused cycles in a row, until ``until``."""

    failures: int
    until: float
    refusal: Refusal

    def active(self, now: float) -> bool:
        return now < self.until

    @property
    def delay(self) -> float:
        return self.until - self.since

    since: float = 0.0


def after_refusal(previous: Backoff | None, refusal: Refusal, now: float,
                  base_s: float = 2.0, cap_s: float = 300.0) -> Backoff:
    """The back-off after another refused write (the first waits ``base_s``)."""
    failures = (previous.failures if previous is not None else 0) + 1
    delay = min(cap_s, base_s * 2 ** (failures - 1))
    return Backoff(failures=failures, until=now + delay, refusal=refusal, since=now)

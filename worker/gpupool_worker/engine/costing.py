"""What an inference costs: the worker's price per hour times its device share, per busy second
(:class:`CostModel`), and what serving costs once idle time is charged too (:class:`CostLedger`).

The operator knows what the worker's slice of hardware costs and tells it through the environment
(see :mod:`gpupool_worker.config`). The worker measures how long the device spends executing each
batch; a batch's cost is split across its requests in proportion to their batch rows, so batching
amortizes the cost exactly as it amortizes the time.

A purely computational module: durations are passed in, nothing here reads a clock.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass

__all__ = ["CostFigures", "CostLedger", "CostModel"]

_NS_PER_HOUR = 3_600 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class CostModel:
    """Price of the whole device (USD/hour) and the fraction of it this worker holds."""

    price_per_hour_usd: float = 0.0
    device_share: float = 1.0
    accelerator: str = "cpu"
    mig_profile: str = ""

    def __post_init__(self) -> None:
        if not self.price_per_hour_usd >= 0.0:
            raise ValueError(f"price per hour must be >= 0, got {self.price_per_hour_usd}")
        if not 0.0 < self.device_share <= 1.0:
            raise ValueError(f"device share must be in (0, 1], got {self.device_share}")

    @property
    def usd_per_busy_second(self) -> float:
        return self.price_per_hour_usd * self.device_share / 3_600.0

    def cost_of(self, busy_ns: int) -> float:
        """USD for ``busy_ns`` nanoseconds of this worker's share of the device."""
        return busy_ns * self.price_per_hour_usd * self.device_share / _NS_PER_HOUR

    def split(self, busy_ns: int, rows: int, batch_rows: int) -> float:
        """The share of a batch's cost owed by a request that contributed ``rows`` of ``batch_rows``."""
        if batch_rows <= 0:
            raise ValueError("a batch has at least one row")
        return self.cost_of(busy_ns) * rows / batch_rows

    def per_million(self, inferences_per_second: float) -> float:
        """USD per million inferences at a sustained throughput with the device kept busy."""
        if inferences_per_second <= 0:
            raise ValueError("throughput must be positive")
        return self.usd_per_busy_second * 1_000_000 / inferences_per_second


@dataclass(frozen=True, slots=True)
class CostFigures:
    """USD per inference of one model, on two bases over two spans.

    ``busy``: the device time its batches took, priced (what the work itself cost).
    ``idle_charged``: every second the replica has been up, priced, divided among the models by
    their share of the busy time (all of it to a lone model), per inference: what serving really
    cost, idle time included; the figure to budget with. Each over the last ``window_s`` seconds
    and over the replica's lifetime; 0 where no inference happened in that span.
    """

    busy_window: float
    busy_lifetime: float
    idle_charged_window: float
    idle_charged_lifetime: float
    window_s: float
    replica_s: float
    window_inferences: int


@dataclass(slots=True)
class _Usage:
    rows: int = 0
    busy_ns: int = 0


class CostLedger:
    """What a replica's models cost, lifetime and over a sliding window. Times are passed in
    (seconds on a monotonic clock); nothing here reads a clock. Recording is O(1) amortized: the
    window keeps running sums and drops batches older than ``window_s`` as time passes."""

    def __init__(self, cost: CostModel, *, started_s: float, window_s: float = 60.0) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.cost = cost
        self.started_s = started_s
        self.window_s = window_s
        self._lifetime: dict[str, _Usage] = {}
        self._window: dict[str, _Usage] = {}
        self._events: collections.deque[tuple[float, str, int, int]] = collections.deque()
        self._lock = threading.Lock()

    def record(self, model: str, *, rows: int, busy_ns: int, at_s: float) -> None:
        with self._lock:
            for usage in (self._lifetime.setdefault(model, _Usage()), self._window.setdefault(model, _Usage())):
                usage.rows += rows
                usage.busy_ns += busy_ns
            self._events.append((at_s, model, rows, busy_ns))
            self._expire(at_s)

    def _expire(self, now_s: float) -> None:
        horizon = now_s - self.window_s
        while self._events and self._events[0][0] < horizon:
            _, model, rows, busy_ns = self._events.popleft()
            usage = self._window[model]
            usage.rows -= rows
            usage.busy_ns -= busy_ns

    def figures(self, model: str, now_s: float) -> CostFigures:
        with self._lock:
            self._expire(now_s)
            life = self._lifetime.get(model, _Usage())
            window = self._window.get(model, _Usage())
            life_busy = sum(u.busy_ns for u in self._lifetime.values())
            window_busy = sum(u.busy_ns for u in self._window.values())
        up_s = max(now_s - self.started_s, 0.0)
        span_s = min(up_s, self.window_s)
        per_s = self.cost.usd_per_busy_second

        def share(own: int, total: int) -> float:
            return own / total if total else 1.0

        return CostFigures(
            busy_window=self.cost.cost_of(window.busy_ns) / window.rows if window.rows else 0.0,
            busy_lifetime=self.cost.cost_of(life.busy_ns) / life.rows if life.rows else 0.0,
            idle_charged_window=(per_s * span_s * share(window.busy_ns, window_busy) / window.rows
                                 if window.rows else 0.0),
            idle_charged_lifetime=(per_s * up_s * share(life.busy_ns, life_busy) / life.rows
                                   if life.rows else 0.0),
            window_s=self.window_s, replica_s=up_s, window_inferences=window.rows)

"""What an inference costs: the worker's price per hour times its device share, per busy second.

The operator knows what the worker's slice of hardware costs and tells it through the environment
(see :mod:`gpupool_worker.config`). The worker measures how long the device spends executing each
batch; a batch's cost is split across its requests in proportion to their batch rows, so batching
amortizes the cost exactly as it amortizes the time.

A purely computational module: durations are passed in, nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CostModel"]

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

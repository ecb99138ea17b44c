"""Small builders for scaling-policy and simulator tests: shapes, offers, signals."""

from __future__ import annotations

from collections.abc import Mapping

from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.scaling import ShapeOffer, ShapeReplicas, Signals, Targets

A100 = Shape(ShapeKind.GPU, "A100-80GB", gpus=1)
H100 = Shape(ShapeKind.GPU, "H100-80GB", gpus=1)
MIG3G = Shape(ShapeKind.MIG, "A100-80GB", gpus=1, profile="3g.40gb")
MIG1G = Shape(ShapeKind.MIG, "A100-80GB", gpus=1, profile="1g.10gb")
CPU8 = Shape(ShapeKind.CPU, cpu_millis=8000, memory_mib=8192)


def offer(key: str, shape: Shape, throughput: float | None, usd: float, room: int = 16) -> ShapeOffer:
    return ShapeOffer(key, shape, throughput, usd, room)


def gpu_offers() -> list[ShapeOffer]:
    """Three GPU shapes: A100 is the cheapest per request/s, the 3g slice the cheapest replica."""
    return [offer("a100", A100, 10.0, 3.43), offer("h100", H100, 20.0, 6.88), offer("mig3g", MIG3G, 4.0, 1.715)]


def targets(**kw: object) -> Targets:
    base: dict[str, object] = {"min_replicas": 1, "max_replicas": 10, "objective_s": 2.0, "max_batch_size": 8,
                               "scale_down_window_s": 0.0}
    base.update(kw)
    return Targets(**base).validate()  # type: ignore[arg-type]


def signals(rate: float, replicas: Mapping[str, int | tuple[int, int]], queue: float = 0.0, in_flight: float = 0.0,
            age: float = 0.0, reporting: int | None = None) -> Signals:
    reps = {k: ShapeReplicas(*v) if isinstance(v, tuple) else ShapeReplicas(v, 0) for k, v in replicas.items()}
    return Signals(age_s=age, queue=queue, in_flight=in_flight, arrival_rate=rate, completion_rate=rate,
                   replicas=reps, reporting=reporting)

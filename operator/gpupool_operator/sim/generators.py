"""Synthetic traces with a fixed seed: Poisson, diurnal and on/off bursty load.

Each generator is deterministic for its seed (a private ``random.Random``), so a benchmark that
names its seed can be re-run exactly. :func:`from_spec` parses the ``gpupool simulate --trace``
form ``KIND:key=value,...`` (e.g. ``poisson:rate=5,duration=3600,seed=1``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping

from gpupool_operator.sim.trace import Trace, TraceError

__all__ = ["GENERATORS", "diurnal", "from_spec", "onoff", "poisson"]


def poisson(rate: float, duration: float, seed: int = 1) -> Trace:
    """Arrivals at a constant ``rate`` per second."""
    return _thinned(lambda t: rate, rate, duration, seed, f"poisson(rate={rate:g}, seed={seed})")


def diurnal(rate: float, duration: float, period: float = 3600.0, amplitude: float = 0.8, seed: int = 1) -> Trace:
    """A sinusoidal day: mean ``rate``, peak ``rate * (1 + amplitude)`` at a quarter ``period``."""
    peak = rate * (1 + amplitude)
    return _thinned(lambda t: rate * (1 + amplitude * math.sin(2 * math.pi * t / period)), peak, duration, seed,
                    f"diurnal(rate={rate:g}, period={period:g}, amplitude={amplitude:g}, seed={seed})")


def onoff(on_rate: float, duration: float, on: float = 20.0, off: float = 100.0, off_rate: float = 0.0,
          seed: int = 1) -> Trace:
    """Bursts: exponentially distributed on periods (mean ``on`` s) at ``on_rate``, off periods
    (mean ``off`` s) at ``off_rate``."""
    rng = random.Random(seed)
    times: list[float] = []
    t, busy = 0.0, False
    while t < duration:
        length = rng.expovariate(1.0 / (on if busy else off))
        rate = on_rate if busy else off_rate
        end = min(duration, t + length)
        if rate > 0:
            s = t + rng.expovariate(rate)
            while s < end:
                times.append(s)
                s += rng.expovariate(rate)
        t, busy = end, not busy
    name = f"onoff(on_rate={on_rate:g}, on={on:g}, off={off:g}, off_rate={off_rate:g}, seed={seed})"
    return _trace(name, times)


def _thinned(rate: Callable[[float], float], peak: float, duration: float, seed: int, name: str) -> Trace:
    """A non-homogeneous Poisson process by thinning (Lewis and Shedler)."""
    rng = random.Random(seed)
    times: list[float] = []
    t = 0.0
    if peak <= 0:
        return _trace(name, times)
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            break
        if rng.random() * peak <= rate(t):
            times.append(t)
    return _trace(name, times)


def _trace(name: str, times: list[float]) -> Trace:
    if not times:
        raise TraceError(f"{name}: generated no requests")
    base = times[0]
    return Trace(name, tuple(x - base for x in times), tuple(1.0 for _ in times))


GENERATORS: Mapping[str, Callable[..., Trace]] = {"poisson": poisson, "diurnal": diurnal, "onoff": onoff}
_INT_KEYS = ("seed",)


def from_spec(spec: str) -> Trace:
    """A generated trace from ``KIND:key=value,...``; :class:`TraceError` names the bad part."""
    kind, _, rest = spec.partition(":")
    if kind not in GENERATORS:
        raise TraceError(f"{spec}: unknown generator {kind!r} (known: {', '.join(GENERATORS)})")
    kwargs: dict[str, float | int] = {}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq:
            raise TraceError(f"{spec}: {part!r}: expected key=value")
        try:
            number = float(value)
        except ValueError:
            raise TraceError(f"{spec}: {key}: {value!r} is not a number") from None
        if not math.isfinite(number) or number < 0 or (number == 0 and key in ("duration", "rate", "on_rate")):
            raise TraceError(f"{spec}: {key}: must be a positive number, got {value}")
        kwargs[key.strip()] = int(number) if key.strip() in _INT_KEYS else number
    kwargs.setdefault("duration", 3600.0)
    try:
        return GENERATORS[kind](**kwargs)
    except TypeError as err:
        raise TraceError(f"{spec}: {err}") from None

"""What the scaling policy remembers between decisions, as a small JSON-able value.

The operator persists :meth:`ScalingState.to_dict` in the pool's status, so a restarted or new
leader continues with the same windows, panic mode and pending scale-up instead of jumping. Only
what changes a decision is kept: the arrival-rate samples of the stable window, the max/min
envelopes of recent recommendations for the stabilization windows (a monotone deque: a value that
can never again be the window's extreme is dropped), the panic deadline and high-water mark, and
a few timestamps. Times are whatever clock the caller passes as ``now`` (seconds); a clock that
goes backwards resets the history rather than trusting it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STATE_VERSION", "ScalingState"]

STATE_VERSION = 1

Pairs = tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class ScalingState:
    #: (time, arrival rate) samples within the stable window, oldest first.
    samples: Pairs = ()
    #: Max envelope of capacity recommendations within the scale-down window.
    down_envelope: Pairs = ()
    #: Min envelope of capacity recommendations within the scale-up window.
    up_envelope: Pairs = ()
    #: Panic mode lasts until this time (extended by every tick still over the threshold).
    panic_until: float | None = None
    #: Highest capacity recommended in panic, and when; it decays once panic is over.
    high_water: float = 0.0
    high_water_at: float | None = None
    #: First decision after a (re)start without history: scale-downs wait a stable window.
    started_at: float | None = None
    #: Time of the last decision (to notice a clock that went backwards).
    last_now: float | None = None
    #: When replicas were last added; while they are pending no new decision is made.
    pending_since: float | None = None
    #: Last time the model had any load (arrivals, queue or in-flight): the scale-to-zero timer.
    active_at: float | None = None
    #: How long replicas took from being asked for to serving, as observed (a running average).
    startup_s: float | None = None
    #: The replicas per shape the last decision asked for.
    last_counts: Mapping[str, int] = field(default_factory=dict)

    # ----------------------------------------------------------------------- windows
    def with_sample(self, now: float, rate: float, window: float) -> ScalingState:
        kept = (*tuple(s for s in self.samples if s[0] > now - window - 1e-09), (now, rate))
        return dataclasses.replace(self, samples=kept)

    def mean_rate(self, now: float, window: float) -> float:
        """Mean of the samples in the last ``window`` seconds (0 without samples)."""
        rates = [r for t, r in self.samples if t > now - window - 1e-9]
        return sum(rates) / len(rates) if rates else 0.0

    def with_recommendation(self, now: float, capacity: float, up_window: float, down_window: float) -> ScalingState:
        return dataclasses.replace(
            self,
            down_envelope=_push(self.down_envelope, now, capacity, down_window, keep_max=True),
            up_envelope=_push(self.up_envelope, now, capacity, up_window, keep_max=False),
        )

    def window_max(self) -> float:
        return self.down_envelope[0][1] if self.down_envelope else 0.0

    def window_min(self) -> float:
        return self.up_envelope[0][1] if self.up_envelope else math.inf

    def high_water_now(self, now: float, half_life: float) -> float:
        if self.high_water_at is None or self.high_water <= 0:
            return 0.0
        return float(self.high_water * 0.5 ** (max(0.0, now - self.high_water_at) / half_life))

    def reset(self, now: float) -> ScalingState:
        """A fresh history from ``now`` (after the clock went backwards), keeping the last counts."""
        return ScalingState(started_at=now, last_now=now, active_at=now, last_counts=dict(self.last_counts))

    # ----------------------------------------------------------------------- persistence
    def shifted(self, delta: float) -> ScalingState:
        """The same state on a clock ``delta`` seconds ahead of this one's (every time moved by
        ``delta``; durations unchanged). The operator stores its state relative to the moment it
        was written (``shifted(-now)``) and a new leader continues on its own monotonic clock with
        ``shifted(its now - the seconds since the write)``, so no window jumps across a restart."""

        def t(v: float | None) -> float | None:
            return None if v is None else v + delta

        def pairs(p: Pairs) -> Pairs:
            return tuple((a + delta, b) for a, b in p)

        return dataclasses.replace(
            self, samples=pairs(self.samples), down_envelope=pairs(self.down_envelope),
            up_envelope=pairs(self.up_envelope), panic_until=t(self.panic_until), high_water_at=t(self.high_water_at),
            started_at=t(self.started_at), last_now=t(self.last_now), pending_since=t(self.pending_since),
            active_at=t(self.active_at))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (rounded to milliseconds and 6 significant places: it lives in status)."""
        return {
            "version": STATE_VERSION,
            "samples": [[_t(t), _v(v)] for t, v in self.samples],
            "downEnvelope": [[_t(t), _v(v)] for t, v in self.down_envelope],
            "upEnvelope": [[_t(t), _v(v)] for t, v in self.up_envelope],
            "panicUntil": _t(self.panic_until),
            "highWater": _v(self.high_water),
            "highWaterAt": _t(self.high_water_at),
            "startedAt": _t(self.started_at),
            "lastNow": _t(self.last_now),
            "pendingSince": _t(self.pending_since),
            "activeAt": _t(self.active_at),
            "startupSeconds": _t(self.startup_s),
            "lastCounts": dict(sorted(self.last_counts.items())),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ScalingState:
        """The state :meth:`to_dict` wrote; ``ValueError`` naming the field for anything else."""
        if not isinstance(raw, Mapping):
            raise ValueError("scaling state: expected a mapping")
        if raw.get("version") != STATE_VERSION:
            raise ValueError(f"scaling state: version: expected {STATE_VERSION}, got {raw.get('version')!r}")
        counts = raw.get("lastCounts", {})
        if not isinstance(counts, Mapping) or not all(
                isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for k, n in counts.items()):
            raise ValueError("scaling state: lastCounts: expected {shape: replicas >= 0}")
        return cls(
            samples=_pairs(raw, "samples"),
            down_envelope=_pairs(raw, "downEnvelope"),
            up_envelope=_pairs(raw, "upEnvelope"),
            panic_until=_opt(raw, "panicUntil"),
            high_water=_opt(raw, "highWater") or 0.0,
            high_water_at=_opt(raw, "highWaterAt"),
            started_at=_opt(raw, "startedAt"),
            last_now=_opt(raw, "lastNow"),
            pending_since=_opt(raw, "pendingSince"),
            active_at=_opt(raw, "activeAt"),
            startup_s=_opt(raw, "startupSeconds"),
            last_counts=dict(counts),
        )


def _push(env: Pairs, now: float, value: float, window: float, keep_max: bool) -> Pairs:
    items = [p for p in env if p[0] > now - window - 1e-9]
    while items and (items[-1][1] <= value if keep_max else items[-1][1] >= value):
        items.pop()
    items.append((now, value))
    return tuple(items)


def _t(t: float | None) -> float | None:
    return None if t is None else round(t, 3)


def _v(v: float) -> float:
    return float(f"{v:.6g}")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"scaling state: {name}: expected a finite number, got {value!r}")
    return float(value)


def _opt(raw: Mapping[str, Any], name: str) -> float | None:
    value = raw.get(name)
    return None if value is None else _number(value, name)


def _pairs(raw: Mapping[str, Any], name: str) -> Pairs:
    value = raw.get(name, [])
    if not isinstance(value, list):
        raise ValueError(f"scaling state: {name}: expected a list of [time, value] pairs")
    out = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"scaling state: {name}[{i}]: expected [time, value]")
        out.append((_number(pair[0], f"{name}[{i}]"), _number(pair[1], f"{name}[{i}]")))
    return tuple(out)

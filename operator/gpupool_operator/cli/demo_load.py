"""The demo's load: a slice of a real request trace replayed against a pool's ready endpoints.

The pure part (:func:`schedule`, :func:`summarize`) turns a :class:`~gpupool_operator.sim.trace.Trace`
into send times scaled to what this machine can serve, and the operator's Events into the scale-up
and scale-down times the demo reports; it is tested without a cluster. :class:`Replayer` sends the
requests (tritonclient, asynchronous, bounded in flight) to whatever ready endpoints the pool has
on real nodes at the time (KWOK pods serve nothing and are never sent to or counted).

The default trace is the Azure LLM inference trace 2023 (code completion), CC-BY 4.0; its
attribution is printed wherever the demo shows results from it (:data:`AZURE_ATTRIBUTION`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpupool_operator.sim.trace import Trace, TraceError, parse_csv

__all__ = ["AZURE_ATTRIBUTION", "DEFAULT_TRACE", "LoadSummary", "Replayer", "Schedule", "load_trace",
           "schedule", "summarize"]

DEFAULT_TRACE = Path(__file__).resolve().parents[3].parent / "shared" / "traces" / "azure-llm-2023-code.csv"
AZURE_ATTRIBUTION = ("requests: Azure LLM inference trace 2023 (code), Azure Public Dataset, CC-BY 4.0; "
                     "Patel et al., \"Splitwise: Efficient generative LLM inference using phase splitting\", "
                     "ISCA 2024")


@dataclass(frozen=True, slots=True)
class Schedule:
    """When to send each request (seconds from the start of the load), and where they came from."""

    offsets: tuple[float, ...]
    source: str
    attribution: str | None
    trace_start_s: float
    """Where in the trace the slice starts (its busiest stretch)."""
    speedup: float
    """Trace seconds per demo second."""

    @property
    def seconds(self) -> float:
        return self.offsets[-1] if self.offsets else 0.0

    @property
    def rate(self) -> float:
        return len(self.offsets) / max(self.seconds, 1e-9) if self.offsets else 0.0


def load_trace(path: Path = DEFAULT_TRACE) -> Trace:
    attribution = AZURE_ATTRIBUTION if path.name.startswith("azure-llm-2023") else None
    with path.open() as fh:
        return parse_csv(fh, path.name, work="unit", attribution=attribution)


def schedule(trace: Trace, rate_per_s: float, seconds: float, max_requests: int | None = None) -> Schedule:
    """The busiest ``seconds`` of ``trace`` after compressing its time so its mean rate becomes
    ``rate_per_s``, re-based to 0; at most ``max_requests`` (evenly thinned beyond that), so
    bursts and gaps keep the trace's shape while the volume fits the machine."""
    if rate_per_s <= 0 or seconds <= 0:
        raise ValueError("rate_per_s and seconds must be positive")
    if len(trace) == 0:
        raise TraceError(f"{trace.name}: no requests")
    speedup = rate_per_s * trace.duration / len(trace)
    span = seconds * speedup  # trace seconds in the slice
    times = trace.times
    best, best_start, j = 0, 0, 0
    for i, t in enumerate(times):  # the window [t, t + span) holding the most arrivals
        while j < len(times) and times[j] < t + span:
            j += 1
        if j - i > best:
            best, best_start = j - i, i
    start = times[best_start]
    picked = [(t - start) / speedup for t in times[best_start:best_start + best]]
    if max_requests is not None and len(picked) > max_requests > 0:
        step = len(picked) / max_requests
        picked = [picked[int(k * step)] for k in range(max_requests)]
    return Schedule(tuple(picked), trace.name, trace.attribution, start, speedup)


@dataclass(frozen=True, slots=True)
class LoadSummary:
    sent: int
    served: int
    failed: int
    dropped: int
    """Due while ``max_in_flight`` were outstanding: not sent (counted apart from failures)."""
    scale_ups: tuple[tuple[float, str], ...]
    """(seconds after the load started, the Event's message), in order."""
    scale_downs: tuple[tuple[float, str], ...]

    def lines(self) -> list[str]:
        out = [f"requests: {self.sent} sent, {self.served} served by real workers, {self.failed} failed, "
               f"{self.dropped} not sent (too many in flight)"]
        for reason, events in (("ScaledUp", self.scale_ups), ("ScaledDown", self.scale_downs)):
            if not events:
                out.append(f"  no {reason} Event")
                continue
            out.append(f"  {reason:<10} first at +{events[0][0]:5.1f} s  {events[0][1]}")
            if len(events) > 1:
                out.append(f"  {reason:<10} last at  +{events[-1][0]:5.1f} s  ({len(events)} Events)  {events[-1][1]}")
        return out


def _event_time(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")


def summarize(events: Sequence[Mapping[str, Any]], pool: str, load_started: float, sent: int, served: int,
              failed: int, epoch: Callable[[str], float], dropped: int = 0) -> LoadSummary:
    """The scale Events of ``pool`` since ``load_started`` (a Unix time; ``epoch`` parses an
    Event's timestamp into one), with the request counts."""
    ups: list[tuple[float, str]] = []
    downs: list[tuple[float, str]] = []
    for e in sorted(events, key=_event_time):
        obj = e.get("involvedObject") or {}
        if obj.get("name") != pool or e.get("reason") not in ("ScaledUp", "ScaledDown"):
            continue
        stamp = _event_time(e)
        if not stamp:
            continue
        at = epoch(stamp) - load_started
        if at < -1:  # an Event from before the load (e.g. a kept cluster's earlier run)
            continue
        (ups if e["reason"] == "ScaledUp" else downs).append((max(at, 0.0), str(e.get("message", ""))))
    return LoadSummary(sent, served, failed, dropped, tuple(ups), tuple(downs))


class Replayer:
    """Sends ``plan``'s requests on time to the endpoints ``resolve()`` returns (re-read every
    2 s, so new replicas get traffic as they become ready), at most ``max_in_flight`` at once
    (a request due when that many are outstanding is dropped and counted, never queued here);
    each request carries ``rows`` inputs (an embedding client's batch of texts)."""

    def __init__(self, plan: Schedule, resolve: Callable[[], Sequence[Any]], max_in_flight: int = 64,
                 timeout_s: float = 30.0, rows: int = 1) -> None:
        self.plan = plan
        self.rows = rows
        self.resolve = resolve
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.sent = self.served = self.failed = self.dropped = 0
        #: requests answered per endpoint address (a replica that joined mid-load shows its share)
        self.served_by: dict[str, int] = {}
        self.in_flight = 0
        self.started = 0.0
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: dict[str, tuple[Any, list[Any]]] = {}
        self._thread = threading.Thread(target=self._run, name="gpupool-demo-load", daemon=True)

    def start(self) -> Replayer:
        self.started = time.time()
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout_s)

        def close() -> None:
            for client, _ in list(self._clients.values()):
                with contextlib.suppress(Exception):  # closing a channel that already failed
                    client.close()

        # a gRPC channel's close can block after asynchronous calls: bounded, never the demo's end
        closer = threading.Thread(target=close, name="gpupool-demo-load-close", daemon=True)
        closer.start()
        closer.join(timeout=2.0)

    def _client(self, address: str, model: str) -> tuple[Any, list[Any]]:
        if address not in self._clients:
            import tritonclient.grpc as triton

            from gpupool_operator.local.endpoints import request_inputs

            client = triton.InferenceServerClient(address)
            meta = client.get_model_metadata(model, as_json=True, client_timeout=5)
            self._clients[address] = (client, request_inputs(meta, b"def cost_per_million(inferences):",
                                                                  self.rows))
        return self._clients[address]

    def _finish(self, result: Any, error: Any, address: str = "") -> None:
        with self._lock:
            self.in_flight -= 1
            if error is None:
                self.served += 1
                self.served_by[address] = self.served_by.get(address, 0) + 1
            else:
                self.failed += 1

    def _run(self) -> None:
        t0 = time.monotonic()
        eps: Sequence[Any] = ()
        refreshed = -1e9
        k = 0
        try:
            for offset in self.plan.offsets:
                while not self._stop.is_set() and time.monotonic() - t0 < offset:
                    self._stop.wait(min(0.05, offset - (time.monotonic() - t0)))
                if self._stop.is_set():
                    return
                if time.monotonic() - refreshed > 2.0:
                    with contextlib.suppress(Exception):  # the API server busy: keep the endpoints we had
                        eps = self.resolve() or eps
                    refreshed = time.monotonic()
                with self._lock:
                    if not eps or self.in_flight >= self.max_in_flight:
                        self.dropped += 1
                        continue
                    self.sent += 1
                    self.in_flight += 1
                ep = eps[k % len(eps)]
                k += 1
                try:
                    client, inputs = self._client(ep.address, ep.model)
                    client.async_infer(ep.model, inputs,
                                       lambda result, error, at=ep.address: self._finish(result, error, at),
                                       client_timeout=self.timeout_s)
                except Exception:  # an endpoint that went away: counted, the next request goes on
                    self._clients.pop(ep.address, None)
                    self._finish(None, "unreachable")
            deadline = time.monotonic() + self.timeout_s
            while self.in_flight > 0 and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.1)
        finally:
            self.done.set()

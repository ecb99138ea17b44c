"""Live autoscaling: the core scaling policy on a 2 s tick, fed by the replicas' own metrics, its
decisions carried out by placement.

One :class:`Autoscaler` per operator process, its own asyncio task beside the placement loop; it
acts only while this replica leads (every write also goes through the leader-fenced Kube). Each
tick (``GPUPOOL_SCALING_TICK_SECONDS``, 2 s; a monotonic clock, so a clock step on the host moves
nothing):

1. **Signals** (:mod:`~gpupool_operator.adapters.signals`): every Ready replica's metrics endpoint
   (from its pod's annotations) is scraped concurrently with a short timeout; per model, queue,
   in flight, arrival and completion rates, p99 and $/1M from what the workers served.
2. **Decision** (:func:`~gpupool_operator.core.scaling.decide`, unchanged from ``gpupool
   simulate``): the model's targets from its InferencePool, its shapes as the placement engine
   offers them (``offers_for``, once per snapshot), its replicas ready and pending per shape.
3. **Placement**: the decision's replica count becomes the model's desired replicas (the loop's
   ``ReplicaPolicy``), and the placement loop is poked: added replicas go to the cheapest shape
   with room, removed ones free the most expensive capacity first, as every placement does.
4. **Report**: ``status.scaling`` of the pool (signals, decision, and the policy's state, its
   times relative to the write, every ``GPUPOOL_SCALING_STATE_SECONDS`` and on every change),
   an Event per scale up or down (from, to, shape, why) and Prometheus series.

A model is scaled only once one of its replicas has reported metrics: until then (a KWOK pod
serves nothing) it runs ``minReplicas`` as before, and its status shows no load. After that,
missing, stale or partial data holds the replica count (never a scale-down).

A new leader (or a restarted operator) reads ``status.scaling`` before its first decision and
continues each model's windows, panic and pending scale-up where the last writer left them.

``GPUPOOL_SCRAPE_OVERRIDE`` replaces the metrics address of replica pods by replica index, for
clusters whose pods cannot serve (KWOK): a JSON object ``{"<namespace>/<pool>/<model>":
["http://127.0.0.1:9101/metrics", ...]}``; replica ``i`` is read at entry ``i`` (none past the
end). It exists for tests and demos that run real workers on the host next to KWOK pods, and a
pod read this way is only as "serving" as the worker behind that address.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpupool_operator.adapters import names
from gpupool_operator.adapters.autoscale_record import (
    DECISIONS,
    SCRAPES,
    TICK_SECONDS,
    Memory,
    Records,
    export,
    forget,
    read_record,
)
from gpupool_operator.adapters.events import EventRecorder, involved_pool
from gpupool_operator.adapters.kube import Kube, NotLeader
from gpupool_operator.adapters.observe import Observation
from gpupool_operator.adapters.runtimes import QueueSignal, signal_of_pod
from gpupool_operator.adapters.signals import Scraper, SignalBook, Target, model_signals
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.api import InferencePool
from gpupool_operator.core.demand import Demand, Shape, ShapeKind
from gpupool_operator.core.inventory import Holding, Snapshot
from gpupool_operator.core.scaling import (
    DEFAULT_PARAMS,
    Decision,
    ParamError,
    PolicyParams,
    ShapeOffer,
    Signals,
    Targets,
    capacity_within,
    count_covering,
    decide,
    offers_for,
    placed,
    targets_for,
)

__all__ = ["AutoscaleSettings", "Autoscaler", "ScaledReplicas", "autoscale_settings", "kept_on_hold", "pod_shape",
           "room_snapshot"]

log = logging.getLogger("gpupool.autoscale")

class SettingsError(ValueError):
    """An autoscaling variable that cannot be used: the message names it."""


@dataclass(frozen=True)
class AutoscaleSettings:
    """``GPUPOOL_AUTOSCALE`` (on), ``GPUPOOL_SCALING_TICK_SECONDS`` (2), ``GPUPOOL_SCRAPE_TIMEOUT_SECONDS``
    (1), ``GPUPOOL_SCALING_STATE_SECONDS`` (10: how often the state is written when nothing
    changed), ``GPUPOOL_SCRAPE_OVERRIDE`` (see the module doc), ``GPUPOOL_SCALING_PARAMS`` (a JSON
    object of :class:`~gpupool_operator.core.scaling.PolicyParams` fields, e.g. ``{"stable_window_s":
    20}``, validated with the field named)."""

    enabled: bool = True
    tick_s: float = 2.0
    scrape_timeout_s: float = 1.0
    persist_s: float = 10.0
    scrape_override: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    params: PolicyParams = DEFAULT_PARAMS


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number of seconds, such as 2") from None
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"{name}={raw!r}: expected a positive number of seconds")
    return value


def autoscale_settings(env: Mapping[str, str] | None = None) -> AutoscaleSettings:
    env = os.environ if env is None else env
    enabled = env.get("GPUPOOL_AUTOSCALE", "true").strip().lower()
    if enabled not in ("true", "false", "1", "0", "on", "off"):
        raise SettingsError(f"GPUPOOL_AUTOSCALE={enabled!r}: expected true or false")
    override: dict[str, tuple[str, ...]] = {}
    raw = env.get("GPUPOOL_SCRAPE_OVERRIDE", "")
    if raw:
        try:
            doc = json.loads(raw)
        except ValueError as err:
            raise SettingsError(f"GPUPOOL_SCRAPE_OVERRIDE: not JSON ({err})") from None
        if not isinstance(doc, dict) or not all(
                isinstance(k, str) and k.count("/") == 2 and isinstance(v, list) and all(isinstance(u, str) for u in v)
                for k, v in doc.items()):
            raise SettingsError('GPUPOOL_SCRAPE_OVERRIDE: expected {"<namespace>/<pool>/<model>": ["http://...", ...]}')
        override = {k: tuple(v) for k, v in doc.items()}
    params = DEFAULT_PARAMS
    raw = env.get("GPUPOOL_SCALING_PARAMS", "")
    if raw:
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            params = DEFAULT_PARAMS.replace(**doc)
        except (ValueError, TypeError) as err:
            raise SettingsError(f"GPUPOOL_SCALING_PARAMS: {err}") from None
    return AutoscaleSettings(
        params=params,
        enabled=enabled in ("true", "1", "on"),
        tick_s=_seconds(env, "GPUPOOL_SCALING_TICK_SECONDS", 2.0),
        scrape_timeout_s=_seconds(env, "GPUPOOL_SCRAPE_TIMEOUT_SECONDS", 1.0),
        persist_s=_seconds(env, "GPUPOOL_SCALING_STATE_SECONDS", 10.0),
        scrape_override=override,
    )


@dataclass(frozen=True, eq=False)
class ScaledReplicas:
    """The placement loop's replica policy while autoscaling: the scaling loop's decision per
    demand; a model it has not decided on this term keeps the ``desiredReplicas`` its pool's
    ``status.scaling`` last recorded (a restarted or new leader does not drop to ``minReplicas``
    before its first tick); any other model runs ``minReplicas``. Always within min/max."""

    store: Store
    overrides: Mapping[str, int] = field(default_factory=dict)

    def desired(self, pool: InferencePool, model: Any) -> int:
        namespace, name = pool.metadata.namespace or "default", pool.metadata.name or ""
        wanted = self.overrides.get(names.demand_key(namespace, name, model.name))
        if wanted is None:
            stored = ((self.store.get(Kind.POOL, f"{namespace}/{name}") or {}).get("status") or {}).get("scaling")
            for entry in (stored or {}).get("models") or []:
                if isinstance(entry, Mapping) and entry.get("name") == model.name:
                    value = entry.get("desiredReplicas")
                    wanted = value if isinstance(value, int) and not isinstance(value, bool) else None
        if wanted is None:
            wanted = model.min_replicas
        return int(max(model.min_replicas, min(model.max_replicas, wanted)))


def pod_shape(pod: Mapping[str, Any], snapshot: Snapshot) -> Shape | None:
    """The shape a replica pod holds, from its resource limits and its node's GPU product."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    limits: dict[str, Any] = {}
    for c in containers:
        limits.update((c.get("resources") or {}).get("limits") or {})
    node_name = spec.get("nodeName") or ((pod.get("metadata") or {}).get("annotations") or {}).get(names.ANN_NODE)
    node = next((n for n in snapshot.nodes if n.name == node_name), None)
    product = (node.product or node.product_label) if node is not None else ""
    for key in limits:
        if key.startswith("nvidia.com/mig-"):
            return Shape(ShapeKind.MIG, product or "", profile=key.removeprefix("nvidia.com/mig-"))
    if "nvidia.com/gpu" in limits:
        try:
            gpus = int(str(limits["nvidia.com/gpu"]))
        except ValueError:
            return None
        return Shape(ShapeKind.GPU, product or "", gpus=gpus)
    return Shape(ShapeKind.CPU)


def _offer_key(shape: Shape | None, offers: Sequence[ShapeOffer]) -> str:
    """The offer a replica's shape is one of (CPU replicas match on kind; MIG on product and
    profile; GPUs on product and count); a shape no offer has keeps its own description."""
    if shape is None:
        return "unknown shape"
    for o in offers:
        s = o.shape
        if s.kind is not shape.kind:
            continue
        if shape.kind is ShapeKind.CPU or (s.product == shape.product and s.profile == shape.profile
                                            and (shape.kind is ShapeKind.MIG or s.gpus == shape.gpus)):
            return o.key
    return shape.describe()


class Autoscaler:
    """See the module doc. ``attach`` wires it to a :class:`~gpupool_operator.adapters.loop.PlacementLoop`."""

    def __init__(self, loop: Any, kube: Kube, store: Store, settings: AutoscaleSettings,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.loop, self.kube, self.store, self.settings, self.params = loop, kube, store, settings, settings.params
        self.clock, self.wall = clock, wall
        self.book = SignalBook()
        self.scraper = Scraper(settings.scrape_timeout_s, clock=clock)
        self.events = EventRecorder(kube)
        self.models: dict[str, Memory] = {}
        self.overrides: dict[str, int] = {}
        self.loaded: set[str] = set()  # pools whose stored state this term has read
        self.records = Records(kube, store, settings.persist_s, wall)
        self.seen: Observation | None = None
        #: (snapshot, measured demands, offers per demand): offers are computed once per snapshot
        self.offers: tuple[Snapshot | None, frozenset[str], dict[str, tuple[ShapeOffer, ...]]] = (
            None, frozenset(), {})
        self.leading = False
        self.ticks = 0
        self.last_tick: dict[str, Any] = {}  # what the last tick did (tests, the benchmark)

    @classmethod
    def attach(cls, loop: Any, settings: AutoscaleSettings | None = None) -> Autoscaler | None:
        """An autoscaler hooked into ``loop`` (``None`` when ``GPUPOOL_AUTOSCALE`` is off)."""
        settings = settings or autoscale_settings()
        if not settings.enabled:
            return None
        scaler = cls(loop, loop.kube, loop.store, settings)
        loop.autoscaler = scaler
        loop.observer.policy = ScaledReplicas(loop.store)
        return scaler

    # -- the placement loop's hook --------------------------------------------------------------
    def observed(self, seen: Observation, loads: Mapping[str, Any]) -> dict[str, Any]:
        """Called by the loop's observe stage: keeps the cycle's view for the next tick and gives
        back the loads status shows, the scaling loop's (2 s fresh) where it has them."""
        self.seen = seen
        return {**loads, **{k: m.load for k, m in self.models.items() if m.load is not None}}

    # -- the task ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, is_leader: Callable[[], bool]) -> None:
        try:
            while not stop.is_set():
                began = self.clock()
                if is_leader():
                    if not self.leading:
                        self._new_term()
                    try:
                        await self.tick()
                    except NotLeader:
                        log.info("scaling tick stopped: no longer the leader")
                    except Exception:  # a tick must never end the task: log and try again next tick
                        log.exception("scaling tick failed; retrying")
                elif self.leading:
                    self._new_term(leading=False)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.05, self.settings.tick_s - (self.clock() - began)))
        finally:
            await self.scraper.close()

    def _new_term(self, leading: bool = True) -> None:
        """Forget what this process decided: a new term continues from the pools' status."""
        self.leading = leading
        self.models, self.loaded, self.overrides = {}, set(), {}
        self.records.written = {}
        self.loop.observer.policy = ScaledReplicas(self.store)

    async def tick(self) -> None:
        seen = self.seen
        if seen is None:
            return
        began = self.clock()
        pods = {f"{p['metadata'].get('namespace')}/{p['metadata']['name']}": p for p in seen.pods}
        by_demand: dict[str, list[Any]] = {}
        for r in seen.replicas:
            if not r.deleting and not r.finished:
                by_demand.setdefault(r.demand, []).append(r)
        targets = [t for rs in by_demand.values() for r in rs if r.ready and (t := self._target(r, pods)) is not None]
        readings = await self.scraper.sweep(self.book, targets)
        for reading in readings.values():
            SCRAPES.labels(outcome="ok" if reading.sample is not None else "failed").inc()
        now = self.clock()
        restored = False
        for key in seen.pools:
            if key not in self.loaded:
                self.loaded.add(key)
                for demand, (memory, want) in read_record(self.store, key, now, self.wall()).items():
                    self.models[demand], self.overrides[demand], restored = memory, want, True
        live = {d.key for d in seen.demands}
        for gone in [k for k in self.models if k not in live]:  # pools or models deleted
            del self.models[gone]
            self.overrides.pop(gone, None)
            forget(gone)
        if restored:
            self.loop.observer.policy = ScaledReplicas(self.store, dict(self.overrides))
        offers = await self._offers(seen)
        changed = False
        decided: dict[str, str] = {}
        for entry in seen.pools.values():
            pool = entry.pool
            if pool is None:
                continue
            spent = {m.name: d.decision.usd_per_hour for m in pool.spec.models
                     if (d := self.models.get(names.demand_key(entry.namespace, entry.name, m.name))) is not None
                     and d.decision is not None}
            for model in pool.spec.models:
                demand = names.demand_key(entry.namespace, entry.name, model.name)
                why = self._decide(seen, pool, model.name, demand, by_demand.get(demand, []), pods,
                                   offers.get(demand, ()), now, spent)
                if why is not None:
                    decided[demand] = why
                    changed |= self._apply(demand)
        if changed:
            self.loop.observer.policy = ScaledReplicas(self.store, dict(self.overrides))
            self.loop.poke()
        await self.records.write(seen.pools, self.models, now)
        await self._post_events()
        export(self.models)
        self.ticks += 1
        TICK_SECONDS.set(self.clock() - began)
        self.last_tick = {"at": now, "targets": len(targets), "decided": decided, "changed": changed}

    # -- signals and decisions -----------------------------------------------------------------
    def _target(self, replica: Any, pods: Mapping[str, Any]) -> Target | None:
        pod = pods.get(replica.key)
        if pod is None:
            return None
        model = replica.demand.rsplit("/", 1)[-1]
        signal = signal_of_pod(pod)
        override = self.settings.scrape_override.get(replica.demand)
        if override is not None:
            if replica.index is None or replica.index >= len(override):
                return None
            if signal is None:
                signal = QueueSignal("gpupool", "gpupool_worker_queue_depth", 0, model_label="model")
            return Target(replica.key, replica.demand, model, override[replica.index], signal)
        if signal is None or not replica.ip:
            return None
        return Target(replica.key, replica.demand, model, f"http://{replica.ip}:{signal.port}{signal.path}", signal)

    async def _offers(self, seen: Observation) -> dict[str, tuple[ShapeOffer, ...]]:
        """Each demand's shapes as placement offers them, computed once per snapshot (off the
        event loop: it runs the solver once per shape)."""
        measured = frozenset(k for k, m in self.models.items() if m.measured)
        if self.offers[0] is seen.snapshot and self.offers[1] == measured:
            return self.offers[2]
        wanted = [d for d in seen.demands if d.key in measured]

        def compute() -> dict[str, tuple[ShapeOffer, ...]]:
            out: dict[str, tuple[ShapeOffer, ...]] = {}
            for d in wanted:
                pool = seen.pools.get(d.key.rsplit("/", 1)[0])
                if pool is None or pool.pool is None:
                    continue
                spec = pool.pool.spec.model(d.key.rsplit("/", 1)[1])
                out[d.key] = offers_for(_unbudgeted(d), room_snapshot(seen.snapshot, d.key), spec.max_replicas)[0]
            return out

        result = await self.kube.run(compute) if wanted else {}
        self.offers = (seen.snapshot, measured, result)
        return result

    def _decide(self, seen: Observation, pool: InferencePool, model: str, demand: str, replicas: Sequence[Any],
                pods: Mapping[str, Any], offers: Sequence[ShapeOffer], now: float,
                spent: dict[str, float]) -> str | None:
        """One model's decision this tick; returns its reason (``None``: not scaled by the policy)."""
        m = self.models.setdefault(demand, Memory())
        ready: dict[str, str] = {}
        pending: dict[str, int] = {}
        for r in replicas:
            key = _offer_key(pod_shape(pods.get(r.key) or {}, seen.snapshot), offers)
            if r.ready:
                ready[r.key] = key
            else:
                pending[key] = pending.get(key, 0) + 1
        signals, load, _ = model_signals(self.book, model, ready, pending, now, self.params.stale_after_s)
        m.signals, m.load = signals, load
        if load is not None and not m.measured:
            m.measured = True
            return None  # offers next tick
        if not m.measured:
            return None
        try:
            targets = targets_for(pool, model, seen.config.spec.defaults)
        except ParamError as err:
            log.warning("%s: not scaled: %s", demand, err)
            return None
        if targets.budget_usd_per_hour is not None:  # the pool's budget, less what its other models cost
            others = sum(v for k, v in spent.items() if k != model)
            targets = _with_budget(targets, max(0.0, targets.budget_usd_per_hour - others))
        if not offers:
            return None
        d = _as_placed(decide(m.state, signals, targets, offers, now, self.params), offers, signals, targets,
                       self.params)
        d = kept_on_hold(d, m.decision, targets.max_replicas)
        spent[model] = d.usd_per_hour
        before = signals.ready + signals.pending
        # One Event per new decision: a scale-up placement has no room for yet stays one decision
        # (not an Event every tick), and a desired count that falls back before its replicas ever
        # started is a scale-down too.
        asked = m.decision.total if m.decision is not None else before
        if d.total != asked:
            direction = "up" if d.total > asked else "down"
            DECISIONS.labels(direction=direction).inc()
            m.last_scale_at = datetime.fromtimestamp(self.wall(), UTC)
            ns, pool_name, _ = names.split_demand_key(demand)
            uid = (seen.pools.get(f"{ns}/{pool_name}") or _NoPool).uid
            # the reason reads "scale up 1 -> 3 (+2 1x A100-80GB): panic: ...": from, to, the policy's
            # shapes and why (placement then puts the replicas where there is room, cheapest first)
            why = d.reason if d.total != before else f"desired {asked} -> {d.total} ({before} running): {d.reason}"
            self.events.record(involved_pool(ns, pool_name, uid), False, f"Scaled{direction.capitalize()}",
                               f"{model}: {why}")
        m.changed |= m.decision is None or m.decision.total != d.total or m.decision.panic != d.panic
        m.decision, m.state = d, d.state
        return d.reason

    def _apply(self, demand: str) -> bool:
        m = self.models[demand]
        if m.decision is None:
            return False
        # Not to zero: no replica would be left to see the next request, and gpupool has no
        # activator holding requests at zero yet, so scaleToZero keeps one replica live.
        want = max(1, m.decision.total)
        if self.overrides.get(demand) == want:
            return False
        self.overrides[demand] = want
        return True

    async def _post_events(self) -> None:
        events = self.events.take()
        if events:
            await asyncio.gather(*(self.kube.run(self.events.post, *e) for e in events))

class _NoPool:
    uid = ""


def _unbudgeted(d: Demand) -> Demand:
    import dataclasses

    return dataclasses.replace(d, budget=None)


def _with_budget(targets: Targets, budget: float) -> Targets:
    import dataclasses

    return dataclasses.replace(targets, budget_usd_per_hour=budget)


def kept_on_hold(d: Decision, last: Decision | None, max_replicas: int) -> Decision:
    """A hold (missing, partial or stale data, a clock step, a scale-up still pending) keeps the
    replicas last asked for: the policy holds what runs and starts, so a scale-up placement has no
    room for yet (no pod, so not pending) would otherwise fall back to what runs, a scale-down no
    decision made, and come back at the next decision: desired replicas flapping, with an Event
    each way. Never above ``max_replicas`` (the spec may have lowered it)."""
    if not d.held or last is None or d.total >= last.total or last.total > max_replicas:
        return d
    return dataclasses.replace(d, replicas=dict(last.replicas), usd_per_hour=last.usd_per_hour,
                               reason=f"{d.reason}; keeping the {last.total} replicas asked")


def _as_placed(d: Decision, offers: Sequence[ShapeOffer], signals: Signals, targets: Targets,
               params: PolicyParams) -> Decision:
    """The decision as placement will carry it out: placement gets the count, fills it by price
    per replica (``core.scaling.fill``), so a scale-up grows until that mix serves what the
    policy's own mix would have (within maxReplicas and the budget); the reason says so."""
    current = signals.counts()
    if d.total <= sum(current.values()):
        return d
    queue_mode = all(o.throughput is None for o in offers)
    caps = {o.key: 1.0 if queue_mode else capacity_within(o, targets.max_batch_size, targets.objective_s,
                                                         params.fixed_fraction(o.shape.kind))[0] for o in offers}
    want = count_covering(offers, caps, current, d.total, d.capacity, targets.max_replicas,
                          targets.budget_usd_per_hour)
    mix = placed(offers, current, want)
    price = {o.key: o.usd_per_hour for o in offers}
    note = ""
    if mix != d.replicas:
        shapes = ", ".join(f"{n} {k}" for k, n in mix.items())
        note = (f"; placement fills by price per replica: {want} replicas ({shapes}) serving "
                f"{sum(n * caps.get(k, 0.0) for k, n in mix.items()):.3g} req/s")
    return dataclasses.replace(d, replicas=mix, reason=d.reason + note,
                               usd_per_hour=sum(n * price.get(k, 0.0) for k, n in mix.items()))


def room_snapshot(snapshot: Snapshot, demand: str) -> Snapshot:
    """``snapshot`` as one model's room is measured in: every other model's replicas hold their
    capacity as anyone else's pods do, while the model's own replicas are placement's to keep or
    move. ``offers_for`` solves for one shape of the model alone, and a solve frees the replicas of
    models it is not given, so on the plain snapshot a shape's room counted every other pool's
    capacity as free, and the model's own replicas twice (the demo's quickstart saw room for three
    1-core replicas on its 2-core node)."""
    def held(h: Holding) -> Holding:
        return h if h.owner is None or h.owner == demand else dataclasses.replace(h, owner=None)

    nodes = tuple(dataclasses.replace(n, holdings=tuple(held(h) for h in n.holdings))
                  if any(h.owner not in (None, demand) for h in n.holdings) else n for n in snapshot.nodes)
    return dataclasses.replace(snapshot, nodes=nodes)

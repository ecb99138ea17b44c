"""The global placement loop: one cycle = observe -> decide -> act -> report.

Every pool competes for the same GPUs, so there is one loop for the whole cluster (Kueue's
scheduling cycle), not one per object. Watch events only *poke* it; bursts coalesce into one cycle.
A cycle is idempotent: it derives everything from the store (kept current by the watches and by
write-through of its own writes), so running it twice, or after a crash at any point, converges
to the same objects (deterministic pod names, uid-guarded deletes, MIG steps recorded on the
node, status written only when it changes). Each stage is its own module:

* observe (``observe.py``): one snapshot of nodes, pods, Services, pools and the configuration;
* decide (``core/incremental.py`` plans, ``core/decide.py`` turns plan and facts into writes);
* act (``act.py``): the writes, one pool's refusals kept to that pool;
* report (``report.py``): status, conditions, Events, metrics.

A pool whose writes the API server refused is backed off (``core/backoff.py``) and Degraded with
the server's reason while the others progress in the same cycle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gpupool_operator.adapters import metrics
from gpupool_operator.adapters.act import Actuator, Outcome
from gpupool_operator.adapters.demands import MinReplicas, ReplicaPolicy
from gpupool_operator.adapters.events import EventRecorder
from gpupool_operator.adapters.kube import Kube
from gpupool_operator.adapters.migconfig import MigConfigWriter
from gpupool_operator.adapters.observe import Observation, Observer
from gpupool_operator.adapters.refused import RefusedCapacity
from gpupool_operator.adapters.report import Reporter
from gpupool_operator.adapters.settings import OperatorSettings
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.adapters.workerstats import StatsCollector
from gpupool_operator.api import API_VERSION, MigLayoutPolicy
from gpupool_operator.core.backoff import Backoff, after_refusal
from gpupool_operator.core.decide import Decision, Rules, Situation, decide
from gpupool_operator.core.incremental import Planning
from gpupool_operator.core.plan import ActionKind as K
from gpupool_operator.core.plan import Plan
from gpupool_operator.core.relayout import MigRules
from gpupool_operator.core.solver import Options, options_from_config

__all__ = ["CycleReport", "PlacementLoop"]

log = logging.getLogger("gpupool.loop")
LISTS = {Kind.NODE: "/api/v1/nodes", Kind.POD: "/api/v1/pods", Kind.POOL: f"/apis/{API_VERSION}/inferencepools",
         Kind.CONFIG: f"/apis/{API_VERSION}/gpupoolconfigs", Kind.SERVICE: "/api/v1/services"}


@dataclass
class CycleReport:
    """What one cycle did (logged, exported as metrics, asserted by tests and the benchmark)."""

    started: float = 0.0
    seconds: float = 0.0
    plan_seconds: float = 0.0  # snapshot + solve, the CPU part; the rest is API round trips
    requests: int = 0
    created: int = 0
    deleted: int = 0
    ungated: int = 0
    relabeled: int = 0
    statuses: int = 0
    unplaced: int = 0
    refused: int = 0  # pools whose writes the API server refused this cycle
    cost_per_hour: float = 0.0
    store_version: int = 0
    mode: str = ""  # how the plan was made: full, replan, kept or cached (core/incremental.py)


class PlacementLoop:
    """Runs placement cycles while this replica leads; ``poke()`` asks for one soon."""

    def __init__(self, kube: Kube, store: Store, settings: OperatorSettings, policy: ReplicaPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube, self.store, self.settings, self.clock = kube, store, settings, clock
        self.observer = Observer(store, policy or MinReplicas(), settings.mig_cooldown_s)
        self.planning = Planning(Options(move_penalty=settings.move_penalty), settings.resync_s)
        self.events = EventRecorder(kube)
        mig = MigConfigWriter(kube, settings.mig_namespace, settings.mig_config_map)
        self.actuator = Actuator(kube, store, self.events, mig, settings.worker, settings.concurrency)
        self.reporter = Reporter(kube, store, self.events, settings.concurrency)
        self.refused = RefusedCapacity(settings.refused_cooldown_s)
        self.stats = StatsCollector(settings.stats_period_s, settings.stats_timeout_s)
        self.backoffs: dict[str, Backoff] = {}
        self.last_plan: Plan | None = None
        self.last_report: CycleReport | None = None
        self.last_ok = False
        self.cycles = 0
        self.beat = time.monotonic()  # the loop's heartbeat (liveness)
        self.idle = asyncio.Event()
        self._wake = asyncio.Event()
        self._seeded = False
        self._timer: asyncio.TimerHandle | None = None
        self._stage = "observe"

    def poke(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event, is_leader: Callable[[], bool]) -> None:
        """Cycle whenever poked (debounced) or every ``resync_s``, while ``is_leader()``."""
        while not stop.is_set():
            self.beat = time.monotonic()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.resync_s)
            except TimeoutError:
                self.planning.full_next = True  # the periodic resync always solves afresh (cool-downs expire)
            if stop.is_set():
                break
            if not is_leader():
                self._seeded, self.last_ok = False, False  # a new term starts from a fresh list
                self.planning.reset()
                self._wake.clear()
                self.idle.set()
                await asyncio.sleep(0.2)
                continue
            await asyncio.sleep(self.settings.debounce_s)
            self._wake.clear()
            self.idle.clear()
            try:
                if not self._seeded:
                    await self.seed()
                await self.cycle()
                self.last_ok = True
            except Exception as err:  # a cycle must never kill the loop: count, log, back off, retry
                self.last_ok = False
                metrics.FAILURES.labels(stage=self._stage, reason=type(err).__name__).inc()
                log.exception("placement cycle failed in %s; retrying", self._stage)
                await asyncio.sleep(1.0)
                self._wake.set()
            finally:
                if not self._wake.is_set():
                    self.idle.set()

    async def seed(self) -> None:
        """List everything once, so the first cycle of a term sees the whole cluster."""
        self._stage = "observe"
        for kind, path in LISTS.items():
            selector = "app.kubernetes.io/managed-by=gpupool" if kind is Kind.SERVICE else None
            items, version = await self.kube.run(self.kube.list, path, selector)
            self.store.seed(kind, items, version)
        self._seeded = True

    async def cycle(self) -> CycleReport:
        started, before = time.monotonic(), self.kube.total_requests
        now = self.clock()
        report = CycleReport(started=now, store_version=self.store.version)
        self._stage = "observe"
        seen = await self.observe(now)
        self._stage = "decide"
        plan_started = time.monotonic()
        decision, report.mode = await self.decide(seen)
        report.plan_seconds = time.monotonic() - plan_started
        self._stage = "act"
        outcome = await self.actuator.apply(decision, seen)
        if outcome.fenced:
            log.warning("stopped writing mid-cycle: this replica is no longer the leader")
            return report
        applied = self.planning.carried_out(decision.plan, outcome.created, outcome.stopped,
                                            failed=outcome.stale)
        self.refused.add(seen, decision.refused, now)
        self._back_off(seen, outcome, now)
        self._stage = "report"
        refusals = {k: dataclasses.replace(b.refusal, message=b.refusal.message + self._retry(b, now))
                    for k, b in self.backoffs.items()}
        report.statuses = await self.reporter.report(seen, applied, outcome.created, refusals)
        self._wake_at(decision, seen, now)
        self.last_plan = applied
        self._finish(report, outcome, applied, started, before)
        return report

    async def observe(self, now: float) -> Observation:
        seen = await self.observer.observe(now, self.kube.run, self.refused.phantoms(now))
        self.stats.watch(seen.replicas)
        loads = self.stats.loads(seen.replicas, now)
        # -- live autoscaling hook (adapters/autoscale.py, issue 12): the scaling task decides on
        #    this cycle's view and sets the observer's replica policy; status shows its fresher loads.
        if (scaler := getattr(self, "autoscaler", None)) is not None:
            loads = scaler.observed(seen, loads)
        # what the workers' last background scrape says they cannot load (never read in the cycle)
        return dataclasses.replace(seen, loads=loads, worker_failures=self.stats.load_failures(seen.replicas, now))

    async def decide(self, seen: Observation) -> tuple[Decision, str]:
        """Plan (off the event loop) and turn the plan into this cycle's writes."""
        policy = seen.config.spec.mig
        rules = MigRules(timeout_s=self.settings.mig_timeout_s, cooldown_s=self.settings.mig_cooldown_s,
                         disabled=policy.policy is MigLayoutPolicy.DISABLED,
                         allowed=tuple(policy.allowed_layouts) if policy.policy is MigLayoutPolicy.ALLOW_LIST else None)
        terminating = {r.key for r in seen.replicas if r.deleting}
        # The GPUPoolConfig's placement settings (migSlicePricing, mig.policy and its allow-list) are
        # solver options; a change to them re-solves from scratch.
        options, unusable = options_from_config(seen.config, Options(move_penalty=self.settings.move_penalty))
        if options != self.planning.options:
            if unusable:
                log.warning("mig.allowedLayouts: %s name no layout the catalog knows; they are never set",
                            ", ".join(unusable))
            self.planning.options = options
            self.planning.reset()
        plan, mode = await self.kube.run(
            self.planning.plan, seen.placement_key, seen.snapshot, seen.bases, seen.demands,
            seen.avoid, policy.policy is MigLayoutPolicy.ANY, terminating, time.monotonic())
        situation = Situation(
            now=seen.now, plan=plan, desired=seen.desired, pools=seen.refs, replicas=seen.replicas,
            foreign=seen.foreign, mig_nodes=seen.mig_nodes, nodes=frozenset(seen.nodes),
            schedulable=frozenset(n.name for n in seen.snapshot.nodes if n.schedulable), services=seen.services,
            pod_keys=frozenset(self.store.objects[Kind.POD]),
            held_back=frozenset(k for k, b in self.backoffs.items() if b.active(seen.now)),
            rules=Rules(self.settings.unschedulable_grace_s, rules))
        return decide(situation), mode

    def _back_off(self, seen: Observation, outcome: Outcome, now: float) -> None:
        for pool, refusal in outcome.refusals.items():
            self.backoffs[pool] = after_refusal(self.backoffs.get(pool), refusal, now, self.settings.backoff_base_s,
                                                self.settings.backoff_cap_s)
        for pool in list(self.backoffs):
            if pool not in seen.pools or (pool in outcome.wrote and pool not in outcome.refusals):
                del self.backoffs[pool]

    @staticmethod
    def _retry(b: Backoff, now: float) -> str:
        left = b.until - now
        return f"; retrying in {left:.0f}s" if left > 0.5 else "; retrying now"

    def _wake_at(self, decision: Decision, seen: Observation, now: float) -> None:
        """Poke again when something times out without an event (MIG deadlines and cool-downs,
        refusals' grace, back-offs ending)."""
        times = [t for t in (decision.wake_at, seen.wake_at, *(b.until for b in self.backoffs.values()))
                 if t is not None]
        if not times:
            return
        delay = max(0.05, min(times) - now)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay + 0.05, self.poke)

    def _finish(self, report: CycleReport, outcome: Outcome, plan: Plan, started: float, before: int) -> None:
        report.created = len(outcome.created)
        report.deleted = outcome.done[K.STOP]
        report.ungated = outcome.done[K.UNGATE]
        report.relabeled = outcome.done[K.SET_MIG_LAYOUT]
        report.refused = len(outcome.refusals)
        report.unplaced = sum(u.count for u in plan.unplaced)
        report.cost_per_hour = plan.cost_per_hour
        report.seconds = time.monotonic() - started
        report.requests = self.kube.total_requests - before
        self.cycles += 1
        self.last_report = report
        for stage, reason in outcome.failures:
            metrics.FAILURES.labels(stage=stage, reason=reason).inc()
        for refusal in outcome.refusals.values():
            metrics.FAILURES.labels(stage="act", reason=refusal.reason).inc()
        metrics.CYCLES.inc()
        metrics.CYCLE_SECONDS.observe(report.seconds)
        metrics.PLAN_SECONDS.observe(report.plan_seconds)
        if report.created or report.deleted or report.relabeled or report.ungated or report.statuses or report.refused:
            log.info(
                "cycle %d: %.3fs (%s, plan %.3fs), %d requests, created %d, deleted %d, relabeled %d, ungated %d, "
                "statuses %d, refused %d, unplaced %d, plan %.2f $/h", self.cycles, report.seconds, report.mode,
                report.plan_seconds, report.requests, report.created, report.deleted, report.relabeled,
                report.ungated, report.statuses, report.refused, report.unplaced, report.cost_per_hour)

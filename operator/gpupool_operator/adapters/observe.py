"""The observe stage: one consistent view of the cluster per cycle, from the watch-fed store.

:class:`Observer` turns the store's nodes, pods, Services, pools and the GPUPoolConfig into an
:class:`Observation`: parsed pools and their demands, prices, the inventory snapshot (the one
:class:`~gpupool_operator.adapters.snapshot.SnapshotBuilder`), the decide stage's facts (which
pods are the operator's replicas, by ownerReference; other parties' GPU pods; each MIG node's
protocol state; each model's Service) and the latest worker statistics. Everything is memoised
per object version, so a cycle after one change re-reads that change, not the cluster. Only
the event loop's thread touches it, except the snapshot build, which runs alone in the Kube
thread pool while the loop awaits it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpupool_operator.adapters import facts, names
from gpupool_operator.adapters.demands import (
    ParsedPool,
    ReplicaPolicy,
    config_from,
    demands_for,
    parse_pool,
    prices_from,
)
from gpupool_operator.adapters.ownership import PoolIndex, impersonates, owner_uid, owning_pool
from gpupool_operator.adapters.snapshot import SnapshotBuilder, failed_at, version_token
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.adapters.workloads import model_service, service_matches
from gpupool_operator.api import GPUPoolConfig, default_config
from gpupool_operator.core.cost import Prices
from gpupool_operator.core.demand import Demand
from gpupool_operator.core.inventory import Node, Snapshot
from gpupool_operator.core.observed import ForeignPod, MigNode, PoolRef, Replica, ServiceFact
from gpupool_operator.core.relayout import IN_PROGRESS

__all__ = ["Observation", "Observer"]

log = logging.getLogger("gpupool.observe")
Obj = dict[str, Any]


@dataclass(frozen=True)
class Observation:
    """What one cycle knows of the cluster."""

    now: float  # unix seconds
    pools: Mapping[str, ParsedPool]  # live pools that parse, by namespace/name
    broken: Mapping[str, ParsedPool]  # pools whose spec does not parse (their status says why)
    index: PoolIndex  # uid -> namespace/name
    refs: Mapping[str, PoolRef]
    config: GPUPoolConfig
    config_obj: Obj | None
    config_problem: str | None
    prices: Prices
    demands: tuple[Demand, ...]
    nodes: Mapping[str, Obj]
    pods: Sequence[Obj]
    replicas: tuple[Replica, ...]
    foreign: tuple[ForeignPod, ...]
    impostors: tuple[Obj, ...]  # pods that copy our labels without being ours
    mig_nodes: Mapping[str, MigNode]
    services: tuple[ServiceFact, ...]
    snapshot: Snapshot
    bases: Mapping[str, Node]
    placement_key: Any  # equal between cycles when nothing a plan depends on changed
    avoid: Any  # identifies the refused capacity kept out of plans (equal while it is the same)
    loads: Mapping[str, Any] = field(default_factory=dict)  # demand -> worker statistics (workerstats)
    worker_failures: Mapping[str, Any] = field(default_factory=dict)  # demand -> LoadFailures its workers report
    cooling: Mapping[str, float] = field(default_factory=dict)  # node -> when its MIG cool-down ends
    wake_at: float | None = None  # when the view changes without an event (a MIG cool-down ends)

    @property
    def desired(self) -> dict[str, int]:
        return {d.key: d.replicas for d in self.demands}


class Observer:
    """Builds one :class:`Observation` per cycle from ``store`` (memoised, see the module doc)."""

    def __init__(self, store: Store, policy: ReplicaPolicy, mig_cooldown_s: float) -> None:
        self.store = store
        self.policy = policy
        self.mig_cooldown_s = mig_cooldown_s
        self.snapshots = SnapshotBuilder()
        self.mig_seen: dict[str, tuple[str, float]] = {}  # node -> (config the MIG manager worked on, when)
        self._parsed: dict[tuple[Any, ...], ParsedPool] = {}
        self._config: tuple[Obj | None, GPUPoolConfig, str | None, Prices] | None = None
        self._good: GPUPoolConfig | None = None
        self._demands: dict[str, tuple[ParsedPool, Any, Any, list[Demand]]] = {}
        self._pods: dict[tuple[Any, ...], tuple[str | None, str | None, Replica | ForeignPod | None, bool]] = {}
        self._nodes: dict[str, tuple[Any, Any, bool, MigNode | None]] = {}
        self._services: dict[tuple[str, int], list[tuple[str, Obj]]] = {}
        self._last: tuple[Any, Snapshot, dict[str, Node]] | None = None

    def feed(self, kind: Kind, event_type: str | None, obj: Mapping[str, Any]) -> bool:
        """One watch event into the store; remembers the MIG manager taking a request (a pending
        seen between two cycles must not be missed). Returns whether the loop should look again."""
        if kind is Kind.NODE:
            labels = obj.get("metadata", {}).get("labels") or {}
            if labels.get(names.LABEL_MIG_CONFIG_STATE) in IN_PROGRESS:
                config = str(labels.get(names.LABEL_MIG_CONFIG, ""))
                self.mig_seen[str(obj["metadata"]["name"])] = (config, time.time())
        return self.store.apply_event(kind, event_type, obj)

    async def observe(self, now: float, run: Callable[..., Any], phantoms: Sequence[Obj] = (),
                      loads: Mapping[str, Any] | None = None) -> Observation:
        """The cycle's view; ``run`` runs the snapshot build off the event loop; ``phantoms`` are
        stand-in pods for capacity kube-scheduler refused (kept out of plans a while)."""
        parsed = [self._parse(obj) for obj in self.store.all(Kind.POOL)]
        live = {f"{p.namespace}/{p.name}": p for p in parsed if not p.deleting}
        pools = {k: p for k, p in live.items() if p.pool is not None}
        index = {p.uid: k for k, p in live.items() if p.uid}
        config_obj, config, problem, prices = self._configuration()
        demands = tuple(self._demands_for(pools, config))
        nodes = {n["metadata"]["name"]: n for n in self.store.all(Kind.NODE)}
        pods = self.store.all(Kind.POD)
        replicas, foreign, impostors = self._pod_facts(pods, index)
        avoid = tuple(id(p) for p in phantoms)
        cooling = self._cooling(nodes, now)  # a cool-down ending changes the snapshot without an event
        key = (self.store.placement_version, avoid, tuple(sorted(index.items())), id(prices), tuple(cooling))
        if self._last is not None and self._last[0] == key:
            snapshot, bases = self._last[1], self._last[2]
        else:
            everything = [*pods, *phantoms]
            snapshot = await run(self.snapshots.build, list(nodes.values()), everything, prices, now,
                                 self.mig_cooldown_s, index)
            bases = dict(self.snapshots.bases)
            self._last = (key, snapshot, bases)
        return Observation(
            now=now, pools=pools, broken={k: p for k, p in live.items() if p.pool is None}, index=index,
            refs={k: PoolRef(k, p.uid, tuple(m.name for m in p.pool.spec.models))
                  for k, p in pools.items() if p.pool is not None},
            config=config, config_obj=config_obj, config_problem=problem, prices=prices, demands=demands,
            nodes=nodes, pods=pods, replicas=replicas, foreign=foreign, impostors=impostors,
            mig_nodes=self._mig_nodes(nodes, bases), services=self._service_facts(pools),
            snapshot=snapshot, bases=bases, placement_key=key, avoid=avoid, loads=dict(loads or {}),
            cooling=cooling, wake_at=min(cooling.values(), default=None),
        )

    def _cooling(self, nodes: Mapping[str, Obj], now: float) -> dict[str, float]:
        """Nodes whose last MIG re-layout failed and still cool down, with when the cool-down ends."""
        out: dict[str, float] = {}
        for name, obj in nodes.items():
            at = failed_at(obj)
            if at is not None and now < at + self.mig_cooldown_s:
                out[name] = at + self.mig_cooldown_s
        return dict(sorted(out.items()))

    # -- pools and configuration -------------------------------------------------------------
    def _parse(self, obj: Obj) -> ParsedPool:
        """Parse a pool once per (uid, generation, deleting): specs change only with the generation."""
        meta = obj.get("metadata", {})
        key = (meta.get("uid"), meta.get("generation"), bool(meta.get("deletionTimestamp")))
        hit = self._parsed.get(key)
        if hit is None:
            hit = self._parsed[key] = parse_pool(obj)
            if len(self._parsed) > 4 * max(len(self.store.objects[Kind.POOL]), 64):
                self._parsed = {key: hit}
        return hit

    def _configuration(self) -> tuple[Obj | None, GPUPoolConfig, str | None, Prices]:
        """The GPUPoolConfig in force: the stored one when it is valid, else the last valid one
        (else the defaults), and why it was refused. Parsed again only when it changes."""
        obj = self.store.get(Kind.CONFIG, "default")
        if self._config is not None and self._config[0] is obj:
            return self._config
        config, problem = config_from(obj)
        if problem is None:
            self._good = config
        else:
            problem += ("; the last accepted configuration stays in force" if self._good is not None
                        else "; the built-in defaults are in force")
            log.warning(problem)
            config = self._good or default_config()
        self._config = (obj, config, problem, prices_from(config))
        return self._config

    def _demands_for(self, pools: Mapping[str, ParsedPool], config: GPUPoolConfig) -> list[Demand]:
        """:func:`demands_for` every pool, again only for a pool whose parse, the config's defaults
        or the replica policy (compared by identity: replace it to change it) changed."""
        defaults = config.spec.defaults
        cache: dict[str, tuple[ParsedPool, Any, Any, list[Demand]]] = {}
        out: list[Demand] = []
        for key, entry in pools.items():
            assert entry.pool is not None
            hit = self._demands.get(key)
            if hit is not None and hit[0] is entry and hit[1] is defaults and hit[2] is self.policy:
                found = hit[3]
            else:
                found = demands_for([entry.pool], self.policy, defaults)
            cache[key] = (entry, defaults, self.policy, found)
            out += found
        self._demands = cache
        return sorted(out, key=lambda d: d.key)

    # -- pods, nodes, Services -----------------------------------------------------------------
    def _pod_facts(self, pods: Sequence[Obj], index: PoolIndex
                   ) -> tuple[tuple[Replica, ...], tuple[ForeignPod, ...], tuple[Obj, ...]]:
        """Every pod as a replica of ours (owned by a live pool in its namespace), another party's
        GPU pod, or nothing; and the ones that copy our labels without being ours."""
        memo: dict[tuple[Any, ...], tuple[str | None, str | None, Replica | ForeignPod | None, bool]] = {}
        replicas: list[Replica] = []
        foreign: list[ForeignPod] = []
        impostors: list[Obj] = []
        for pod in pods:
            token = version_token(pod)
            hit = self._pods.get(token) if token is not None else None
            uid = hit[0] if hit is not None else owner_uid(pod)
            pool = owning_pool(pod, index, uid or "")
            if hit is None or hit[1] != pool:  # new, changed, or its owner came or went
                fact: Replica | ForeignPod | None = facts.replica(pod, pool) if pool else facts.foreign_pod(pod)
                hit = (uid, pool, fact, pool is None and impersonates(pod))
            if token is not None:
                memo[token] = hit
            if isinstance(hit[2], Replica):
                replicas.append(hit[2])
            elif isinstance(hit[2], ForeignPod):
                foreign.append(hit[2])
            if hit[3]:
                impostors.append(pod)
        self._pods = memo
        return tuple(replicas), tuple(foreign), tuple(impostors)

    def _mig_nodes(self, nodes: Mapping[str, Obj], bases: Mapping[str, Node]) -> dict[str, MigNode]:
        """MIG facts of every MIG-capable node (or one the operator has annotated)."""
        out: dict[str, MigNode] = {}
        memo: dict[str, tuple[Any, Any, bool, MigNode | None]] = {}
        for name, obj in nodes.items():
            base = bases.get(name)
            seen = self._seen_request(name, obj)
            hit = self._nodes.get(name)
            token = version_token(obj)
            if hit is None or token is None or hit[0] != token or hit[1] is not base or hit[2] != seen:
                meta = obj.get("metadata", {})
                capable = (meta.get("labels") or {}).get("nvidia.com/mig.capable") == "true" or any(
                    k.startswith("gpupool.io/mig-") for k in meta.get("annotations") or {})
                layouts = tuple(g.layout for g in base.gpus) if base is not None else None
                fact = facts.mig_node(obj, layouts, seen) if capable else None
                hit = (token, base, seen, fact)
            memo[name] = hit
            if hit[3] is not None:
                out[name] = hit[3]
        self._nodes = memo
        return out

    def _seen_request(self, name: str, obj: Obj) -> bool:
        """Whether the MIG manager was seen working on the node's current label since it was set."""
        seen = self.mig_seen.get(name)
        if seen is None:
            return False
        labels = obj.get("metadata", {}).get("labels") or {}
        raw = (obj.get("metadata", {}).get("annotations") or {}).get(names.ANN_MIG_REQUEST, "")
        at = facts.request_time(raw)
        return seen[0] == labels.get("nvidia.com/mig.config") and at is not None and seen[1] >= at - 1.0

    def _service_facts(self, pools: Mapping[str, ParsedPool]) -> tuple[ServiceFact, ...]:
        """Each model's Service as desired against what the store holds under its name."""
        out: list[ServiceFact] = []
        cache: dict[tuple[str, int], list[tuple[str, Obj]]] = {}
        for key, entry in pools.items():
            assert entry.pool is not None
            memo_key = (entry.uid, entry.generation)
            wanted = self._services.get(memo_key)
            if wanted is None:
                wanted = [(m.name, model_service(entry.pool, entry.uid, m)) for m in entry.pool.spec.models]
            cache[memo_key] = wanted
            for model, manifest in wanted:
                name = f"{entry.namespace}/{manifest['metadata']['name']}"
                found = self.store.get(Kind.SERVICE, name)
                owned = found is not None and owner_uid(found) == entry.uid
                out.append(ServiceFact(key, model, name, exists=found is not None, owned=owned,
                                       matches=found is not None and service_matches(found, manifest)))
        self._services = cache
        return tuple(out)

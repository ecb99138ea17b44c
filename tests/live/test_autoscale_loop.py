"""Live scaling through the operator's own loop: the placement loop and the autoscaler against the
in-memory API (tests/operator/fake_api.py), real worker processes behind the replicas and real
gRPC load from tritonclient.

The fake API's pods serve nothing (like KWOK's), so the replicas' metrics are read from real
workers on this host through the operator's documented ``GPUPOOL_SCRAPE_OVERRIDE`` mapping
(replica ``i`` -> worker ``i``), and the load generator routes requests to the workers whose
replica pods are Ready, as the model's Service would. A fake pod is never what serves: the
workers are, and only while their replica pod exists and is Ready.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from fake_api import FakeKube
from operator_builders import fake_gpu_node
from prometheus_client import REGISTRY

from gpupool_operator.adapters import names
from gpupool_operator.adapters.autoscale import Autoscaler, AutoscaleSettings, ScaledReplicas, autoscale_settings
from gpupool_operator.adapters.loop import PlacementLoop
from gpupool_operator.adapters.settings import OperatorSettings
from gpupool_operator.adapters.store import Kind, Store
from gpupool_operator.api import PoolScaling, default_config
from gpupool_operator.core.scaling import DEFAULT_PARAMS

from .conftest import MODEL, Load, Worker

NS, POOL = "team", "search"
DEMAND = names.demand_key(NS, POOL, MODEL)
#: The policy's own windows shortened so a test sees panic, hold and scale-down in seconds (the
#: operator takes the same from GPUPOOL_SCALING_PARAMS).
PARAMS = DEFAULT_PARAMS.replace(stable_window_s=6.0, panic_window_s=2.0, panic_decay_half_life_s=2.0,
                                hold_startups=0.0, startup_guess_s=1.0, stale_after_s=5.0)
Obj = dict[str, Any]


def pool_body() -> Obj:
    """A CPU tier (4 cores, room for one replica on the 6-core node) and whole A100s."""
    return {
        "apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool",
        "metadata": {"name": POOL, "namespace": NS, "uid": "uid-pool-0", "generation": 1},
        "spec": {
            "scaling": {"scaleDownStabilizationWindow": "3s"},
            "models": [{
                "name": MODEL,
                "source": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2", "format": "SafeTensors"},
                "acceleratorMemory": "1Gi", "minReplicas": 1, "maxReplicas": 3,
                "hardware": [
                    {"type": "CPU", "cpu": {"cores": 4}, "inferencesPerSecond": "5"},
                    {"type": "GPU", "gpu": {"product": "A100-80GB"}, "inferencesPerSecond": "20"},
                ],
            }],
        },
    }


class Cluster:
    """The in-memory API with one A100 node (2 GPUs) and one 6-core CPU node, and one pool."""

    def __init__(self, workers: list[Worker]) -> None:
        self.store = Store()
        self.kube = FakeKube(self.store)
        self.workers = workers
        nodes = [fake_gpu_node("gpu-0000", "A100-80GB", gpus=2),
                 {"metadata": {"name": "cpu-0000", "labels": {}},
                  "status": {"allocatable": {"cpu": "6", "memory": "64Gi"}}}]
        for i, node in enumerate(nodes):
            node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            node["metadata"]["uid"] = f"uid-node-{i}"
            self.store.apply_event(Kind.NODE, "ADDED", self.kube._stamp(node))
        self.store.apply_event(Kind.CONFIG, "ADDED", self.kube._stamp(default_config().to_wire()))
        self.store.apply_event(Kind.POOL, "ADDED", self.kube._stamp(pool_body()))
        self.settings = AutoscaleSettings(tick_s=0.5, persist_s=1.0, params=PARAMS,
                                          scrape_override={DEMAND: tuple(w.metrics_url for w in workers)})

    def operator(self) -> tuple[PlacementLoop, Autoscaler]:
        """A fresh operator process on this cluster (a restart keeps only what the API holds)."""
        loop = PlacementLoop(self.kube, self.store, OperatorSettings())
        loop._seeded = True
        self.kube.feed = loop.observer.feed
        scaler = Autoscaler.attach(loop, self.settings)
        assert scaler is not None
        return loop, scaler

    async def place(self, loop: PlacementLoop) -> None:
        """Cycles with kube-scheduler and kubelet in between, until nothing changes."""
        for _ in range(4):
            report = await loop.cycle()
            bound = self.kube.bind_all()
            if not (report.created or report.deleted or bound):
                break

    def live(self) -> list[Obj]:
        return [p for p in self.store.all(Kind.POD)
                if p["metadata"]["namespace"] == NS and not p["metadata"].get("deletionTimestamp")]

    def ready_workers(self) -> list[str]:
        """Where the model's Service would send requests: the workers of Ready replicas."""
        out = []
        for p in self.live():
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in (p.get("status") or {}).get("conditions") or [])
            index = int(p["metadata"]["labels"][names.LABEL_REPLICA])
            if ready and index < len(self.workers):
                out.append(self.workers[index].url)
        return out

    def events(self, reason: str) -> list[Obj]:
        return [o for k, o in self.kube.objects.items() if "/events/" in k and o.get("reason") == reason]

    def scaling(self) -> PoolScaling | None:
        raw = ((self.store.get(Kind.POOL, f"{NS}/{POOL}") or {}).get("status") or {}).get("scaling")
        return PoolScaling.model_validate(raw) if raw else None


async def until(cluster: Cluster, loop: PlacementLoop, scaler: Autoscaler, load: Load | None,
                done: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    """Tick and place until ``done()`` (bounded; the load follows the Ready replicas)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            model = scaler.models.get(DEMAND)
            why = model.decision.reason if model and model.decision else "no decision"
            raise AssertionError(f"timed out waiting for {what}; last decision: {why}")
        await scaler.tick()
        await cluster.place(loop)
        if load is not None:
            load.targets[:] = cluster.ready_workers()
        await asyncio.sleep(0.5)


def desired(scaler: Autoscaler) -> int:
    model = scaler.models.get(DEMAND)
    return model.decision.total if model is not None and model.decision is not None else 0


def shapes(cluster: Cluster) -> set[str]:
    return {p["spec"].get("nodeName", "") for p in cluster.live()}


@pytest.mark.slow
def test_a_surge_scales_up_onto_a_new_shape_a_restart_keeps_the_windows_and_idle_scales_down(
        worker_factory: Callable[[], Worker]) -> None:
    workers = [worker_factory() for _ in range(3)]
    cluster = Cluster(workers)

    async def scenario() -> None:
        loop, scaler = cluster.operator()
        await cluster.place(loop)
        assert len(cluster.live()) == 1  # minReplicas ...
        assert shapes(cluster) == {"cpu-0000"}  # ... on the cheap tier
        # idle: measured, held at minReplicas, recorded in status
        await until(cluster, loop, scaler, None, lambda: scaler.models.get(DEMAND) is not None
                    and scaler.models[DEMAND].decision is not None, "a first decision")
        assert desired(scaler) == 1
        load = Load(cluster.ready_workers(), concurrency=32).start()
        try:
            surge = time.monotonic()
            await until(cluster, loop, scaler, load, lambda: desired(scaler) > 1, "a scale-up under load")
            print(f"surge to decision: {time.monotonic() - surge:.1f} s")  # the benchmark records it properly
            model = scaler.models[DEMAND]
            assert model.decision is not None
            assert model.decision.reason.startswith("scale up 1 -> "), model.decision.reason
            await until(cluster, loop, scaler, load, lambda: len(cluster.live()) == desired(scaler), "the new pods")
            assert "gpu-0000" in shapes(cluster), shapes(cluster)  # the CPU node is full: a new shape, by placement
            up = cluster.events("ScaledUp")
            assert up
            assert up[0]["message"].startswith(f"{MODEL}: scale up 1 -> "), up[0]["message"]
            await until(cluster, loop, scaler, load, lambda: (s := cluster.scaling()) is not None
                        and s.models[0].desired_replicas > 1, "status.scaling with the scale-up")
            record = cluster.scaling()
            assert record is not None
            entry = record.models[0]
            assert entry.reporting_replicas >= 1
            assert entry.arrival_rate is not None
            assert entry.arrival_rate > 0
            assert entry.usd_per_million_inferences is not None  # from what the workers served
            assert entry.p99_seconds is not None
            assert entry.queue_depth is not None
            # status.models[] (the report stage) shows the same measured $/1M, never an estimate
            served = ((cluster.store.get(Kind.POOL, f"{NS}/{POOL}") or {}).get("status") or {}).get("models") or []
            assert served
            assert served[0].get("usdPerMillionInferences") is not None, served[0]
            scaling_cond = next(c for c in cluster.store.get(Kind.POOL, f"{NS}/{POOL}")["status"]["conditions"]
                                if c["type"] == "Scaling")
            assert f"{MODEL}: " in scaling_cond["message"], scaling_cond
            assert entry.last_decision.startswith("scale up")
            before = model.state
            # what the last tick asked for (and placement carried out) when the operator dies
            scaled_to = len(cluster.live())
            last = cluster.scaling()
            assert last is not None
            assert last.models[0].desired_replicas == scaled_to

            # the operator restarts mid-burst: a new process continues from status.scaling
            loop, scaler = cluster.operator()
            await cluster.place(loop)
            assert len(cluster.live()) == scaled_to  # the first cycle kept the replicas (no drop to minReplicas)
            await scaler.tick()
            restored = scaler.models[DEMAND]
            assert restored.measured
            assert restored.state.samples, "the window history came back"
            assert restored.state.started_at is not None
            assert before.started_at is not None
            # the same clock in this process: the restored times are the old ones, to the second
            # status.scaling.observedAt carries (a new process rebases them onto its own clock)
            assert restored.state.started_at == pytest.approx(before.started_at, abs=1.5)
            assert len(restored.state.samples) >= len(before.samples) - 2
            # its own samples need a rate window first: it holds what the last leader asked for
            assert restored.decision is not None
            assert desired(scaler) == scaled_to, restored.decision.reason
            assert "reported" in restored.decision.reason, restored.decision.reason
        finally:
            load.stop()
        assert load.answered > 0
        assert not load.errors, load.errors

        # a replica that stops reporting (its worker frozen) holds the count: no scale-down on it
        frozen = workers[1]
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            held_at = desired(scaler)
            deadline = time.monotonic() + 12  # twice the stable window: idle long enough to scale down
            while time.monotonic() < deadline:
                await scaler.tick()
                await cluster.place(loop)
                await asyncio.sleep(0.5)
            model = scaler.models[DEMAND]
            assert model.decision is not None
            assert desired(scaler) == held_at, model.decision.reason
            assert "reported" in model.decision.reason, model.decision.reason
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        # reporting again and idle: the pool scales back down after the window
        await until(cluster, loop, scaler, None, lambda: desired(scaler) == 1, "the scale-down")
        # one replica, on the cheap tier (if the GPUs outlived the CPU replica, the policy moves
        # to the cheaper mix: make before break)
        await until(cluster, loop, scaler, None, lambda: len(cluster.live()) == 1 and shapes(cluster) == {"cpu-0000"},
                    "one replica left, on the CPU node")
        await scaler.scraper.close()
        down = cluster.events("ScaledDown")
        assert down
        print("events:", [e["message"] for e in [*cluster.events("ScaledUp"), *down]])

    asyncio.run(scenario())


def test_only_the_leader_scales_and_a_clock_step_changes_nothing(worker_factory: Callable[[], Worker]) -> None:
    cluster = Cluster([worker_factory()])

    async def scenario() -> None:
        loop, leader = cluster.operator()
        await cluster.place(loop)
        _, standby = cluster.operator()  # a second operator process, not leading
        stop = asyncio.Event()
        before = dict(cluster.kube.objects), cluster.kube.total_requests
        task = asyncio.create_task(standby.run(stop, lambda: False))
        await asyncio.sleep(2.0)  # four of its ticks
        stop.set()
        await task
        assert standby.ticks == 0
        assert not standby.models
        assert isinstance(standby.loop.observer.policy, ScaledReplicas)
        assert cluster.kube.total_requests == before[1], "a standby wrote nothing"
        # the leader, meanwhile, decides
        for _ in range(4):
            await leader.tick()
            await asyncio.sleep(0.6)
        model = leader.models[DEMAND]
        assert model.decision is not None
        started = model.state.started_at
        # the host's wall clock steps back an hour: decisions run on the monotonic clock
        leader.wall = lambda: time.time() - 3600
        for _ in range(4):
            await leader.tick()
            await asyncio.sleep(0.6)
        assert model.decision is not None
        assert "clock went back" not in model.decision.reason, model.decision.reason
        assert model.state.started_at == started
        assert REGISTRY.get_sample_value("gpupool_scaling_desired_replicas",
                                         {"namespace": NS, "pool": POOL, "model": MODEL}) == model.decision.total
        assert REGISTRY.get_sample_value("gpupool_scaling_reporting_replicas",
                                         {"namespace": NS, "pool": POOL, "model": MODEL}) == 1
        assert (REGISTRY.get_sample_value("gpupool_scaling_scrapes_total", {"outcome": "ok"}) or 0) >= 8
        # the pool deleted: its model, overrides and series go
        cluster.store.delete(Kind.POOL, cluster.store.get(Kind.POOL, f"{NS}/{POOL}") or {})
        await loop.cycle()
        await leader.tick()
        await leader.scraper.close()
        assert DEMAND not in leader.models
        assert DEMAND not in leader.overrides
        assert REGISTRY.get_sample_value("gpupool_scaling_desired_replicas",
                                         {"namespace": NS, "pool": POOL, "model": MODEL}) is None

    asyncio.run(scenario())


def test_bad_settings_are_refused_with_the_variable_named() -> None:
    from gpupool_operator.adapters.autoscale import SettingsError

    for env, named in [({"GPUPOOL_SCALING_TICK_SECONDS": "0"}, "GPUPOOL_SCALING_TICK_SECONDS"),
                       ({"GPUPOOL_SCRAPE_OVERRIDE": "{not json"}, "GPUPOOL_SCRAPE_OVERRIDE"),
                       ({"GPUPOOL_SCRAPE_OVERRIDE": '{"pool": ["x"]}'}, "GPUPOOL_SCRAPE_OVERRIDE"),
                       ({"GPUPOOL_SCALING_PARAMS": '{"panic_threshold": 0.5}'}, "panic_threshold"),
                       ({"GPUPOOL_SCALING_PARAMS": '{"no_such": 1}'}, "GPUPOOL_SCALING_PARAMS"),
                       ({"GPUPOOL_AUTOSCALE": "maybe"}, "GPUPOOL_AUTOSCALE")]:
        with pytest.raises(SettingsError, match=named):
            autoscale_settings(env)
    assert not autoscale_settings({"GPUPOOL_AUTOSCALE": "false"}).enabled
    assert autoscale_settings({"GPUPOOL_SCALING_PARAMS": '{"stable_window_s": 20}'}).params.stable_window_s == 20

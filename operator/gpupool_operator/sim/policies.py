"""The policies ``gpupool simulate`` can run, by name: gpupool's own and the baselines.

``gpupool`` is the core policy (:func:`gpupool_operator.core.scaling.decide`) fed from the
model's observations exactly as the operator feeds it from worker statistics: fresh samples,
arrival and completion rates since the last tick, replicas ready and pending per shape. Variants:
``gpupool-headroom`` (target utilization 0.5 instead of 0.7: capacity standing by for bursts),
and two that isolate what its parts buy: ``gpupool-gpu`` (no CPU tier) and ``gpupool-one-shape``
(only the baselines' single shape: the control law alone). The baselines and the oracle live in
:mod:`~gpupool_operator.sim.baselines` and :mod:`~gpupool_operator.sim.oracle`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from gpupool_operator.core.demand import ShapeKind
from gpupool_operator.core.scaling.compose import Option, cheapest_cover
from gpupool_operator.core.scaling.policy import decide
from gpupool_operator.core.scaling.signals import ShapeReplicas, Signals
from gpupool_operator.core.scaling.state import ScalingState
from gpupool_operator.sim import baselines, oracle
from gpupool_operator.sim.model import Observation, Policy
from gpupool_operator.sim.scenario import Scenario
from gpupool_operator.sim.trace import Trace

__all__ = ["DEFAULT_POLICIES", "HEADROOM_UTILIZATION", "POLICIES", "GpupoolPolicy", "make_policy"]

#: ``gpupool-headroom`` plans for this share of each replica's throughput (the default is 0.7):
#: more capacity standing by for bursts that outrun a pod start.
HEADROOM_UTILIZATION = 0.5


class GpupoolPolicy:
    """The core policy in the simulator's loop."""

    interval_s: float

    def __init__(self, scenario: Scenario, name: str = "gpupool") -> None:
        self.name, self.scenario = name, scenario
        self.interval_s = scenario.params.tick_s
        self.state = ScalingState()
        self.last_reason = ""

    def initial(self) -> Mapping[str, int]:
        s = self.scenario
        options = [Option(o.key, s.capacity(o), o.usd_per_hour, o.room) for o in s.usable()]
        return cheapest_cover(options, 0.0, s.targets.min_replicas, s.targets.min_replicas).counts

    def decide(self, obs: Observation) -> Mapping[str, int]:
        keys = set(obs.ready) | set(obs.pending)
        replicas = {k: ShapeReplicas(obs.ready.get(k, 0), obs.pending.get(k, 0)) for k in keys}
        signals = Signals(age_s=0.0, queue=obs.queue, in_flight=obs.in_flight,
                          arrival_rate=obs.arrivals / obs.interval, completion_rate=obs.completions / obs.interval,
                          replicas=replicas)
        d = decide(self.state, signals, self.scenario.targets, self.scenario.offers, obs.now, self.scenario.params)
        self.state, self.last_reason = d.state, d.reason
        return d.replicas


def _gpu_only(scenario: Scenario, trace: Trace) -> Policy:
    gpu = [o for o in scenario.offers if o.shape.kind is not ShapeKind.CPU]
    return GpupoolPolicy(scenario.restricted(gpu), "gpupool-gpu")


def _headroom(scenario: Scenario, trace: Trace) -> Policy:
    params = scenario.params.replace(target_utilization=HEADROOM_UTILIZATION)
    return GpupoolPolicy(dataclasses.replace(scenario, params=params), "gpupool-headroom")


def _one_shape(scenario: Scenario, trace: Trace) -> Policy:
    return GpupoolPolicy(scenario.restricted([scenario.baseline_shape()]), "gpupool-one-shape")


POLICIES: Mapping[str, Callable[[Scenario, Trace], Policy]] = {
    "gpupool": lambda s, t: GpupoolPolicy(s),
    "static": baselines.static_peak,
    "hpa": baselines.Hpa,
    "keda": baselines.Keda,
    "kpa": baselines.Kpa.knative,
    "aibrix": baselines.Kpa.aibrix,
    "wva": baselines.Wva,
    "oracle": oracle.Oracle,
    "gpupool-headroom": _headroom,
    "gpupool-gpu": _gpu_only,
    "gpupool-one-shape": _one_shape,
}
#: What ``gpupool simulate`` runs without ``--policy``.
DEFAULT_POLICIES = ("gpupool", "static", "hpa", "keda", "kpa", "aibrix", "wva", "oracle")


def make_policy(name: str, scenario: Scenario, trace: Trace) -> Policy:
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})") from None
    return factory(scenario, trace)

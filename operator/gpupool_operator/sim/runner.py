"""Every requested policy over one trace, in one scenario: what ``gpupool simulate`` runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gpupool_operator.sim.model import Simulation
from gpupool_operator.sim.policies import make_policy
from gpupool_operator.sim.results import RunResult
from gpupool_operator.sim.scenario import Scenario
from gpupool_operator.sim.trace import Trace

__all__ = ["run_policies"]

#: progress(policy name, simulated seconds done, seconds in the trace)
Progress = Callable[[str, float, float], None]


def run_policies(scenario: Scenario, trace: Trace, names: Sequence[str],
                 progress: Progress | None = None) -> list[RunResult]:
    """One :class:`RunResult` per policy name, in order (the same trace, scenario and placement)."""
    results = []
    for name in names:
        policy = make_policy(name, scenario, trace)
        sim = Simulation(trace, scenario.shape_models(), scenario.config, policy, scenario.placer)
        report = None if progress is None else (lambda t, n=name: progress(n, t, trace.duration))
        results.append(sim.run(report))
    return results

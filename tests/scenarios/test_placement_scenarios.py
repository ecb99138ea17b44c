"""Run every scenario file in this directory (see README.md for the format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupool_operator.adapters.inventory import snapshot_from_objects
from gpupool_operator.api.inferencepool import InferencePool
from gpupool_operator.core import catalog
from gpupool_operator.core.cost import Prices, default_prices
from gpupool_operator.core.demand import from_pool
from gpupool_operator.core.solver import solve
from gpupool_operator.core.verify import problems
from gpupool_operator.local.nodes import build_nodes
from gpupool_operator.local.spec import parse

HERE = Path(__file__).parent
SCENARIOS = sorted(HERE.glob("*.yaml"))


def _prices(raw: dict[str, Any] | None) -> Prices:
    if not raw:
        return default_prices()
    base = default_prices()
    gpu = dict(base.gpu)
    cpu = base.cpu_per_core_hour
    for key, value in raw.items():
        if key == "cpu":
            cpu = float(value)
        else:
            gpu[catalog.lookup(key).key] = float(value)
    return Prices(gpu=gpu, cpu_per_core_hour=cpu)


def _matches(assignment: dict[str, Any], want: dict[str, Any]) -> bool:
    for field in ("kind", "product", "profile", "node"):
        if field in want and assignment[field] != want[field]:
            return False
    if "nodePrefix" in want and not assignment["node"].startswith(want["nodePrefix"]):
        return False
    return "gpus" not in want or len(assignment["gpus"]) == want["gpus"]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    nodes: list[dict[str, Any]] = list(doc.get("nodes") or [])
    if doc.get("cluster"):
        nodes += build_nodes(parse({"name": doc["name"][:40].strip("-"), **doc["cluster"]}))
    snapshot = snapshot_from_objects(nodes, doc.get("pods") or [], _prices(doc.get("prices")))
    demands = [d for raw in doc["pools"] for d in from_pool(InferencePool.model_validate(raw))]
    plan = solve(snapshot, demands)
    assert problems(snapshot, demands, plan) == []
    assert solve(snapshot, demands) == plan, "not deterministic"
    got = plan.to_dict()
    expect = doc.get("expect") or {}
    if "costPerHour" in expect:
        assert got["costPerHour"] == pytest.approx(expect["costPerHour"], abs=0.006)
    if "gpusUsed" in expect:
        assert got["gpusUsed"] == expect["gpusUsed"]
    if "migChanges" in expect:
        assert len(got["migChanges"]) == expect["migChanges"], got["migChanges"]
    if "evictions" in expect:
        assert len(got["evictions"]) == expect["evictions"], got["evictions"]
    for want in expect.get("placements", []):
        mine = [a for a in got["placements"] if a["model"] == want["model"]]
        matching = [a for a in mine if _matches(a, want)]
        assert len(matching) == want["count"], (want, mine)
    for model in expect.get("distinctNodes", []):  # Spread: no two replicas of the model share a node
        nodes = [a["node"] for a in got["placements"] if a["model"] == model]
        assert len(nodes) == len(set(nodes)), (model, nodes)
    unplaced = {u["model"]: u for u in got["unplaced"]}
    for want in expect.get("unplaced", []):
        assert want["model"] in unplaced, got["unplaced"]
        assert unplaced[want["model"]]["count"] == want["count"]
        assert want["reasonContains"] in unplaced[want["model"]]["reason"], unplaced[want["model"]]["reason"]
    if "unplaced" in expect and not expect["unplaced"]:
        assert got["unplaced"] == []
    if expect.get("optimal"):
        from gpupool_operator.core.exact import solve_exact

        exact = solve_exact(snapshot, demands, time_limit=30)
        assert exact.optimal
        assert plan.cost_per_hour == pytest.approx(exact.cost_per_hour, abs=1e-6)

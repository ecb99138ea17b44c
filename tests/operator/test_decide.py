"""The decide stage's pure rules, with plain data: names, MIG re-layout safety and protocol steps,
pools held back after refused writes, back-off."""

from __future__ import annotations

import re

import pytest

from gpupool_operator.core.backoff import Refusal, after_refusal
from gpupool_operator.core.decide import Rules, Situation, decide
from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.naming import pod_name, service_name
from gpupool_operator.core.observed import ForeignPod, MigNode, MigRequest, PerGpu, PoolRef, Replica, per_gpu
from gpupool_operator.core.plan import ActionKind, Assignment, LayoutChange, Plan
from gpupool_operator.core.relayout import MigRules, StepKind, node_step, restrict

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MIG = Shape(ShapeKind.MIG, "A100-80GB", gpus=1, profile="1g.10gb")
SEVEN = (("1g.10gb", 7),)
NOW = 1_000_000.0


# -- names ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("first", "second"), [
    (("a-b", "c"), ("a", "b-c")),
    (("x" * 253, "m"), ("x" * 252, "m")),  # the longest legal pool names, cut to the same prefix
    (("p", "m" * 40), ("p", "m" * 39 + "n")),
])
def test_names_never_collide_and_are_dns_labels(first: tuple[str, str], second: tuple[str, str]) -> None:
    pods = {pod_name("ns", pool, f"uid-{pool}", model, 0) for pool, model in (first, second)}
    services = {service_name("ns", pool, f"uid-{pool}", model) for pool, model in (first, second)}
    assert len(pods) == 2
    assert len(services) == 2
    for name in pods | services:
        assert len(name) <= 63, name
        assert DNS_1123_LABEL.match(name), name
    for name in services:
        assert name[0].isalpha(), name  # a Service name is an RFC 1035 label


def test_a_pool_made_again_meets_no_name_of_its_predecessor() -> None:
    assert pod_name("ns", "p", "uid-old", "m", 0) != pod_name("ns", "p", "uid-new", "m", 0)
    assert pod_name("ns", "p", "uid", "m", 0) == pod_name("ns", "p", "uid", "m", 0)  # deterministic
    assert pod_name("ns", "p", "uid", "m", 99999).endswith("-99999")
    assert len(pod_name("ns", "p" * 253, "uid", "m" * 40, 99999)) <= 63


# -- MIG: which changes may start -------------------------------------------------------------
def _node(name: str = "n1", gpus: int = 2, current: PerGpu | None = None, **kw: object) -> MigNode:
    fields: dict[str, object] = {
        "name": name, "gpu_count": gpus, "config": "all-disabled", "state": "success",
        "current": current if current is not None else per_gpu([{} for _ in range(gpus)]),
        "target": None, "since": None, "previous": None, "request": None, "failed_at": None,
        "mig_allocatable": (), "whole_allocatable": gpus}
    fields.update(kw)
    return MigNode(**fields)  # type: ignore[arg-type]


def _new(gpu: int, demand: str = "ns/p/m", replica: int = 0) -> Assignment:
    return Assignment(demand, replica, MIG, "n1", gpus=(gpu,), start=replica, cost=0.5)


def _relayout_plan(*extra: Assignment) -> Plan:
    change = LayoutChange("n1", 0, None, tuple(("1g.10gb", s) for s in range(7)))
    return Plan(assignments=(_new(0), *extra), layout_changes=(change,))


def test_the_plan_never_keeps_pods_on_a_gpu_it_relays() -> None:
    kept = Assignment("ns/q/w", 0, Shape(ShapeKind.GPU, "A100-80GB", gpus=1), "n1", gpus=(0,), cost=3.4,
                      pod="ns/q-w-0")
    plan, why = restrict(_relayout_plan(kept), {"n1": _node()}, (), MigRules(), NOW)
    assert not plan.layout_changes
    assert kept in plan.assignments
    assert [(u.demand, u.count) for u in plan.unplaced] == [("ns/p/m", 1)]
    assert "keeps running replicas" in why["n1"]


def test_another_partys_gpu_pod_holds_off_relayouts_of_gpus_it_may_be_on() -> None:
    foreign = ForeignPod("ml/train", "n1", whole_gpus=1, mig_profiles=())
    plan, _ = restrict(_relayout_plan(), {"n1": _node()}, (foreign,), MigRules(), NOW)
    assert not plan.layout_changes
    slices = ForeignPod("ml/small", "n1", whole_gpus=0, mig_profiles=("3g.40gb",))  # cannot be on a whole GPU
    plan, _ = restrict(_relayout_plan(), {"n1": _node()}, (slices,), MigRules(), NOW)
    assert plan.layout_changes


def test_policy_and_cool_down_decide_whether_a_relayout_may_start() -> None:
    nodes = {"n1": _node()}
    plan, why = restrict(_relayout_plan(), nodes, (), MigRules(disabled=True), NOW)
    assert not plan.layout_changes
    assert "Disabled" in plan.unplaced[0].reason
    failed = {"n1": _node(failed_at=NOW - 60)}
    plan, why = restrict(_relayout_plan(), failed, (), MigRules(cooldown_s=1800), NOW)
    assert not plan.layout_changes
    assert "cool-down" in why["n1"]
    plan, _ = restrict(_relayout_plan(), failed, (), MigRules(cooldown_s=1800), NOW + 1800)
    assert plan.layout_changes  # retried after the cool-down: never excluded for good


def test_allow_list_names_the_layout_or_refuses_it() -> None:
    named = {"n1": {"all-1g.10gb": per_gpu([{"1g.10gb": 7}, {"1g.10gb": 7}])}}
    rules = MigRules(allowed=("all-1g.10gb",))
    half = _relayout_plan()  # GPU 0 only: that layout is no allowed config
    plan, why = restrict(half, {"n1": _node()}, (), rules, NOW, named)
    assert not plan.layout_changes
    assert "allowedLayouts" in why["n1"]
    both = Plan(assignments=(_new(0), _new(1, replica=1)), layout_changes=(
        LayoutChange("n1", 0, None, tuple(("1g.10gb", s) for s in range(7))),
        LayoutChange("n1", 1, None, tuple(("1g.10gb", s) for s in range(7)))))
    plan, _ = restrict(both, {"n1": _node()}, (), rules, NOW, named)
    assert len(plan.layout_changes) == 2
    step = node_step(_node(), per_gpu([{"1g.10gb": 7}, {"1g.10gb": 7}]), (), (), rules, NOW, named["n1"])
    assert step.kind is StepKind.REQUEST
    assert step.config == "all-1g.10gb"  # the platform's own config name, not one the operator made up


# -- MIG: one node through NVIDIA's protocol --------------------------------------------------
TARGET = per_gpu([{"1g.10gb": 7}, {}])


def _replica(key: str, gpu: int, *, bound: bool, gated: bool = False, deleting: bool = False) -> Replica:
    return Replica(key=key, uid=f"uid-{key}", pool="ns/p", demand="ns/p/m", index=0, node="n1", bound=bound,
                   deleting=deleting, finished=False, phase="Running" if bound else "Pending", mig_gated=gated,
                   gated=gated, ready=bound, gpus=frozenset({gpu}), holds_gpu=True)


def test_a_relayout_waits_for_its_gpus_then_asks_in_the_same_cycle() -> None:
    rules = MigRules(timeout_s=600)
    busy = _replica("ns/old", 0, bound=True, deleting=True)  # evicted, still terminating
    step = node_step(_node(), TARGET, (busy,), (), rules, NOW)
    assert step.kind is StepKind.RECORD
    assert step.wake_at == NOW + 600
    recorded = _node(target=TARGET, since=NOW)
    assert node_step(recorded, None, (busy,), (), rules, NOW + 5).kind is StepKind.WAIT
    step = node_step(recorded, None, (), (), rules, NOW + 6)  # the pod is gone
    assert step.kind is StepKind.REQUEST
    assert step.config.startswith("gpupool-")
    fresh = node_step(_node(), TARGET, (), (), rules, NOW)  # nothing in the way: asked at once
    assert fresh.kind is StepKind.REQUEST


def test_an_old_success_is_never_taken_for_the_new_one() -> None:
    want = node_step(_node(), TARGET, (), (), MigRules(), NOW).config
    asked = _node(target=TARGET, since=NOW, config=want, state="success", previous="all-disabled",
                  request=MigRequest(want, NOW, "success", seen=False))
    assert node_step(asked, None, (), (), MigRules(), NOW + 1).kind is StepKind.WAIT
    pending = _node(target=TARGET, since=NOW, config=want, state="pending", previous="all-disabled",
                    request=MigRequest(want, NOW, "success", seen=False))
    assert node_step(pending, None, (), (), MigRules(), NOW + 2).kind is StepKind.SEEN
    done = _node(target=TARGET, since=NOW, config=want, state="success", previous="all-disabled",
                 request=MigRequest(want, NOW, "success", seen=True),
                 mig_allocatable=(("1g.10gb", 7),), whole_allocatable=1)
    assert node_step(done, None, (), (), MigRules(), NOW + 3).kind is StepKind.COMMIT
    not_yet = _node(target=TARGET, since=NOW, config=want, state="success", previous="all-disabled",
                    request=MigRequest(want, NOW, "success", seen=True))  # success, but slices not in allocatable
    assert node_step(not_yet, None, (), (), MigRules(), NOW + 3).kind is StepKind.WAIT


def test_failure_and_timeout_abandon_roll_back_and_stop_the_waiting_replicas() -> None:
    want = node_step(_node(), TARGET, (), (), MigRules(), NOW).config
    waiting = _replica("ns/new", 0, bound=False, gated=True)
    failed = _node(target=TARGET, since=NOW, config=want, state="failed", previous="all-disabled",
                   request=MigRequest(want, NOW, "success", seen=True))
    step = node_step(failed, None, (waiting,), (), MigRules(), NOW + 5)
    assert step.kind is StepKind.ABANDON
    assert step.config == "all-disabled"
    assert step.victims == (waiting,)
    hung = _node(target=TARGET, since=NOW, config=want, state="success", previous="all-disabled",
                 request=MigRequest(want, NOW, "success", seen=False))
    assert node_step(hung, None, (waiting,), (), MigRules(timeout_s=600), NOW + 599).kind is StepKind.WAIT
    step = node_step(hung, None, (waiting,), (), MigRules(timeout_s=600), NOW + 601)
    assert step.kind is StepKind.ABANDON
    assert "not applied within 600s" in step.reason
    stuck = _node(target=TARGET, since=NOW)  # its GPUs never became free
    blocker = _replica("ns/old", 0, bound=True)
    step = node_step(stuck, None, (blocker, waiting), (), MigRules(timeout_s=600), NOW + 601)
    assert step.kind is StepKind.ABANDON
    assert step.config == ""  # the label was never changed: nothing to roll back
    assert step.victims == (waiting,)


# -- decide: pools held back, gates --------------------------------------------------------------
def _situation(plan: Plan, held: frozenset[str] = frozenset(), **kw: object) -> Situation:
    pools = {"ns/p": PoolRef("ns/p", "uid-p", ("m",)), "other/q": PoolRef("other/q", "uid-q", ("c",))}
    fields: dict[str, object] = {
        "now": NOW, "plan": plan, "desired": {"ns/p/m": 1, "other/q/c": 1}, "pools": pools, "replicas": (),
        "foreign": (),
        "mig_nodes": {"n1": _node()}, "nodes": frozenset({"n1", "cpu-0"}), "schedulable": frozenset({"n1", "cpu-0"}),
        "held_back": held, "rules": Rules()}
    fields.update(kw)
    return Situation(**fields)  # type: ignore[arg-type]


def test_a_held_back_pool_gets_no_writes_and_the_others_do() -> None:
    cpu = Assignment("other/q/c", 0, Shape(ShapeKind.CPU, cpu_millis=1000, memory_mib=512), "cpu-0", cost=0.05)
    plan = _relayout_plan(cpu)
    both = decide(_situation(plan))
    assert {a.pool for a in both.actions if a.kind is ActionKind.START} == {"ns/p", "other/q"}
    held = decide(_situation(plan, frozenset({"ns/p"})))
    assert {a.pool for a in held.actions if a.kind is ActionKind.START} == {"other/q"}


def test_new_replicas_on_a_relaid_gpu_start_gated_and_the_request_goes_out_at_once() -> None:
    decision = decide(_situation(_relayout_plan()))
    kinds = [a.kind for a in decision.actions]
    assert kinds.index(ActionKind.SET_MIG_LAYOUT) < kinds.index(ActionKind.START)
    (start,) = [a for a in decision.actions if a.kind is ActionKind.START]
    assert start.gated
    assert start.pod == "ns/" + pod_name("ns", "p", "uid-p", "m", 0)


def test_names_skip_indices_and_names_in_use() -> None:
    plan = Plan(assignments=(_new(0, replica=0), _new(0, replica=1)))
    taken = "ns/" + pod_name("ns", "p", "uid-p", "m", 0)  # someone else's pod squats index 0's name
    decision = decide(_situation(plan, pod_keys=frozenset({taken}), mig_nodes={}))
    assert sorted(a.replica for a in decision.actions if a.kind is ActionKind.START) == [1, 2]


def test_back_off_doubles_up_to_a_cap() -> None:
    refusal = Refusal(403, "Forbidden", "exceeded quota")
    b = after_refusal(None, refusal, NOW, base_s=2, cap_s=30)
    delays = []
    for _ in range(6):
        delays.append(b.until - b.since)
        b = after_refusal(b, refusal, b.until, base_s=2, cap_s=30)
    assert delays == [2, 4, 8, 16, 30, 30]
    assert b.active(b.since)
    assert not b.active(b.until)

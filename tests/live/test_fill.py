"""What placement makes of a replica count, and the count that covers the policy's aim (pure core)."""

from __future__ import annotations

from gpupool_operator.core.demand import Shape, ShapeKind
from gpupool_operator.core.scaling import ShapeOffer, count_covering, placed

CPU = ShapeOffer("48 CPU cores", Shape(ShapeKind.CPU, cpu_millis=48000), 2.0, 2.304, 3)
GPU = ShapeOffer("1x A100-80GB", Shape(ShapeKind.GPU, "A100-80GB", gpus=1), 5.0, 3.43, 8, 1.0)
CAPS = {CPU.key: 2.0, GPU.key: 5.0}


def test_placement_adds_the_cheapest_replica_with_room_and_removes_the_dearest() -> None:
    assert placed([GPU, CPU], {CPU.key: 1}, 4) == {CPU.key: 3, GPU.key: 1}
    assert placed([GPU, CPU], {CPU.key: 3, GPU.key: 1}, 2) == {CPU.key: 2}
    assert placed([GPU, CPU], {GPU.key: 2}, 3) == {CPU.key: 1, GPU.key: 2}  # running replicas stay


def test_a_scale_up_grows_until_placements_mix_serves_the_policys_aim() -> None:
    # the policy's own mix: 3 GPUs, 15 req/s; three replicas placed by price serve 6 (3 CPU)
    assert count_covering([CPU, GPU], CAPS, {CPU.key: 1}, 3, 15.0, 8, None) == 5  # 3 CPU + 2 GPU = 16
    assert count_covering([CPU, GPU], CAPS, {CPU.key: 1}, 3, 15.0, 4, None) == 4  # maxReplicas
    assert count_covering([CPU, GPU], CAPS, {CPU.key: 1}, 3, 15.0, 8, 12.0) == 4  # the budget: $10.3/h, not $13.8
    assert count_covering([CPU, GPU], CAPS, {CPU.key: 1}, 2, 4.0, 8, None) == 2  # already covered
    assert count_covering([CPU, GPU], CAPS, {CPU.key: 3, GPU.key: 1}, 2, 4.0, 8, None) == 2  # scale-downs as decided


def test_a_hold_keeps_the_replicas_asked_for_and_a_decision_may_lower_them() -> None:
    from gpupool_operator.adapters.autoscale import kept_on_hold
    from gpupool_operator.core.scaling import Decision, ScalingState

    state = ScalingState()
    asked = Decision({CPU.key: 3}, "scale up 1 -> 3 (+2 48 CPU cores): panic", state, usd_per_hour=6.9)
    # 2 run, the third has no room yet (no pod): the policy holds on partial data at what runs
    held = Decision({CPU.key: 2}, "hold 2 replicas: only 1 of 2 ready replicas reported", state, held=True)
    kept = kept_on_hold(held, asked, 3)
    assert kept.replicas == {CPU.key: 3}
    assert kept.usd_per_hour == 6.9
    assert kept.reason.endswith("; keeping the 3 replicas asked")
    assert kept_on_hold(held, asked, 2) is held  # maxReplicas lowered below the ask meanwhile
    assert kept_on_hold(held, None, 3) is held  # nothing asked before (a new leader restores its record)
    # a decision (not a hold) that two replicas are enough lowers the ask: a scale-down
    enough = Decision({CPU.key: 2}, "hold 2 replicas: demand 1.2 against capacity 2", state)
    assert kept_on_hold(enough, asked, 3) is enough


def test_a_shapes_room_counts_the_models_own_replicas_once_and_every_other_pools_as_held() -> None:
    # A 4-core node holding one 1-core replica of this model and a 2-core replica of another pool:
    # one core is free, so this model has room for 2 replicas of 1 core (its own and one more).
    # On the plain snapshot the one-shape solve freed both (room 4: the demo's scale-ups that had
    # no room were decided because of it).
    from gpupool_operator.adapters.autoscale import room_snapshot
    from gpupool_operator.api import InferencePool
    from gpupool_operator.core.demand import from_pool
    from gpupool_operator.core.inventory import Holding, Node, Snapshot
    from gpupool_operator.core.scaling import offers_for

    pool = InferencePool.model_validate({
        "apiVersion": "gpupool.io/v1alpha1", "kind": "InferencePool", "metadata": {"name": "q", "namespace": "ns"},
        "spec": {"models": [{"name": "m", "source": {"uri": "builtin://all-minilm-l6-v2", "format": "Builtin"},
                             "acceleratorMemory": "512Mi", "minReplicas": 1, "maxReplicas": 4,
                             "hardware": [{"type": "CPU", "cpu": {"cores": 1, "memory": "1Gi"}}]}]}})
    (demand,) = from_pool(pool)
    assert demand.key == "ns/q/m"
    node = Node(name="cpu-0", cpu_millis=4000, memory_mib=16 * 1024, holdings=(
        Holding("ns/q-m-0", owner="ns/q/m", cpu_millis=1000, memory_mib=1024),
        Holding("ns/other-0", owner="ns/other/x", cpu_millis=2000, memory_mib=1024)))
    snap = Snapshot((node,))
    (plain,), _ = offers_for(demand, snap, 4)
    (measured,), _ = offers_for(demand, room_snapshot(snap, demand.key), 4)
    assert plain.room == 4
    assert measured.room == 2
    assert room_snapshot(snap, demand.key).nodes[0].holdings[1].owner is None  # held, not movable
    assert room_snapshot(snap, demand.key).nodes[0].holdings[0].owner == "ns/q/m"

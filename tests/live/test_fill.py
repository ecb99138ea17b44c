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

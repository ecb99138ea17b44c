"""What a replica count becomes once placement has placed it, and the count whose placement
covers what the policy aimed for.

The operator hands placement a replica count per model, not the policy's mix of shapes; placement
(strategy Cost) puts each added replica on the cheapest shape with room and, when the count drops,
frees the dearest replicas first. :func:`placed` predicts that mix; :func:`count_covering` grows a
scale-up's count until the predicted mix covers the policy's target capacity (as the policy's own
mix would have), within ``maxReplicas`` and the budget. A purely computational module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpupool_operator.core.scaling.compose import EPS, mix_capacity, mix_cost
from gpupool_operator.core.scaling.offers import ShapeOffer

__all__ = ["count_covering", "placed"]


def placed(offers: Sequence[ShapeOffer], current: Mapping[str, int], total: int) -> dict[str, int]:
    """The mix placement makes of ``total`` replicas from ``current``: additions on the cheapest
    shape per replica with room (``room`` counts the model's own replicas), removals dearest first."""
    counts = {k: n for k, n in current.items() if n > 0}
    by_price = sorted(offers, key=lambda o: (o.usd_per_hour, o.key))
    price = {o.key: o.usd_per_hour for o in offers}
    while sum(counts.values()) > total:
        dearest = max(counts, key=lambda k: (price.get(k, float("inf")), k))
        counts[dearest] -= 1
        if counts[dearest] == 0:
            del counts[dearest]
    for o in by_price:
        while sum(counts.values()) < total and counts.get(o.key, 0) < o.room:
            counts[o.key] = counts.get(o.key, 0) + 1
    return dict(sorted(counts.items()))


def count_covering(offers: Sequence[ShapeOffer], capacity: Mapping[str, float], current: Mapping[str, int],
                   total: int, target: float, max_replicas: int, budget: float | None) -> int:
    """``total``, or more when placement's mix of ``total`` would serve less than ``target``
    (requests/s) and a larger count's would serve more: never above ``max_replicas`` nor, for
    the added replicas, the budget (``capacity``: each shape's requests/s within the objective)."""
    if total <= sum(current.values()):
        return total
    price = {o.key: o.usd_per_hour for o in offers}
    n = total
    have = mix_capacity(placed(offers, current, n), capacity)
    while have + EPS < target and n < max_replicas:
        mix = placed(offers, current, n + 1)
        more = mix_capacity(mix, capacity)
        if more <= have + EPS or (budget is not None and mix_cost(mix, price) > budget + EPS):
            break
        n, have = n + 1, more
    return n

"""Node taints and pod tolerations, matched exactly as kube-scheduler matches them.

Why in the core: a replica the plan puts on a node whose taint its pod does not tolerate stays
Pending forever, so placement must agree with the scheduler's ``TaintToleration`` plugin:

* ``NoSchedule`` and ``NoExecute`` taints are hard: a pod must tolerate every one of them;
* ``PreferNoSchedule`` is soft: the scheduler avoids such nodes when it can, and so does the plan
  (a node's untolerated soft taints rank it after otherwise equal options, never out).

A toleration matches a taint (``Toleration.ToleratesTaint`` in k8s.io/api core/v1) when its effect
is empty or equal to the taint's, its key is empty or equal, and its operator is ``Exists`` or
``Equal`` (the default) with an equal value; an empty key with ``Exists`` matches every taint.
``tolerationSeconds`` only delays NoExecute eviction, so it does not change where a pod may go.

GPU replica pods carry, besides the model's own tolerations, the toleration the operator adds for
NVIDIA's GPU taint (:data:`GPU_TOLERATION`); CPU replica pods carry only the model's, so they never
land on a tainted GPU node unless the model tolerates it. Purely computational, no side effects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "GPU_TOLERATION",
    "Taint",
    "TaintEffect",
    "Toleration",
    "TolerationOperator",
    "admission",
    "tolerates",
]


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class TolerationOperator(StrEnum):
    EXISTS = "Exists"
    EQUAL = "Equal"


@dataclass(frozen=True, slots=True, order=True)
class Taint:
    """One entry of a Node's ``spec.taints``."""

    key: str
    effect: str  # a TaintEffect value; kept as text so an unknown effect is matched, not rejected
    value: str = ""

    def describe(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"

    @property
    def hard(self) -> bool:
        """Whether the scheduler refuses pods that do not tolerate it (everything but PreferNoSchedule)."""
        return self.effect != TaintEffect.PREFER_NO_SCHEDULE


@dataclass(frozen=True, slots=True, order=True)
class Toleration:
    """One entry of a Pod's ``spec.tolerations`` (``operator`` empty means ``Equal``)."""

    key: str = ""
    operator: str = TolerationOperator.EQUAL.value
    value: str = ""
    effect: str = ""  # empty: every effect


#: The toleration the operator puts on every GPU and MIG replica pod: NVIDIA's GPU Operator and the
#: clouds taint GPU nodes ``nvidia.com/gpu`` (e.g. ``nvidia.com/gpu=present:NoSchedule``).
GPU_TOLERATION = Toleration(key="nvidia.com/gpu", operator=TolerationOperator.EXISTS.value,
                            effect=TaintEffect.NO_SCHEDULE.value)


def tolerates(toleration: Toleration, taint: Taint) -> bool:
    """Kubernetes' ``Toleration.ToleratesTaint``, to the letter."""
    if toleration.effect and toleration.effect != taint.effect:
        return False
    if toleration.key and toleration.key != taint.key:
        return False
    if toleration.operator in ("", TolerationOperator.EQUAL):
        return toleration.value == taint.value
    return toleration.operator == TolerationOperator.EXISTS


@functools.lru_cache(maxsize=4096)
def admission(tolerations: tuple[Toleration, ...], taints: tuple[Taint, ...]) -> int | None:
    """``None`` when a pod with ``tolerations`` may not go onto a node with ``taints`` (a hard taint
    is not tolerated), else how many of its PreferNoSchedule taints the pod does not tolerate
    (0: an unreserved fit). Memoised: clusters have few distinct taint sets and tolerations."""
    soft = 0
    for taint in taints:
        if any(tolerates(t, taint) for t in tolerations):
            continue
        if taint.hard:
            return None
        soft += 1
    return soft


def untolerated(tolerations: Iterable[Toleration], taints: Iterable[Taint]) -> list[Taint]:
    """The hard taints of a node that ``tolerations`` do not tolerate (for messages)."""
    tols = tuple(tolerations)
    return [t for t in taints if t.hard and not any(tolerates(x, t) for x in tols)]

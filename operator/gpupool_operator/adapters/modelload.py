"""Why a pool's replicas cannot load their model, as the replicas themselves report it, turned
into the pool's ``ModelLoadFailed`` condition and Events.

Two channels, both the replica's own words (the operator never guesses):

- the gpupool worker stays up and not ready, and exports ``gpupool_worker_model_state{model,
  state="UNAVAILABLE", reason, message}`` on its metrics port (:func:`failures_from_metrics`);
- other runtimes' pods fetch in an init container (``gpupool-worker fetch``), which exits 3 with
  ``<Reason>: <message>`` as its termination message (:func:`failures_from_pod`).

The reasons are the worker's (``CredentialsRejected``, ``ModelNotFound``, ``ChecksumMismatch``,
``FormatMismatch``, ``WeightsTooLarge``, ``UnknownScheme``, ...). Everything here but
:func:`scrape_failures` is purely computational. The operator reads the first channel from the
background metrics scrape it already makes (``workerstats.StatsCollector.load_failures``, which
also scrapes Running replicas that are not Ready), never in the reconcile; the report stage reads
the second from the pods. :func:`scrape_failures` is a one-off, blocking reader for tests and tools.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gpupool_operator.adapters import names
from gpupool_operator.adapters.runtimes import ANN_METRICS_PATH, ANN_METRICS_PORT
from gpupool_operator.api import Condition, ConditionReason, ConditionStatus, ConditionType

__all__ = ["FETCH_CONTAINER", "LoadFailure", "failures_from_metrics", "failures_from_pod", "load_condition",
           "load_events", "scrape_failures"]

FETCH_CONTAINER = "fetch-model"
_REASON = re.compile(r"^([A-Z][A-Za-z0-9]*): (.*)$", re.S)


@dataclass(frozen=True, slots=True)
class LoadFailure:
    model: str
    pod: str
    reason: str
    message: str

    def describe(self) -> str:
        return f"model {self.model} (replica {self.pod}): {self.reason}: {self.message}"


def failures_from_metrics(exposition: str, pod: str) -> list[LoadFailure]:
    """The UNAVAILABLE models in one scrape of a gpupool worker's metrics."""
    out = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "gpupool_worker_model_state" and sample.labels.get("state") == "UNAVAILABLE":
                out.append(LoadFailure(sample.labels.get("model", ""), pod, sample.labels.get("reason") or "LoadFailed",
                                       sample.labels.get("message", "")))
    return out


def failures_from_pod(pod: Mapping[str, Any]) -> list[LoadFailure]:
    """A fetch init container that ended with a reason (now or on its last attempt)."""
    meta = pod.get("metadata") or {}
    model = (meta.get("labels") or {}).get(names.LABEL_MODEL, "")
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") != FETCH_CONTAINER:
            continue
        for state in (status.get("state") or {}, status.get("lastState") or {}):
            ended = state.get("terminated")
            if ended and ended.get("exitCode", 0) != 0:
                text = str(ended.get("message") or "").strip()
                match = _REASON.match(text)
                if match:
                    return [LoadFailure(model, meta.get("name", ""), match.group(1), match.group(2))]
                return [LoadFailure(model, meta.get("name", ""), "FetchFailed",
                                    text or f"the model fetch exited with {ended.get('exitCode')}")]
    return []


def scrape_failures(pods: Iterable[Mapping[str, Any]], *, timeout_s: float = 1.0) -> list[LoadFailure]:
    """Read both channels for ``pods`` (concurrently, short timeouts; an unreachable pod reports
    nothing rather than a failure it did not state)."""
    pods = list(pods)
    out = [f for pod in pods for f in failures_from_pod(pod)]

    def one(pod: Mapping[str, Any]) -> list[LoadFailure]:
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or ann.get("gpupool.io/runtime", "gpupool") != "gpupool" or ANN_METRICS_PORT not in ann:
            return []
        url = f"http://{ip}:{ann[ANN_METRICS_PORT]}{ann.get(ANN_METRICS_PATH, '/metrics')}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as rsp:
                return failures_from_metrics(rsp.read().decode(), pod["metadata"]["name"])
        except (OSError, ValueError):
            return []

    if pods:
        with ThreadPoolExecutor(max_workers=min(16, len(pods))) as pool:
            for found in pool.map(one, pods):
                out.extend(found)
    return out


def load_condition(failures: Sequence[LoadFailure], generation: int | None, now: datetime) -> Condition:
    """``ModelLoadFailed``: True with the first failure's reason and every failure in the message."""
    if not failures:
        return Condition(type=ConditionType.MODEL_LOAD_FAILED.value, status=ConditionStatus.FALSE,
                         observed_generation=generation, last_transition_time=now,
                         reason=ConditionReason.MODELS_LOADED.value, message="every replica loaded its model")
    ordered = sorted(failures, key=lambda f: (f.model, f.pod))
    return Condition(type=ConditionType.MODEL_LOAD_FAILED.value, status=ConditionStatus.TRUE,
                     observed_generation=generation, last_transition_time=now, reason=ordered[0].reason,
                     message="; ".join(f.describe() for f in ordered)[:32768])


def load_events(failures: Sequence[LoadFailure]) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events for the pool: one Warning per model and reason."""
    seen: dict[tuple[str, str], LoadFailure] = {}
    for f in sorted(failures, key=lambda f: (f.model, f.pod)):
        seen.setdefault((f.model, f.reason), f)
    return [("Warning", "ModelLoadFailed", f.describe()[:1024]) for f in seen.values()]

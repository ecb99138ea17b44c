"""The demo's load: a real trace's busiest slice, scaled to this machine, and the scale Events it led to."""

from __future__ import annotations

from datetime import datetime

import pytest

from gpupool_operator.cli.demo_load import (
    AZURE_ATTRIBUTION,
    DEFAULT_TRACE,
    load_trace,
    schedule,
    summarize,
)
from gpupool_operator.sim.trace import Trace, parse_csv


def _trace(times: list[float]) -> Trace:
    return parse_csv(["time", *[f"{t}" for t in times]], "toy.csv")


def test_the_slice_is_the_busiest_stretch_compressed_to_the_asked_rate() -> None:
    # 100 s of one request every 20 s, then a burst of 20 in 2 s, then quiet again
    times = [float(t) for t in range(0, 100, 20)] + [100 + 0.1 * k for k in range(20)] + [150.0, 200.0]
    trace = _trace(times)
    plan = schedule(trace, rate_per_s=2.0, seconds=0.5)
    # the whole trace's mean rate is 27 / 200 s; 2/s asks for its time x14.8 faster
    assert plan.speedup == pytest.approx(2.0 * 200 / 27)
    # half a demo second covers 7.4 trace seconds: the slice is the burst, not the start of the trace
    assert plan.trace_start_s == pytest.approx(100.0)
    assert len(plan.offsets) == 20
    assert plan.offsets[0] == 0.0
    assert plan.offsets == tuple(sorted(plan.offsets))
    assert plan.offsets[-1] == pytest.approx(1.9 / plan.speedup)
    assert plan.attribution is None


def test_a_cap_thins_evenly_and_keeps_the_first_request() -> None:
    trace = _trace([0.01 * k for k in range(1000)])
    plan = schedule(trace, rate_per_s=100.0, seconds=10.0, max_requests=100)
    assert len(plan.offsets) == 100
    gaps = [b - a for a, b in zip(plan.offsets, plan.offsets[1:], strict=False)]
    assert max(gaps) == pytest.approx(min(gaps), rel=0.2)


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        schedule(_trace([0.0, 1.0]), rate_per_s=0, seconds=10)


@pytest.mark.skipif(not DEFAULT_TRACE.is_file(), reason="../shared/traces is not beside this checkout")
def test_the_azure_code_trace_slice_is_bursty_and_keeps_its_attribution() -> None:
    trace = load_trace()
    assert trace.attribution == AZURE_ATTRIBUTION
    assert "CC-BY 4.0" in AZURE_ATTRIBUTION
    plan = schedule(trace, rate_per_s=12.0, seconds=60.0, max_requests=1440)
    # the busiest minute at this compression holds more than the mean rate's share
    assert plan.rate > 12.0
    assert 0 < plan.seconds <= 60.0
    # bursty: the busiest 5 s hold far more than 5/60 of the requests
    peak = max(sum(1 for t in plan.offsets if s <= t < s + 5) for s in plan.offsets)
    assert peak > 2 * len(plan.offsets) * 5 / 60


def _event(reason: str, pool: str, stamp: str, message: str) -> dict[str, object]:
    return {"reason": reason, "involvedObject": {"kind": "InferencePool", "name": pool},
            "lastTimestamp": stamp, "message": message}


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_the_summary_has_the_pools_scale_events_since_the_load_started_in_order() -> None:
    start = _epoch("2026-12-04T20:00:00Z")
    events = [
        _event("ScaledDown", "quickstart", "2026-12-04T20:01:30Z", "all-minilm-l6-v2 2 -> 1"),
        _event("ScaledUp", "quickstart", "2026-12-04T20:00:12Z", "all-minilm-l6-v2 1 -> 2"),
        _event("ScaledUp", "quickstart", "2026-12-04T20:00:14Z", "all-minilm-l6-v2 1 -> 2 (again)"),
        _event("ScaledUp", "quickstart", "2026-12-04T19:50:00Z", "an earlier run's"),
        _event("ScaledUp", "small-models", "2026-12-04T20:00:20Z", "another pool"),
        _event("Placed", "quickstart", "2026-12-04T20:00:05Z", "not a scale event"),
    ]
    s = summarize(events, "quickstart", start, sent=700, served=690, failed=10, epoch=_epoch, dropped=3)
    assert s.scale_ups == ((12.0, "all-minilm-l6-v2 1 -> 2"), (14.0, "all-minilm-l6-v2 1 -> 2 (again)"))
    assert s.scale_downs == ((90.0, "all-minilm-l6-v2 2 -> 1"),)
    text = "\n".join(s.lines())
    assert "690 served" in text
    assert "3 not sent" in text
    assert "ScaledUp   first at + 12.0 s" in text
    assert "ScaledDown first at + 90.0 s" in text
    assert "last at  + 14.0 s  (2 Events)" in text


def test_a_summary_without_scaling_says_so() -> None:
    s = summarize([], "quickstart", 0.0, sent=0, served=0, failed=0, epoch=_epoch)
    assert s.lines()[1:] == ["  no ScaledUp Event", "  no ScaledDown Event"]


def test_a_request_carries_the_asked_rows_in_its_batch_dimension_only() -> None:
    from gpupool_operator.local.endpoints import request_inputs

    meta = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": ["-1"]},
                       {"name": "pixels", "datatype": "FP32", "shape": ["-1", "3", "-1"]},
                       {"name": "fixed", "datatype": "INT64", "shape": ["4"]}]}
    text, pixels, fixed = request_inputs(meta, b"def f():", rows=16)
    assert text.shape() == [16]
    assert pixels.shape() == [16, 3, 1]
    assert fixed.shape() == [4]
    (one,) = request_inputs({"inputs": meta["inputs"][:1]})
    assert one.shape() == [1]


def test_the_demo_changes_only_its_load_targets_cores_and_window_and_says_so() -> None:
    from pathlib import Path

    from gpupool_operator.cli.demo import DEMO_CPU_CORES, _pool_docs, _tune_for_load

    examples = Path(__file__).resolve().parents[2] / "examples" / "pools"
    docs = _pool_docs(examples)
    before = {d["metadata"]["name"]: repr(d) for d in docs}
    said = _tune_for_load(docs, cores=DEMO_CPU_CORES)
    assert said == "quickstart's CPU replicas ask for 1 core(s); scales down after 30s of low load (cluster default 5m)"
    (quick,) = [d for d in docs if d["metadata"]["name"] == "quickstart"]
    assert quick["spec"]["models"][0]["hardware"][0]["cpu"]["cores"] == 1
    assert quick["spec"]["scaling"]["scaleDownStabilizationWindow"] == "30s"
    assert all(repr(d) == before[d["metadata"]["name"]] for d in docs if d is not quick)  # the others as written
    assert _tune_for_load(docs, pool="no-such-pool") is None

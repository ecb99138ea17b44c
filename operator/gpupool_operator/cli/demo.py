"""``gpupool demo``: the whole product in one command, on the local control plane.

Brings the local cluster up (or reuses it), registers the small heterogeneous GPU cluster, installs
the CRDs and the default GPUPoolConfig, runs the operator in this process, applies the example
InferencePools and shows them live (:mod:`demo_view`) until every pool is placed and ready. As root
with the node binaries built it also starts real kubelet nodes (``--no-real-nodes``: KWOK only), and
then replays a slice of a real request trace (:mod:`demo_load`) against the pool on real nodes, so
its queue grows, the operator scales it up, the load stops and it scales down, all shown live. It
prints where each replica runs, the MIG re-layouts, the load's summary and what it all costs, then
stops the operator and, unless ``--keep`` (``--keep-cluster``), the cluster it started; otherwise
it prints how to look with kubectl. Every wait has a deadline, so the demo always ends by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["register", "run"]

DEMO_NAMESPACE = "gpupool-demo"
OPERATOR_NAMESPACE = "gpupool-system"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "pools"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo", help="start the local cluster, run the operator, place the example pools, print the result"
    )
    parser.add_argument("--pools", type=Path, default=EXAMPLES,
                        help="directory of InferencePool YAML (default: %(default)s)")
    parser.add_argument("--spec", type=Path, default=None, help="cluster spec (default: the built-in small-hetero)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds to wait for placement (default: %(default)s)")
    parser.add_argument("--keep-cluster", "--keep", dest="keep_cluster", action="store_true",
                        help="leave the cluster (and the pools) running, to look with kubectl")
    parser.add_argument("--real-nodes", dest="real_nodes", action="store_true", default=None,
                        help="also start the spec's real kubelet nodes (each pool's `real`): replicas there run the "
                             "worker for real (emulated GPUs) and answer requests (default: on as root when the "
                             "node binaries are built)")
    parser.add_argument("--no-real-nodes", dest="real_nodes", action="store_false",
                        help="KWOK fake nodes only (nothing serves, so no load and no scaling is shown)")
    parser.add_argument("--cluster", default="default",
                        help="name of the local cluster (its directory under the cache; default: %(default)s)")
    parser.add_argument("--load-seconds", type=float, default=60.0,
                        help="seconds of trace-driven load against the pool on real nodes (default: %(default)s; "
                             "0: none)")
    parser.add_argument("--load-rate", type=float, default=12.0,
                        help="requests per second the whole trace is compressed to; its busiest slice, replayed, "
                             "runs faster (default: %(default)s)")
    parser.add_argument("--rows-per-request", type=int, default=8,
                        help="texts each request embeds (an embedding client's batch; default: %(default)s, so the "
                             "trace's bursts outrun one 1-core replica)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="request trace CSV (default: ../shared/traces/azure-llm-2023-code.csv, or a bursty "
                             "generator when it is absent)")
    parser.set_defaults(func=run)


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _pool_docs(directory: Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "InferencePool":
                docs.append(doc)
    return docs


def _tune_for_load(docs: list[dict[str, Any]], pool: str = "quickstart", cores: int | None = None,
                   scale_down_window: str = "30s") -> str | None:
    """The demo's only change to the examples, on real nodes with load: ``pool`` scales down after
    ``scale_down_window`` of low load (the cluster default is 5m) and, with ``cores``, its CPU
    replicas ask for that many cores (off by default: tried once, a 1-core MiniLM worker did not get
    Ready within the demo's wait on the loaded 2-core machine; so a scale-up of the 2-core quickstart
    finds no room on the real CPU node and stays unplaced: the decision and its Event still show).
    Returns what it changed, or ``None`` when ``pool`` is not among ``docs``."""
    for doc in docs:
        if doc["metadata"]["name"] != pool:
            continue
        spec = doc.setdefault("spec", {})
        for model in spec.get("models", []):
            for hw in model.get("hardware", []):
                cpu = hw.get("cpu") if hw.get("type") == "CPU" else None
                if cores is not None and isinstance(cpu, dict) and float(cpu.get("cores", 0)) > cores:
                    cpu["cores"] = cores
        spec.setdefault("scaling", {})["scaleDownStabilizationWindow"] = scale_down_window
        return ((f"{pool}'s CPU replicas ask for {cores} core(s); " if cores is not None else f"{pool} ")
                + f"scales down after {scale_down_window} of low load (cluster default 5m)")
    return None


def _install(cluster: Any) -> None:
    from gpupool_operator.api import crdgen, default_config

    crds = [text for rel, text in crdgen.render().items() if rel.startswith("crds/")]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input="\n".join(crds))
    cluster.wait_established()
    for ns in (OPERATOR_NAMESPACE, DEMO_NAMESPACE):
        cluster.kubectl("create", "namespace", ns, check=False)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(default_config().to_wire()))


class _InProcessOperator:
    """The operator's kopf loop in a thread, stopped through kopf's stop flag."""

    def __init__(self, kubeconfig: Path) -> None:
        os.environ["KUBECONFIG"] = str(kubeconfig)
        os.environ["GPUPOOL_NAMESPACE"] = OPERATOR_NAMESPACE
        os.environ.setdefault("GPUPOOL_LEASE_SECONDS", "6")
        os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="gpupool-operator", daemon=True)

    def _main(self) -> None:
        import asyncio
        import logging

        import kopf

        import gpupool_operator.handlers  # noqa: F401  (registers the handlers)

        logging.getLogger("kopf").setLevel(logging.ERROR)
        try:
            asyncio.run(kopf.operator(clusterwide=True, standalone=True, stop_flag=self.stop_flag))
        except BaseException as err:  # reported by the demo, never swallowed silently
            self.error = err

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float = 20) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=timeout_s)


def _wait_for_kwok(cluster: Any, nodes: set[str], timeout_s: float = 90) -> None:
    """Wait until one kwok instance holds every node's Lease (after a restart, stale Leases of the
    previous instance must expire first; pods bound meanwhile would never be started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        leases = _get(cluster, "leases", "-n", "kube-node-lease")["items"]
        holders = {ls["metadata"]["name"]: ls["spec"].get("holderIdentity") for ls in leases}
        ready = {n["metadata"]["name"] for n in _get(cluster, "nodes")["items"]
                 if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))}
        if nodes <= ready and nodes <= set(holders) and len({holders[n] for n in nodes}) == 1:
            return
        time.sleep(1)
    _say(f"nodes or their kwok Leases not settled after {timeout_s:.0f}s; going on")


def _clear_earlier_run(cluster: Any, spec_nodes: set[str], timeout_s: float = 90) -> None:
    """On a cluster kept from an earlier run (``--keep``, or stopped with its state): its pools in
    the demo namespace and the KWOK fake nodes that are not in this run's spec are deleted first,
    so the view shows this run's placement and not replicas left on nodes of another spec. Bounded."""
    pools = _get(cluster, "inferencepools", "-n", DEMO_NAMESPACE)["items"]
    stale = sorted(_fake_nodes(_get(cluster, "nodes")["items"]) - spec_nodes)
    if not pools and not stale:
        return
    _say(f"clearing an earlier run: {len(pools)} pool(s) in {DEMO_NAMESPACE}, {len(stale)} fake node(s) not in "
         "this spec")
    if pools:
        cluster.kubectl("delete", "inferencepools", "--all", "-n", DEMO_NAMESPACE, "--wait=true",
                        f"--timeout={int(timeout_s)}s", check=False)
    if stale:
        cluster.kubectl("delete", "nodes", *stale, "--wait=false", check=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _get(cluster, "pods", "-n", DEMO_NAMESPACE)["items"]:
        time.sleep(1)


def _fake_nodes(nodes: Sequence[Mapping[str, Any]]) -> set[str]:
    """The KWOK fake nodes among ``nodes``, by the operator's own test (``servingReplicas``)."""
    from gpupool_operator.adapters.status import is_fake_node

    return {n["metadata"]["name"] for n in nodes if is_fake_node(n)}


def _get(cluster: Any, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def _placed(pool: Mapping[str, Any]) -> bool:
    status = pool.get("status") or {}
    return status.get("observedGeneration") == pool["metadata"].get("generation") and any(
        c["type"] == "Placed" for c in status.get("conditions", [])
    )


def _pod_state(pod: dict[str, Any] | None) -> str:
    if pod is None:
        return "-"
    if pod["spec"].get("schedulingGates"):
        return "gated (MIG)"
    if not pod["spec"].get("nodeName"):
        return "pending"
    return str(pod.get("status", {}).get("phase", "?")).lower()


def _ready_pod(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions", []))


def why_not_serving(pod: Mapping[str, Any] | None, pool: Mapping[str, Any], model: str, fake_nodes: set[str],
                    warnings: Mapping[str, str] | None = None) -> str:
    """Why a placed replica does not answer requests, in the words of whoever knows: KWOK (a fake
    node runs nothing), the kubelet (a container waiting: ``CreateContainerConfigError``,
    ``CrashLoopBackOff``; or its latest Warning Event, ``warnings`` by pod name: ``FailedMount:
    ... secret "models-s3" not found``), or the worker itself through the pool's ModelLoadFailed
    condition (``FetchFailed: hf://... Connection refused``). Empty when it serves."""
    if pod is None:
        return "no pod yet"
    name = pod["metadata"]["name"]
    node = (pod.get("spec") or {}).get("nodeName") or ""
    if not node:
        return "gated until its MIG slice exists" if pod["spec"].get("schedulingGates") else "not scheduled yet"
    if node in fake_nodes:
        return "on a KWOK fake node: nothing runs there"
    if _ready_pod(pod):
        return ""
    for cond in (pool.get("status") or {}).get("conditions", []):
        if cond.get("type") != "ModelLoadFailed" or cond.get("status") != "True":
            continue
        text, mine = str(cond.get("message", "")), f"model {model} (replica {name}): "
        if mine in text:  # the worker's own words for this replica (modelload.LoadFailure.describe)
            return text.split(mine, 1)[1].split("; model ", 1)[0]
    for status in (pod.get("status") or {}).get("containerStatuses", []):
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
            return f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
    if warnings and name in warnings:
        return warnings[name]
    return "starting (not Ready yet)"


def _latest_warnings(cluster: Any) -> dict[str, str]:
    """The newest Warning Event per pod in the demo namespace, as ``Reason: message``."""
    out: dict[str, tuple[str, str]] = {}
    for e in _get(cluster, "events", "-n", DEMO_NAMESPACE)["items"]:
        obj = e.get("involvedObject") or {}
        if e.get("type") != "Warning" or obj.get("kind") != "Pod":
            continue
        stamp = e.get("lastTimestamp") or e.get("eventTime") or ""
        if obj.get("name") not in out or stamp >= out[obj["name"]][0]:
            out[obj["name"]] = (stamp, f"{e.get('reason', '')}: {e.get('message', '')}")
    return {pod: text for pod, (_, text) in out.items()}


def _report(cluster: Any) -> str:
    pools = _get(cluster, "inferencepools", "-n", DEMO_NAMESPACE)["items"]
    pods = {p["metadata"]["name"]: p for p in _get(cluster, "pods", "-n", DEMO_NAMESPACE)["items"]}
    fake = _fake_nodes(_get(cluster, "nodes")["items"])
    why_rows: list[tuple[str, ...]] = [("POOL", "MODEL", "POD", "WHY IT DOES NOT SERVE")]
    warnings = _latest_warnings(cluster)
    rows: list[tuple[str, ...]] = [("POOL", "MODEL", "POD", "NODE", "RESOURCE", "STATE", "$/h")]
    totals: list[tuple[str, ...]] = [("POOL", "REPLICAS", "READY", "SERVING", "$/h", "$/1M", "PLACED", "DEGRADED")]
    for pool in sorted(pools, key=lambda p: p["metadata"]["name"]):
        name = pool["metadata"]["name"]
        status = pool.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions", [])}
        for model in status.get("models", []):
            for r in model.get("replicas", []):
                resource = r["resource"] + (f" x{r['count']}" if r.get("count", 1) > 1 else "")
                pod = pods.get(r.get("pod") or "")
                rows.append((name, model["name"], r.get("pod") or "-", r.get("node") or "-", resource,
                             _pod_state(pod), r.get("usdPerHour", "-")))
                why = why_not_serving(pod, pool, model["name"], fake, warnings)
                if why:
                    why_rows.append((name, model["name"], r.get("pod") or "-", " ".join(why.split())[:200]))
            if model.get("message"):
                rows.append((name, model["name"], "-", "-", "-", "unplaced", model["message"][:80]))
        degraded = conds.get("Degraded", {})
        totals.append((name, str(status.get("desiredReplicas", 0)), str(status.get("readyReplicas", 0)),
                       str(status.get("servingReplicas", 0)), status.get("usdPerHour", "-"),
                       status.get("usdPerMillionInferences", "-"),
                       conds.get("Placed", {}).get("status", "?"),
                       f"{degraded.get('status', '?')} ({degraded.get('reason', '')})"))
    mig_rows: list[tuple[str, ...]] = [("NODE", "MIG CONFIG", "STATE", "LAYOUT PER GPU")]
    for node in _get(cluster, "nodes")["items"]:
        labels = node["metadata"].get("labels", {})
        ann = node["metadata"].get("annotations", {})
        config = labels.get("nvidia.com/mig.config", "")
        if config.startswith("gpupool-") or "gpupool.io/mig-layout-target" in ann:
            layout = ann.get("gpupool.io/mig-layout-target") or ann.get("gpupool.io/mig-layout", "")
            mig_rows.append((node["metadata"]["name"], config, labels.get("nvidia.com/mig.config.state", ""),
                             layout))
    out = ["Replicas:", _table(rows), "", "Pools:", _table(totals), ""]
    if len(why_rows) > 1:
        out += ["Replicas that do not serve, and why (the kubelet's or the worker's own words):", _table(why_rows), ""]
    out += ["MIG re-layouts requested:", _table(mig_rows) if len(mig_rows) > 1 else "  none (existing slices fit)"]
    out.append("\n$/1M needs traffic: it appears once workers report inferences.")
    return "\n".join(out)


def _live(cluster: Any, operator: _InProcessOperator, timeout_s: float, done: Callable[[Any], bool],
          notes: Callable[[], Sequence[str]] = tuple, start: float | None = None) -> Any:
    """Until ``done(view)`` (or ``timeout_s``): a live view on a terminal (:mod:`demo_view`), one
    line per change otherwise (logs, CI). Returns the last view."""
    from rich.console import Console
    from rich.live import Live

    from gpupool_operator.cli import demo_view

    console = Console(stderr=True)
    start = time.monotonic() if start is None else start
    deadline = time.monotonic() + timeout_s
    last = ""
    told: set[str] = set()
    live = Live(console=console, refresh_per_second=2, transient=False) if console.is_terminal else None
    with live if live is not None else contextlib.nullcontext():
        while True:
            view = demo_view.gather(lambda *a: _get(cluster, *a), DEMO_NAMESPACE, time.monotonic() - start,
                                    notes())
            if live is not None:
                live.update(demo_view.render(view))
            else:
                line = " | ".join([demo_view.progress(view), *view.notes[:1]])
                if line != last:
                    _say(line)
                    last = line
                for event in view.events:  # a scale decision as it happens, once (the terminal view has a table)
                    uid = str((event.get("metadata") or {}).get("uid", ""))
                    if event.get("reason") in SCALE_REASONS and uid not in told:
                        told.add(uid)
                        _say(f"{event['reason']} {(event.get('involvedObject') or {}).get('name', '')}: "
                             f"{event.get('message', '')}")
            if done(view):
                return view
            if operator.error is not None:
                raise RuntimeError(f"the operator stopped: {operator.error!r}")
            if time.monotonic() > deadline:
                return view
            time.sleep(1.0)


#: Events the demo's log (no terminal) prints as they happen
SCALE_REASONS = ("ScaledUp", "ScaledDown")


def _serving(view: Any) -> bool:
    """Whether a replica pod is ready on a real (not KWOK) node: only those answer requests."""
    fake = _fake_nodes(view.nodes)
    return any(p["spec"].get("nodeName") and p["spec"]["nodeName"] not in fake and _ready_pod(p) for p in view.pods)


def _watch(cluster: Any, operator: _InProcessOperator, timeout_s: float) -> float:
    """Until every pool is placed and every replica ready (or ``timeout_s``); returns the seconds taken."""
    start = time.monotonic()

    def ready(view: Any) -> bool:
        placed = sum(1 for p in view.pools if _placed(p))
        got = sum((p.get("status") or {}).get("readyReplicas", 0) for p in view.pools)
        want = sum((p.get("status") or {}).get("desiredReplicas", 0) for p in view.pools)
        return bool(placed == len(view.pools) and got >= want > 0)

    seen: dict[str, Any] = {"ready": -1, "since": time.monotonic()}

    def settled(view: Any) -> bool:
        """Everything ready, or every pool placed and no replica became ready for 60 s (a model whose
        source is unreachable offline, Hugging Face or S3, never gets ready on a real node)."""
        if ready(view):
            return True
        got = sum((p.get("status") or {}).get("readyReplicas", 0) for p in view.pools)
        if got != seen["ready"]:
            seen.update(ready=got, since=time.monotonic())
        placed = all(_placed(p) for p in view.pools) and bool(view.pools)
        return placed and _serving(view) and time.monotonic() - seen["since"] > 60

    view = _live(cluster, operator, timeout_s, settled)
    took = time.monotonic() - start
    if not ready(view) and settled(view):
        _say(f"not every replica is ready after {took:.0f}s and none became ready for 60s: going on (replicas "
             "of models from Hugging Face or S3 cannot load offline on real nodes; `kubectl logs` says why)")
    elif ready(view):
        _say(f"every pool placed and every replica ready after {took:.0f}s")
    else:
        _say(f"not everything is ready after {timeout_s:.0f}s; showing what there is")
    return took


#: The CPU cores the demo's load target asks per replica on real nodes (quickstart asks 2, all this
#: 2-core machine's real CPU node has: a scale-up would never find room).
DEMO_CPU_CORES = 1

#: The demo's scaling windows (set only for the demo, so a burst and its end show within minutes;
#: the operator's defaults are Knative's: a 60 s stable window, 600 s pending timeout).
DEMO_SCALING = {"stable_window_s": 20, "panic_window_s": 4, "panic_decay_half_life_s": 10, "hold_startups": 1,
                "pending_timeout_s": 30}


def _trace(path: Path | None) -> Any:
    from gpupool_operator.cli import demo_load
    from gpupool_operator.sim import generators

    path = path or demo_load.DEFAULT_TRACE
    if path.is_file():
        return demo_load.load_trace(path)
    _say(f"no trace at {path}: a bursty generator instead (on/off bursts)")
    return generators.onoff(on_rate=10.0, duration=3600.0, on=15.0, off=30.0, off_rate=0.5)


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _load_phase(cluster: Any, operator: _InProcessOperator, args: argparse.Namespace) -> list[str]:
    """Replay a trace slice against the pool on real nodes; watch the operator scale it up, then,
    once the load stops, down. Bounded: the load's length plus 150 s. Returns the summary lines."""
    from gpupool_operator.cli import demo_load
    from gpupool_operator.local import endpoints

    api = cluster.api_client()
    pools = [p["metadata"]["name"] for p in _get(cluster, "inferencepools", "-n", DEMO_NAMESPACE)["items"]]
    order = sorted(pools, key=lambda n: (n != "quickstart", n))
    target = next((n for n in order if endpoints.endpoints(api, DEMO_NAMESPACE, n)), None)
    if target is None:
        _say("no pool has a ready replica on a real node (KWOK replicas serve nothing): no load")
        return ["load: none (no pool has a ready replica on a real node)"]
    trace = _trace(args.trace)
    rate = args.load_rate
    plan = demo_load.schedule(trace, rate, args.load_seconds, max_requests=int(rate * args.load_seconds * 2))
    source = plan.attribution or f"requests: {plan.source} (generated)"
    rows = max(1, int(getattr(args, "rows_per_request", 1)))
    _say(f"load: {len(plan.offsets)} requests over {plan.seconds:.0f}s (busiest slice of {plan.source} from "
         f"{plan.trace_start_s:.0f}s, time x{1 / plan.speedup:.2f}), {rows} texts each -> pool {target}'s ready "
         "endpoints")
    _say(f"demo-only scaling windows: GPUPOOL_SCALING_PARAMS={os.environ.get('GPUPOOL_SCALING_PARAMS')}")
    replayer = demo_load.Replayer(plan, lambda: endpoints.endpoints(api, DEMO_NAMESPACE, target), rows=rows).start()
    started = replayer.started
    start_mono = time.monotonic()

    def summary(view: Any) -> Any:
        return demo_load.summarize(view.events, target, started, replayer.sent, replayer.served,
                                   replayer.failed, _epoch, replayer.dropped)

    def notes() -> list[str]:
        phase = "load running" if not replayer.done.is_set() else "load stopped: waiting for the scale-down"
        return [f"{phase}: pool {target}: {replayer.sent}/{len(plan.offsets)} sent, {replayer.served} served, "
                f"{replayer.failed} failed, {replayer.dropped} not sent, {replayer.in_flight} in flight", source]

    def desired(view: Any) -> int:
        pool: Mapping[str, Any] = next((p for p in view.pools if p["metadata"]["name"] == target), {})
        return int((pool.get("status") or {}).get("desiredReplicas", 0))

    seen = {"first": -1, "max": 0, "back_at": -1.0, "ready0": -1, "ready_up_at": -1.0}

    def ready(view: Any) -> int:
        pool: Mapping[str, Any] = next((p for p in view.pools if p["metadata"]["name"] == target), {})
        return int((pool.get("status") or {}).get("readyReplicas", 0))

    def done(view: Any) -> bool:
        s = summary(view)
        now = desired(view)
        if seen["first"] < 0:
            seen["first"] = now
            seen["ready0"] = ready(view)
        if seen["ready_up_at"] < 0 and ready(view) > seen["ready0"]:
            seen["ready_up_at"] = time.time() - started  # a replica the scale-up added is Ready
        seen["max"] = max(seen["max"], now)
        if seen["max"] > seen["first"] and now <= seen["first"] and seen["back_at"] < 0:
            seen["back_at"] = time.time() - started  # desired replicas back down (an Event or not)
        if not replayer.done.is_set():
            return False
        if seen["max"] <= seen["first"]:
            return True  # nothing scaled up: no scale-down to wait for
        # back to the replicas before the load, and its ScaledDown Event (a scale-down part way,
        # 3 -> 2 while the load still ran, is not the end)
        return seen["back_at"] >= 0 and bool(s.scale_downs) and s.scale_downs[-1][0] >= seen["back_at"] - 5

    try:
        view = _live(cluster, operator, plan.seconds + 150.0, done, notes, start=start_mono)
    finally:
        replayer.stop()
    s = summary(view)
    pool: Mapping[str, Any] = next((p for p in view.pools if p["metadata"]["name"] == target), {})
    st = pool.get("status") or {}
    lines = [f"Load on pool {target} ({len(plan.offsets)} requests over {plan.seconds:.0f}s, mean "
             f"{plan.rate:.1f}/s; busiest slice of {plan.source}, time x{1 / plan.speedup:.2f}):", *s.lines(),
             f"  {target}: {st.get('readyReplicas', 0)}/{st.get('desiredReplicas', 0)} replicas ready "
             f"({st.get('servingReplicas', 0)} serving, not on KWOK fake nodes), "
             f"${st.get('usdPerHour', '-')}/h, ${st.get('usdPerMillionInferences', '-')} per 1M inferences "
             "(from the workers' own metrics)",
             f"  desired replicas: {seen['first']} before the load, at most {seen['max']}, "
             + (f"back to {seen['first']} at +{seen['back_at']:.1f} s" if seen["back_at"] >= 0 else "not back down"),
             "  ready replicas: " + (f"{seen['ready0']} before the load, an added one Ready at "
                                     f"+{seen['ready_up_at']:.1f} s" if seen["ready_up_at"] >= 0
                                     else f"{seen['ready0']} before the load, none added became Ready"),
             "  requests answered per replica: " + ", ".join(
                 f"{address} {n}" for address, n in sorted(replayer.served_by.items())),
             f"  {source}"]
    return lines


def _serve_traffic(cluster: Any, requests: int = 40, wait_s: float = 45) -> None:
    """Requests through every pool's endpoints on real nodes, then wait (bounded) for the pools'
    $ per million inferences, which the operator computes from the workers' own metrics."""
    from gpupool_operator.local import endpoints

    api = cluster.api_client()
    rows: list[tuple[str, ...]] = [("POOL", "MODEL", "ENDPOINT", "NODE", "REQUESTS", "P50 ms", "RESULT")]
    served: set[str] = set()
    for pool in _get(cluster, "inferencepools", "-n", DEMO_NAMESPACE)["items"]:
        name = pool["metadata"]["name"]
        eps = endpoints.endpoints(api, DEMO_NAMESPACE, name)
        if not eps:
            rows.append((name, "-", "-", "-", "0", "-", "no replica on a real node (KWOK replicas serve nothing)"))
        for ep in eps:
            try:
                took = sorted(endpoints.send(ep.address, ep.model, requests))
                rows.append((name, ep.model, ep.address, ep.node, str(len(took)),
                             f"{took[len(took) // 2] * 1000:.1f}", "ok"))
                served.add(name)
            except Exception as err:  # shown, never fatal: the table says what failed
                rows.append((name, ep.model, ep.address, ep.node, "0", "-", " ".join(str(err).split())[:80]))
    print("Requests through each pool's endpoints (EndpointSlices; no kube-proxy here):")
    print(_table(rows))
    deadline = time.monotonic() + wait_s
    while served and time.monotonic() < deadline:
        pools = _get(cluster, "inferencepools", "-n", DEMO_NAMESPACE)["items"]
        if all((p.get("status") or {}).get("usdPerMillionInferences") for p in pools
               if p["metadata"]["name"] in served):
            return
        time.sleep(2)
    if served:
        _say(f"no $/1M reported within {wait_s:.0f}s (the operator reads worker metrics every GPUPOOL_STATS_SECONDS)")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


REAL_SPEC = EXAMPLES.parent / "clusters" / "real-small.yaml"


def _use_real_nodes(requested: bool | None) -> tuple[bool, str | None]:
    """Whether to start real kubelet nodes, and the one line saying why not when it does not."""
    from gpupool_operator.local import toolchain

    if requested is not None:
        return requested, None if requested else "KWOK fake nodes only (--no-real-nodes): nothing serves, so " \
            "no load and no scaling is shown"
    if os.geteuid() != 0:
        return False, "KWOK fake nodes only: real kubelet nodes need root (run as root to see requests served " \
                      "and the pool scaled)"
    missing = toolchain.missing_node_binaries()
    if missing:
        return False, f"KWOK fake nodes only: the real-node binaries are not built ({', '.join(missing)}; " \
                      "`gpupool local build --nodes` builds them)"
    from gpupool_operator.local import realnodes

    lacking = realnodes.prerequisites()
    if lacking:
        return False, f"KWOK fake nodes only: real kubelet nodes cannot run here: missing {'; '.join(lacking)}"
    return True, None


def _kubectl_hints(kubeconfig: Path) -> str:
    return "\n".join([
        "Look with kubectl:",
        f"  export KUBECONFIG={kubeconfig}",
        "  kubectl get ipool -A                       # pools: replicas, ready, $/h, $/1M",
        f"  kubectl get pods -n {DEMO_NAMESPACE} -o wide     # replica pods and their nodes",
        f"  kubectl get events -n {DEMO_NAMESPACE} --sort-by=.lastTimestamp   # ScaledUp/ScaledDown, MIG, placements",
        "  kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/mig.config,nvidia.com/mig.config.state",
        "  gpupool local down                          # stop it all",
    ])


def run(args: argparse.Namespace) -> int:
    from gpupool_operator.local.cluster import ClusterError, LocalCluster, default_dir
    from gpupool_operator.local.nodes import build_nodes, register_nodes
    from gpupool_operator.local.spec import load

    use_real, why = _use_real_nodes(getattr(args, "real_nodes", None))
    if why:
        _say(why)
    default_spec = REAL_SPEC if use_real else \
        Path(__file__).resolve().parents[1] / "local" / "clusters" / "small-hetero.yaml"
    spec_path = args.spec or default_spec
    docs = _pool_docs(args.pools) if args.pools.is_dir() else []
    if not docs:
        print(f"gpupool demo: no InferencePools found in {args.pools} (use --pools DIR)", file=sys.stderr)
        return 1
    cluster = LocalCluster(default_dir(getattr(args, "cluster", "default")))
    started_here = not cluster.is_up()
    operator: _InProcessOperator | None = None
    mig_manager: Any = None
    real: Any = None
    t0 = time.monotonic()
    try:
        if started_here:
            _say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)")
            cluster.start()
        spec = load(spec_path)
        _say(f"registering {spec.node_count} fake GPU/CPU nodes from {spec_path.name}")
        nodes = build_nodes(spec)
        register_nodes(cluster.api_client(), nodes, progress=None)
        _wait_for_kwok(cluster, {n["metadata"]["name"] for n in nodes})
        _say("installing the CRDs and the default GPUPoolConfig")
        _install(cluster)
        _clear_earlier_run(cluster, {n["metadata"]["name"] for n in nodes})  # a no-op on a new cluster
        if use_real:
            from gpupool_operator.local.realnodes import RealNodes, start_spec_nodes

            real = RealNodes(cluster)
            _say(f"starting {spec.real_node_count} real kubelet nodes (containerd, runc, CNI bridge, "
                 "emulated NVIDIA device plugin)")
            start_spec_nodes(real, spec, progress=_say)
            # the local worker image (local.images), for every replica: CPU, GPU and MIG alike
            os.environ["GPUPOOL_WORKER_IMAGE"] = os.environ["GPUPOOL_WORKER_IMAGE_CUDA"] = real.host.tag
            os.environ.setdefault("GPUPOOL_STATS_SECONDS", "5")  # $/1M soon after the demo's traffic
            if args.load_seconds > 0:
                # demo-only: short scaling windows so a burst and its end show within minutes
                os.environ.setdefault("GPUPOOL_SCALING_PARAMS", json.dumps(DEMO_SCALING))
                os.environ.setdefault("GPUPOOL_SCALING_STATE_SECONDS", "5")
        from gpupool_operator.local.migmanager import MigManager

        # NVIDIA's MIG manager, emulated: without it a replica gated on a MIG change waits forever
        mig_manager = MigManager(cluster.api_client(), OPERATOR_NAMESPACE, delay_s=2.0,
                                 real_nodes=real.mig_targets if real is not None else {}).start()
        _say("starting the operator")
        operator = _InProcessOperator(cluster.kubeconfig)
        operator.start()
        if real is not None and args.load_seconds > 0:
            tuned = _tune_for_load(docs, cores=DEMO_CPU_CORES)
            if tuned:
                _say(f"demo only: {tuned}")
        _say(f"applying {len(docs)} example InferencePools to namespace {DEMO_NAMESPACE}")
        cluster.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", "-", input=yaml.safe_dump_all(docs))
        took = _watch(cluster, operator, args.timeout)
        _say(f"all-Ready took {took:.0f}s after the pools were applied ({time.monotonic() - t0:.0f}s since start)")
        load_lines: list[str] = []
        if real is not None and args.load_seconds > 0:
            load_lines = _load_phase(cluster, operator, args)
        elif real is not None:
            _serve_traffic(cluster)
        print(_report(cluster))
        if load_lines:
            print("\n" + "\n".join(load_lines))
        return 0
    except (ClusterError, RuntimeError) as err:
        print(f"gpupool demo: {err}", file=sys.stderr)
        return 1
    finally:
        if operator is not None:
            _say("stopping the operator")
            operator.stop()
        if mig_manager is not None:
            mig_manager.stop()
        if args.keep_cluster or not started_here:
            _say("cluster left running" + ("" if started_here else " (it was up before the demo)"))
            print(_kubectl_hints(cluster.kubeconfig), file=sys.stderr)
        else:
            # destroy, not stop: a kept etcd would hand the next demo this run's pools, Events and Lease
            _say("stopping the local control plane" + (" and the real nodes" if real is not None else "")
                 + " and removing its data")
            cluster.destroy()
        _say(f"done in {time.monotonic() - t0:.0f}s")

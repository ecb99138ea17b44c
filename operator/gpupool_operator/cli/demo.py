"""``gpupool demo``: the whole product in one command, on the local control plane.

Brings the local cluster up (or reuses it), registers the small heterogeneous GPU cluster, installs
the CRDs and the default GPUPoolConfig, runs the operator in this process, applies the example
InferencePools, waits (bounded) until every pool is placed, prints where each replica runs, the MIG
re-layouts asked for and what it all costs, then stops the operator and, unless ``--keep-cluster``,
the cluster it started. Every wait has a deadline, so the demo always ends by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Mapping
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
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for placement (default: %(default)s)")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the cluster (and the pools) running")
    parser.add_argument("--real-nodes", action="store_true",
                        help="also start the spec's real kubelet nodes (each pool's `real`; root): replicas there "
                             "run the worker for real (emulated GPUs) and answer requests")
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


def _install(cluster: Any) -> None:
    from gpupool_operator.api import crdgen, default_config

    crds = [text for rel, text in crdgen.render().items() if rel.startswith("crds/")]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input="\n".join(crds))
    cluster.kubectl("wait", "--for=condition=Established", "crd/inferencepools.gpupool.io",
                    "crd/gpupoolconfigs.gpupool.io", "--timeout=60s")
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


def _report(cluster: Any) -> str:
    pools = _get(cluster, "inferencepools", "-n", DEMO_NAMESPACE)["items"]
    pods = {p["metadata"]["name"]: p for p in _get(cluster, "pods", "-n", DEMO_NAMESPACE)["items"]}
    rows: list[tuple[str, ...]] = [("POOL", "MODEL", "POD", "NODE", "RESOURCE", "STATE", "$/h")]
    totals: list[tuple[str, ...]] = [("POOL", "REPLICAS", "READY", "$/h", "$/1M", "PLACED", "DEGRADED")]
    for pool in sorted(pools, key=lambda p: p["metadata"]["name"]):
        name = pool["metadata"]["name"]
        status = pool.get("status") or {}
        conds = {c["type"]: c for c in status.get("conditions", [])}
        for model in status.get("models", []):
            for r in model.get("replicas", []):
                resource = r["resource"] + (f" x{r['count']}" if r.get("count", 1) > 1 else "")
                rows.append((name, model["name"], r.get("pod") or "-", r.get("node") or "-", resource,
                             _pod_state(pods.get(r.get("pod") or "")), r.get("usdPerHour", "-")))
            if model.get("message"):
                rows.append((name, model["name"], "-", "-", "-", "unplaced", model["message"][:80]))
        degraded = conds.get("Degraded", {})
        totals.append((name, str(status.get("desiredReplicas", 0)), str(status.get("readyReplicas", 0)),
                       status.get("usdPerHour", "-"), status.get("usdPerMillionInferences", "-"),
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
    out += ["MIG re-layouts requested:", _table(mig_rows) if len(mig_rows) > 1 else "  none (existing slices fit)"]
    out.append("\n$/1M needs traffic: it appears once workers report inferences.")
    return "\n".join(out)


def _watch(cluster: Any, operator: _InProcessOperator, timeout_s: float) -> None:
    """Until every pool is placed and every replica ready (or ``timeout_s``): a live view on a
    terminal (:mod:`demo_view`), one line per change otherwise (logs, CI)."""
    from rich.console import Console
    from rich.live import Live

    from gpupool_operator.cli import demo_view

    console = Console(stderr=True)
    start = time.monotonic()
    deadline = start + timeout_s
    last = ""
    live = Live(console=console, refresh_per_second=2, transient=False) if console.is_terminal else None
    with live if live is not None else contextlib.nullcontext():
        while True:
            view = demo_view.gather(lambda *a: _get(cluster, *a), DEMO_NAMESPACE, time.monotonic() - start)
            if live is not None:
                live.update(demo_view.render(view))
            else:
                line = demo_view.progress(view)
                if line != last:
                    _say(line)
                    last = line
            placed = sum(1 for p in view.pools if _placed(p))
            ready = sum((p.get("status") or {}).get("readyReplicas", 0) for p in view.pools)
            want = sum((p.get("status") or {}).get("desiredReplicas", 0) for p in view.pools)
            if placed == len(view.pools) and ready >= want > 0:
                return
            if operator.error is not None:
                raise RuntimeError(f"the operator stopped: {operator.error!r}")
            if time.monotonic() > deadline:
                _say(f"not everything is ready after {timeout_s:.0f}s; showing what there is")
                return
            time.sleep(1.0)


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


def run(args: argparse.Namespace) -> int:
    from gpupool_operator.local.cluster import ClusterError, LocalCluster, default_dir
    from gpupool_operator.local.nodes import build_nodes, register_nodes
    from gpupool_operator.local.spec import load

    spec_path = args.spec or Path(__file__).resolve().parents[1] / "local" / "clusters" / "small-hetero.yaml"
    docs = _pool_docs(args.pools) if args.pools.is_dir() else []
    if not docs:
        print(f"gpupool demo: no InferencePools found in {args.pools} (use --pools DIR)", file=sys.stderr)
        return 1
    cluster = LocalCluster(default_dir())
    started_here = not cluster.is_up()
    operator: _InProcessOperator | None = None
    mig_manager: Any = None
    real: Any = None
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
        if args.real_nodes:
            from gpupool_operator.local.realnodes import RealNodes, start_spec_nodes

            real = RealNodes(cluster)
            _say(f"starting {spec.real_node_count} real kubelet nodes (containerd, runc, CNI bridge, "
                 "emulated NVIDIA device plugin)")
            start_spec_nodes(real, spec, progress=_say)
            os.environ["GPUPOOL_WORKER_IMAGE"] = real.host.tag  # the local worker image (local.images)
            os.environ.setdefault("GPUPOOL_STATS_SECONDS", "5")  # $/1M soon after the demo's traffic
        from gpupool_operator.local.migmanager import MigManager

        # NVIDIA's MIG manager, emulated: without it a replica gated on a MIG change waits forever
        mig_manager = MigManager(cluster.api_client(), OPERATOR_NAMESPACE, delay_s=2.0,
                                 real_nodes=real.mig_targets if real is not None else {}).start()
        _say("starting the operator")
        operator = _InProcessOperator(cluster.kubeconfig)
        operator.start()
        _say(f"applying {len(docs)} example InferencePools to namespace {DEMO_NAMESPACE}")
        cluster.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", "-", input=yaml.safe_dump_all(docs))
        _watch(cluster, operator, args.timeout)
        if real is not None:
            _serve_traffic(cluster)
        print(_report(cluster))
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
            _say(f"cluster left running: export KUBECONFIG={cluster.kubeconfig}")
        else:
            _say("stopping the local control plane")
            cluster.stop()

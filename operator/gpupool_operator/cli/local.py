"""``gpupool local``: build, start, inspect and stop the local control plane with fake GPU pools."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from gpupool_operator.local import toolchain
from gpupool_operator.local.cluster import ClusterError, LocalCluster, default_dir
from gpupool_operator.local.nodes import (
    MIG_LAYOUT_ANNOTATION,
    POOL_LABEL,
    build_nodes,
    node_list,
    register_nodes,
)
from gpupool_operator.local.pki import PkiError
from gpupool_operator.local.spec import SpecError, load

#: The built-in cluster specs ship inside the package (examples/clusters/ links to them), so
#: `gpupool local up` has a default even when installed from a wheel.
BUILTIN_SPECS = Path(__file__).resolve().parents[1] / "local" / "clusters"
DEFAULT_SPEC = BUILTIN_SPECS / "small-hetero.yaml"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = sub.add_parser("local", help="a real local Kubernetes control plane with fake GPU node pools")
    local.add_argument(
        "--dir", type=Path, default=None, help="cluster directory (default: ~/.cache/gpupool/clusters/default)"
    )
    verbs = local.add_subparsers(dest="verb", metavar="VERB", required=True)

    up = verbs.add_parser("up", help="build (once) and start the control plane, then register the spec's nodes")
    up.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help=f"cluster spec YAML (default: {DEFAULT_SPEC.name})")
    up.add_argument("--no-nodes", action="store_true", help="start the control plane only")
    up.add_argument(
        "--real-nodes",
        action="store_true",
        help="also start the spec's real kubelet nodes (each pool's `real`; root) and the emulated MIG manager",
    )
    up.set_defaults(func=_up)

    verbs.add_parser("down", help="stop every component (by recorded PID)").set_defaults(func=_down)
    verbs.add_parser("destroy", help="stop and delete the cluster directory").set_defaults(func=_destroy)
    verbs.add_parser("status", help="components, health and node pools").set_defaults(func=_status)
    verbs.add_parser(
        "kubeconfig", help="print the kubeconfig path (export KUBECONFIG=$(gpupool local kubeconfig))"
    ).set_defaults(func=_kubeconfig)
    build = verbs.add_parser("build", help="build and cache the control-plane binaries only")
    build.add_argument(
        "--nodes", action="store_true", help="also what real kubelet nodes need (kubelet, containerd, runc, CNI)"
    )
    build.set_defaults(func=_build)

    nodes = verbs.add_parser("nodes", help="print a spec's Node objects as `kubectl get nodes -o yaml` would")
    nodes.add_argument("spec", type=Path)
    nodes.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    nodes.set_defaults(func=_nodes)


def _cluster(args: argparse.Namespace) -> LocalCluster:
    return LocalCluster(args.dir or default_dir())


def _fail(message: str) -> int:
    print(f"gpupool local: {message}", file=sys.stderr)
    return 1


def _up(args: argparse.Namespace) -> int:
    try:
        spec = None if args.no_nodes else load(args.spec)
        cluster = _cluster(args)
        started = time.monotonic()
        cluster.start()
        print(f"control plane up in {time.monotonic() - started:.1f}s ({cluster.state.server})", file=sys.stderr)
        if spec is not None:
            print(f"registering {spec.node_count} nodes ({spec.gpu_count} GPUs) from {args.spec}", file=sys.stderr)
            register_nodes(cluster.api_client(), build_nodes(spec))
            _wait_ready(cluster, spec.node_count)
            if args.real_nodes:
                from gpupool_operator.local.realnodes import RealNodes, start_spec_nodes

                real = RealNodes(cluster)
                start_spec_nodes(real, spec, progress=lambda line: print(line, file=sys.stderr))
                real.start_mig_manager("gpupool-system")
        print(_summary(cluster))
        print(f"\nexport KUBECONFIG={cluster.kubeconfig}")
        return 0
    except (SpecError, ClusterError, PkiError, toolchain.ToolchainError) as err:
        return _fail(str(err))


def _wait_ready(cluster: LocalCluster, expected: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = sum(1 for n in _nodes_json(cluster) if _is_ready(n))
        if ready >= expected:
            return
        time.sleep(0.5)
    raise ClusterError(
        f"only {ready}/{expected} nodes became Ready within {timeout_s:.0f}s (see {cluster.logs}/kwok.log)"
    )


def _nodes_json(cluster: LocalCluster) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "nodes", "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def _is_ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))


def _summary(cluster: LocalCluster) -> str:
    """One row per node pool: product, GPUs, MIG layout, allocatable accelerator resources, Ready."""
    pools: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for node in _nodes_json(cluster):
        pools[node["metadata"].get("labels", {}).get(POOL_LABEL, "-")].append(node)
    rows = [("POOL", "NODES", "READY", "GPU", "GPUS", "MIG LAYOUT (per GPU)", "ALLOCATABLE (per node)")]
    for pool, nodes in sorted(pools.items()):
        first = nodes[0]
        labels = first["metadata"].get("labels", {})
        alloc = first["status"].get("allocatable", {})
        accel = ", ".join(
            f"{k.removeprefix('nvidia.com/')}={v}" for k, v in sorted(alloc.items()) if k.startswith("nvidia.com/")
        )
        layouts = json.loads(first["metadata"].get("annotations", {}).get(MIG_LAYOUT_ANNOTATION, "[]"))
        shapes = Counter("+".join(f"{n}x{p}" for p, n in sorted(lay.items()) if n) or "whole" for lay in layouts)
        mig = (
            ", ".join(f"{n} GPU: {s}" if n == 1 else f"{n} GPUs: {s}" for s, n in shapes.items())
            if any(layouts)
            else "-"
        )
        rows.append(
            (
                pool,
                str(len(nodes)),
                str(sum(_is_ready(n) for n in nodes)),
                labels.get("nvidia.com/gpu.product", "cpu"),
                labels.get("nvidia.com/gpu.count", "0"),
                mig,
                accel or f"cpu={alloc.get('cpu', '?')}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _down(args: argparse.Namespace) -> int:
    _cluster(args).stop()
    print("stopped")
    return 0


def _destroy(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    cluster.destroy()
    print(f"stopped and removed {cluster.directory}")
    return 0


def _status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    running = cluster.running_components()
    for name, alive in running.items():
        pid = cluster.state.pids.get(name, "-")
        print(f"{name:<24} {'running' if alive else 'stopped':<8} pid={pid}")
    if not cluster.is_up():
        print("cluster is not up (start it with: gpupool local up)")
        return 3
    print(f"api server: {cluster.state.server}  kubeconfig: {cluster.kubeconfig}\n")
    print(_summary(cluster))
    return 0


def _kubeconfig(args: argparse.Namespace) -> int:
    print(_cluster(args).kubeconfig)
    return 0


def _build(args: argparse.Namespace) -> int:
    try:
        bins: dict[str, Path] = dict(vars(toolchain.ensure_binaries()))
        if getattr(args, "nodes", False):
            bins.update(vars(toolchain.ensure_node_binaries()))
    except toolchain.ToolchainError as err:
        return _fail(str(err))
    for name, path in bins.items():
        print(f"{name:<24} {path}")
    return 0


def _nodes(args: argparse.Namespace) -> int:
    try:
        spec = load(args.spec)
    except SpecError as err:
        return _fail(str(err))
    doc = node_list(spec)
    print(json.dumps(doc, indent=2) if args.output == "json" else yaml.safe_dump(doc, sort_keys=False), end="")
    return 0

"""``gpupool operator``: run the operator (the container's entrypoint).

Flags set the environment the operator reads (see ``gpupool_operator.adapters.runtime``), then
kopf runs the handlers cluster-wide in standalone mode: one active replica is chosen by the Lease,
not by kopf's peering, so every replica may watch and only the leader writes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpupool_operator import __version__

if TYPE_CHECKING:
    from gpupool_operator.adapters.health import Address

__all__ = ["register", "run"]

log = logging.getLogger("gpupool.operator")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "operator",
        help="run the gpupool operator (watches InferencePools and Nodes, places replicas)",
        description=__doc__.split("\n")[0] if __doc__ else None,
    )
    parser.add_argument("--kubeconfig", type=Path, help="kubeconfig (default: $KUBECONFIG or in-cluster)")
    parser.add_argument("--namespace", default=os.environ.get("GPUPOOL_NAMESPACE", "gpupool-system"),
                        help="namespace of the leader Lease (and of the MIG ConfigMap unless "
                             "--mig-configmap-namespace says otherwise; default: %(default)s)")
    parser.add_argument("--worker-image", default=os.environ.get("GPUPOOL_WORKER_IMAGE"),
                        help="the torch-free CPU worker image (default: ghcr.io/gpupool/worker:VERSION)")
    parser.add_argument("--worker-image-cuda", default=os.environ.get("GPUPOOL_WORKER_IMAGE_CUDA"),
                        help="the torch/CUDA worker image, for GPU and MIG replicas and models the torch-free "
                             "one cannot serve (default: ghcr.io/gpupool/worker-cuda:VERSION, or --worker-image "
                             "for every replica when only that is given)")
    parser.add_argument("--mig-configmap", default=os.environ.get("GPUPOOL_MIG_CONFIGMAP"),
                        help="the MIG manager's mig-parted ConfigMap (default: gpupool-mig-parted-config)")
    parser.add_argument("--mig-configmap-namespace", default=os.environ.get("GPUPOOL_MIG_CONFIGMAP_NAMESPACE"),
                        help="its namespace, typically the GPU Operator's own (default: --namespace)")
    parser.add_argument("--mig-timeout-seconds", type=float, default=None,
                        help="a MIG re-layout not applied by then is abandoned and its pool Degraded (default 600)")
    parser.add_argument("--mig-cooldown-seconds", type=float, default=None,
                        help="a node whose re-layout failed or timed out is retried after this (default 1800)")
    parser.add_argument("--lease-seconds", type=int, default=None, help="leader Lease duration (default 15)")
    parser.add_argument("--health-address", default=os.environ.get("GPUPOOL_OPERATOR_HEALTH_ADDRESS", ""),
                        help="serve /healthz and /readyz on HOST:PORT, e.g. 0.0.0.0:8081 (default: off)")
    parser.add_argument("--metrics-address", default=os.environ.get("GPUPOOL_OPERATOR_METRICS_ADDRESS", ""),
                        help="serve Prometheus /metrics on HOST:PORT, e.g. 0.0.0.0:8080 (default: off)")
    parser.add_argument("--version", action="version", version=f"gpupool {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every cycle and watch event")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import kopf

    from gpupool_operator.adapters.health import parse_address

    try:
        health = parse_address(args.health_address, "--health-address")
        metrics = parse_address(args.metrics_address, "--metrics-address")
    except ValueError as err:
        print(f"gpupool operator: {err}", file=sys.stderr)
        return 2
    if args.kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(args.kubeconfig.resolve())
    os.environ["GPUPOOL_NAMESPACE"] = args.namespace
    for flag, var in (("worker_image", "GPUPOOL_WORKER_IMAGE"), ("worker_image_cuda", "GPUPOOL_WORKER_IMAGE_CUDA"),
                      ("mig_configmap", "GPUPOOL_MIG_CONFIGMAP"),
                      ("mig_configmap_namespace", "GPUPOOL_MIG_CONFIGMAP_NAMESPACE"),
                      ("mig_timeout_seconds", "GPUPOOL_MIG_TIMEOUT_SECONDS"),
                      ("mig_cooldown_seconds", "GPUPOOL_MIG_FAILURE_COOLDOWN_SECONDS")):
        value = getattr(args, flag)
        if value is not None and value != "":
            os.environ[var] = str(value)
    if args.lease_seconds:
        os.environ["GPUPOOL_LEASE_SECONDS"] = str(args.lease_seconds)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    kopf.configure(verbose=args.verbose, debug=False)
    logging.getLogger("gpupool").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    import gpupool_operator.handlers  # noqa: F401  (registers the handlers)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_operate(health, metrics))
    return 0


async def _operate(health: Address | None, metrics: Address | None) -> None:
    """kopf's operator and the probe/metrics listeners on one event loop (so a blocked loop fails
    liveness)."""
    import kopf

    from gpupool_operator.adapters.health import HealthServer
    from gpupool_operator.adapters.runtime import current

    server = HealthServer(health, metrics, current)
    await server.start()
    log.info("gpupool operator %s; %s", __version__,
             ", ".join(f"{k} on {v}" for k, v in sorted(server.bound.items())) or "no probe or metrics listener")
    try:
        await kopf.operator(clusterwide=True, standalone=True)
    finally:
        await server.close()

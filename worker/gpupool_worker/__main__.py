"""``gpupool-worker``: serve a model repository over the KServe v2 / Triton gRPC protocol.

    gpupool-worker serve --model-repository ./models --builtin minilm --port 8001
    gpupool-worker example-repository ./models     # write generated example models
    gpupool-worker fetch --link /models/current    # fetch GPUPOOL_MODEL_URI into the node cache (init container)
    gpupool-worker drain                           # preStop: running worker goes not-ready, serves, wait

Settings come from GPUPOOL_* environment variables (see ``gpupool_worker.config``); flags win.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gpupool_worker.config import ENV_VARS, SettingsError, WorkerSettings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpupool-worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve models over gRPC (the default command)")
    serve.add_argument("--model-repository", type=Path, help=ENV_VARS["model_repository"])
    serve.add_argument("--builtin", action="append", choices=["minilm"],
                       help="also serve a built-in model (repeatable)")
    serve.add_argument("--host", help="address to bind (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help=f"gRPC port; 0 picks a free one ({ENV_VARS['grpc_port']})")
    serve.add_argument("--metrics-port", type=int, help=f"Prometheus port, 0 disables ({ENV_VARS['metrics_port']})")
    serve.add_argument("--device", help=ENV_VARS["device"])
    serve.add_argument("--engine", choices=["auto", "eager", "compile", "triton", "onnx"], help=ENV_VARS["engine"])
    serve.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16", "int8"],
                       help=ENV_VARS["precision"])
    serve.add_argument("--drain-seconds", type=float, help=ENV_VARS["drain_seconds"])
    serve.add_argument("--stop-grace-seconds", type=float, help=ENV_VARS["stop_grace_seconds"])
    serve.add_argument("--torch-threads", type=int, help=ENV_VARS["torch_threads"])
    serve.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                       help=f"replay CUDA graphs for small batches on a GPU; model.json overrides "
                            f"({ENV_VARS['cuda_graphs']}, default on)")
    serve.add_argument("--ort-spinning", action=argparse.BooleanOptionalAction, default=None,
                       help=f"let ONNX Runtime's idle intra-op threads spin ({ENV_VARS['ort_spinning']}, default "
                            f"off: they would take the cores the event loop and the batcher need)")
    serve.add_argument("--log-level", default="INFO")
    fetch = sub.add_parser("fetch", help="fetch the pool's model (GPUPOOL_MODEL_URI) into the node cache and exit")
    fetch.add_argument("--link", type=Path, help="also make this path a symlink to the fetched model")
    sub.add_parser("drain", help="the pod's preStop hook: tell the running worker (its pid in "
                   f"{ENV_VARS['pid_file']}) to report not-ready while it keeps serving, then wait "
                   f"{ENV_VARS['drain_seconds']} so the kubelet's SIGTERM comes after the drain")
    example = sub.add_parser("example-repository", help="write the generated example models")
    example.add_argument("directory", type=Path)
    example.add_argument("--no-minilm", action="store_true", help="leave out the MiniLM entry")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    if args.command == "fetch":  # an init container's job: gpupool_worker.sources.cli
        from gpupool_worker.sources.cli import run_fetch

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            stream=sys.stderr)
        return run_fetch(args.link)
    if args.command == "drain":
        return _drain()
    if args.command == "example-repository":
        from gpupool_worker.engine.models.examples import write_example_repository

        root = write_example_repository(args.directory, include_minilm=not args.no_minilm)
        print(f"wrote example models to {root}")
        return 0
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        settings = WorkerSettings.from_env().override(
            model_repository=args.model_repository,
            builtin_models=tuple(args.builtin) if args.builtin else None,
            host=args.host, grpc_port=args.port, metrics_port=args.metrics_port,
            device=args.device, engine=args.engine, precision=args.precision,
            drain_seconds=args.drain_seconds, stop_grace_seconds=args.stop_grace_seconds,
            torch_threads=args.torch_threads, cuda_graphs=args.cuda_graphs, ort_spinning=args.ort_spinning)
        if settings.model_repository is None and not settings.builtin_models and not os.environ.get(
                "GPUPOOL_MODEL_URI"):  # the pool's model (gpupool_worker.engine.models.pool_model)
            raise SettingsError(
                f"nothing to serve: pass --model-repository (or {ENV_VARS['model_repository']}), "
                f"set GPUPOOL_MODEL_URI and/or pass --builtin minilm")
    except SettingsError as exc:
        print(f"gpupool-worker: {exc}", file=sys.stderr)
        return 2
    from gpupool_worker.server.app import serve

    asyncio.run(serve(settings))
    return 0


def _drain() -> int:
    """Signal the worker to begin its drain (SIGUSR1; its pid from GPUPOOL_PID_FILE, else PID 1 when
    that is a gpupool worker, as in its container), then wait it out. Exits 0 even when no worker
    is found (the wait alone still lets the endpoints update before SIGTERM)."""
    import signal
    import time

    try:
        settings = WorkerSettings.from_env()
    except SettingsError as exc:
        print(f"gpupool-worker drain: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            pid = int(Path(settings.pid_file).read_text().strip())
        except OSError:
            # no pid file (a read-only root filesystem): in a container the worker is PID 1
            if b"gpupool" not in Path("/proc/1/cmdline").read_bytes():
                raise
            pid = 1
        os.kill(pid, signal.SIGUSR1)
        print(f"gpupool-worker drain: worker {pid} reports not-ready, serving for {settings.drain_seconds:g} s",
              file=sys.stderr)
    except (OSError, ValueError) as exc:
        print(f"gpupool-worker drain: no running worker found via {settings.pid_file} ({exc}); waiting anyway",
              file=sys.stderr)
    time.sleep(settings.drain_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

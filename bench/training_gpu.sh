#!/usr/bin/env bash
# The training throughput bench on a lent GPU, in one call (docs/benchmarks.md says how it was
# run). From the repository root on the GPU machine:
#   bash bench/training_gpu.sh [bench options]
# The machine's image has torch, transformers and peft but no pydantic, which the training
# package's CLI imports: its wheels travel in .whl (see docs/benchmarks.md) and are installed
# here into /tmp/site. Results: $OUT/rows.json (written after every row) and $OUT/bench.log.
set -uo pipefail
out=${OUT:-/tmp/sovai-bench}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=training${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
# FP8 matmul check before the bench: the same product in bf16 and through float8.py, forward
# and backward, on random data (relative error), and both matmul rates on one large shape.
python3 - <<'PY'
import torch
from sovereign_training.float8 import _Float8Matmul

torch.manual_seed(0)
x = torch.randn(8192, 2048, device="cuda", dtype=torch.bfloat16, requires_grad=True)
w = torch.randn(3072, 2048, device="cuda", dtype=torch.bfloat16, requires_grad=True)
g = torch.randn(8192, 3072, device="cuda", dtype=torch.bfloat16)
y = _Float8Matmul.apply(x, w)
y.backward(g)
x2, w2 = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
y2 = x2 @ w2.t()
y2.backward(g.float())
rel = lambda a, b: float((a.float() - b).norm() / b.norm())
print(f"fp8 vs fp32: out {rel(y, y2):.4f} grad_x {rel(x.grad, x2.grad):.4f} grad_w {rel(w.grad, w2.grad):.4f}")
a = torch.randn(16384, 2048, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 2048, device="cuda", dtype=torch.bfloat16)
aq, sa = __import__("sovereign_training.float8", fromlist=["quantize"]).quantize(a, torch.float8_e4m3fn)
bq, sb = __import__("sovereign_training.float8", fromlist=["quantize"]).quantize(b, torch.float8_e4m3fn)
def rate(fn, flops):
    for _ in range(3): fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(20): fn()
    e.record(); torch.cuda.synchronize()
    return flops * 20 / (s.elapsed_time(e) / 1000) / 1e12
f = 2 * 16384 * 2048 * 8192
print(f"matmul 16384x2048x8192: bf16 {rate(lambda: a @ b.t(), f):.0f} TFLOP/s, "
      f"fp8 {rate(lambda: torch._scaled_mm(aq, bq.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16, use_fast_accum=True), f):.0f} TFLOP/s")
PY
python3 -m sovereign_training bench --json "$out/rows.json" "$@" 2>&1 | tee "$out/bench.log"

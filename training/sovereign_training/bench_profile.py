"""Where a training step's GPU time goes: kernel time by kind, from torch.profiler.

Kernels are grouped by name: matmuls (cuBLAS, CUTLASS, FP8 `_scaled_mm`), attention (FlashAttention,
cuDNN, memory-efficient), Triton (what torch.compile generated: norms, rotary, SwiGLU, loss),
optimizer and the rest (copies, casts, eager elementwise kernels). With the step's wall time,
this says whether the step is bound by matmuls, by memory-bound kernels or by the host.
"""

from __future__ import annotations

import re
from collections.abc import Callable

CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("attention", re.compile(r"flash|fmha|attention|sdpa|cudnn", re.IGNORECASE)),
    ("matmul", re.compile(r"gemm|gemv|cutlass|nvjet|xmma|sm90_|sm80_|scaled_mm|matmul", re.I)),
    ("optimizer", re.compile(r"adam|multi_tensor|foreach", re.IGNORECASE)),
    ("triton", re.compile(r"^triton_|triton", re.IGNORECASE)),
]
OTHER = "other"


def category(kernel_name: str) -> str:
    for name, pattern in CATEGORIES:
        if pattern.search(kernel_name):
            return name
    return OTHER


def profile_steps(
    step: Callable[[], None], steps: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Milliseconds of GPU kernel time per step, by category, plus "busy" (their sum) and
    "wall" (the step's wall time while profiled)."""
    import time

    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        wall = time.perf_counter() - start
    totals: dict[str, float] = {name: 0.0 for name, _ in CATEGORIES} | {OTHER: 0.0}
    for event in prof.events():
        if "cuda" not in str(getattr(event, "device_type", "")).lower():
            continue
        micros = float(event.time_range.elapsed_us())  # a kernel event's own duration
        totals[category(event.name)] += micros
    per_step = {name: micros / 1000.0 / steps for name, micros in totals.items()}
    per_step["busy"] = sum(per_step.values())
    per_step["wall"] = wall * 1000.0 / steps
    return per_step


def format_profile(variant: str, per_step: dict[str, float]) -> str:
    keys = [name for name, _ in CATEGORIES] + [OTHER, "busy", "wall"]
    head = "| " + variant + " ms/step | " + " | ".join(keys) + " |"
    sep = "|---" * (len(keys) + 1) + "|"
    row = "| | " + " | ".join(f"{per_step.get(k, 0.0):.1f}" for k in keys) + " |"
    return "\n".join([head, sep, row])

"""`python -m sovereign_training bench`: training throughput of the project's paths against the
plain loops a user would write, measured in the same run on the same card.

Variants (all on the same random-init model shape and random tokens, same global batch):
- plain-full:   fp32 weights + bf16 autocast, default AdamW, eager, micro-batch --micro-batch;
- plain-lora:   PEFT LoRA on bf16 weights, fused AdamW, eager (the anchor's "plain PEFT LoRA");
- project-full: the training loop's path: bf16 weights, fused AdamW, torch.compile, SDPA
                (FlashAttention), micro-batch --project-micro-batch under the same global batch;
- project-lora: the same with the loop's PEFT LoRA (only adapters train, frozen bf16 base).
FLOPs per token and MFU follow flops.py; MFU is against the card's dense bf16 peak.

`--ray-overhead` instead runs the real `train` path on the tiny model twice, in one process and
under Ray Train with one worker, and reports the ratio of their training times (CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, int]] = {
    # Llama 3.2 1B's shape (tied embeddings).
    "llama-3.2-1b": {
        "hidden": 2048,
        "layers": 16,
        "heads": 32,
        "kv_heads": 8,
        "intermediate": 8192,
        "vocab": 128256,
        "seq": 2048,
        "micro_batch": 4,
        "project_micro_batch": 8,
        "global_batch": 16,
        "steps": 10,
        "warmup": 3,
    },
    # A CPU smoke test of the same code paths.
    "tiny": {
        "hidden": 64,
        "layers": 2,
        "heads": 4,
        "kv_heads": 2,
        "intermediate": 256,
        "vocab": 1024,
        "seq": 128,
        "micro_batch": 4,
        "project_micro_batch": 8,
        "global_batch": 8,
        "steps": 4,
        "warmup": 1,
    },
}
VARIANTS = ("plain-full", "plain-lora", "project-full", "project-lora")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Row:
    variant: str
    micro_batch: int
    tokens_per_second: float
    step_seconds: float
    tflops: float
    mfu: float | None
    peak_memory_gib: float


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="llama-3.2-1b")
    for name in ("hidden", "layers", "heads", "kv-heads", "intermediate", "vocab", "seq"):
        parser.add_argument(f"--{name}", type=int, default=None, help="override the preset")
    parser.add_argument("--micro-batch", type=int, default=None, help="plain variants' micro-batch")
    parser.add_argument("--project-micro-batch", type=int, default=None)
    parser.add_argument("--global-batch", type=int, default=None, help="sequences per step")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (compilation)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the project variants (default: on with CUDA, off on CPU)",
    )
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument(
        "--ray-overhead",
        action="store_true",
        help="measure Ray Train's overhead over the same loop without Ray (CPU)",
    )
    parser.add_argument("--ray-steps", type=int, default=12, help="steps for --ray-overhead")


def _shape(args: argparse.Namespace) -> dict[str, int]:
    shape = dict(PRESETS[args.preset])
    for key in shape:
        value = getattr(args, key, None)
        if value is not None:
            shape[key] = value
    if (
        shape["global_batch"] % shape["micro_batch"]
        or shape["global_batch"] % shape["project_micro_batch"]
    ):
        raise SystemExit("--global-batch must be a multiple of both micro-batch sizes")
    return shape


def _llama_config(shape: dict[str, int]) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        max_position_embeddings=max(shape["seq"], 2048),
        tie_word_embeddings=True,
        use_cache=False,
    )


def _peak_memory_gib(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # Process-wide high-water mark on CPU (KiB on Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _build(
    variant: str, shape: dict[str, int], device: Any, lora_rank: int, compile_: bool
) -> tuple[Any, Any, Any, int]:
    """(model to call, optimizer, autocast context factory, micro-batch) for one variant."""
    import torch
    from transformers import LlamaForCausalLM

    from .config import LoraSettings
    from .modeling import adapter_precision, add_lora, make_optimizer, param_dtype

    config = _llama_config(shape)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    settings = LoraSettings(
        rank=lora_rank, alpha=2 * lora_rank, dropout=0.0, target_modules=LORA_TARGETS
    )
    if variant == "plain-full":
        model = LlamaForCausalLM(config).to(device=device, dtype=torch.float32)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def autocast() -> Any:
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_ok)

        return model, optimizer, autocast, shape["micro_batch"]
    if variant == "plain-lora":
        from peft import LoraConfig, get_peft_model

        dtype = torch.bfloat16 if bf16_ok else torch.float32
        base = LlamaForCausalLM(config).to(device=device, dtype=dtype)
        model = get_peft_model(
            base,
            LoraConfig(
                r=lora_rank,
                lora_alpha=2 * lora_rank,
                target_modules=LORA_TARGETS,
                task_type="CAUSAL_LM",
            ),
        )
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=2e-4, fused=device.type == "cuda")
        return model, optimizer, contextlib.nullcontext, shape["micro_batch"]
    # The project's paths reuse the training loop's own choices (modeling.py).
    dtype = param_dtype(device)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    if variant == "project-lora":
        model = add_lora(model, settings, gradient_checkpointing=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, 1e-4, device)
    call = torch.compile(model) if compile_ else model

    def precision() -> Any:
        return adapter_precision(device, dtype, lora=variant == "project-lora")

    return call, optimizer, precision, shape["project_micro_batch"]


def _time_steps(
    model: Any,
    optimizer: Any,
    autocast: Any,
    batches: list[Any],
    shape: dict[str, int],
    device: Any,
) -> float:
    """Seconds for shape["steps"] optimizer steps, after shape["warmup"] untimed ones."""
    import torch

    accumulation = len(batches)

    def step() -> None:
        for ids in batches:
            with autocast():
                loss = model(input_ids=ids, labels=ids).loss / accumulation
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(shape["warmup"]):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(shape["steps"]):
        step()
    sync()
    return time.perf_counter() - start


def _measure(
    variant: str, shape: dict[str, int], device: Any, args: argparse.Namespace, compile_: bool
) -> Row:
    import torch

    from . import flops

    model, optimizer, autocast, micro = _build(variant, shape, device, args.lora_rank, compile_)
    accumulation = shape["global_batch"] // micro
    seq = shape["seq"]
    gen = torch.Generator(device="cpu").manual_seed(1)
    batches = [
        torch.randint(0, shape["vocab"], (micro, seq), generator=gen).to(device)
        for _ in range(accumulation)
    ]

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elapsed = _time_steps(model, optimizer, autocast, batches, shape, device)
    inner = getattr(model, "_orig_mod", model)
    n_params = sum(p.numel() for p in inner.parameters())
    per_token = flops.flops_per_token(
        n_params, shape["layers"], shape["hidden"], seq, lora="lora" in variant
    )
    tokens = shape["global_batch"] * seq * shape["steps"]
    tps = tokens / elapsed
    peak = (
        flops.gpu_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    )
    row = Row(
        variant=variant,
        micro_batch=micro,
        tokens_per_second=tps,
        step_seconds=elapsed / shape["steps"],
        tflops=tps * per_token / 1e12,
        mfu=flops.mfu(tps, per_token, peak, 1),
        peak_memory_gib=_peak_memory_gib(device),
    )
    del model, optimizer, batches, inner
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with contextlib.suppress(Exception):
        torch._dynamo.reset()
    return row


def format_table(rows: list[Row], device_name: str, shape: dict[str, int]) -> str:
    by = {r.variant: r for r in rows}
    lines = [
        f"device: {device_name}; shape: {json.dumps(shape, separators=(',', ':'))}",
        "| variant | micro-batch | tokens/s | step s | model TFLOP/s | MFU | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
        lines.append(
            f"| {r.variant} | {r.micro_batch} | {r.tokens_per_second:,.0f} | {r.step_seconds:.3f}"
            f" | {r.tflops:.3f} | {mfu} | {r.peak_memory_gib:.2f} |"
        )
    for project, plain in (("project-full", "plain-full"), ("project-lora", "plain-lora")):
        if project in by and plain in by:
            ratio = by[project].tokens_per_second / by[plain].tokens_per_second
            lines.append(f"{project} / {plain}: {ratio:.2f}x")
    return "\n".join(lines)


def run_throughput(args: argparse.Namespace) -> list[Row]:
    import torch

    shape = _shape(args)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    compile_ = device.type == "cuda" if args.compile is None else args.compile
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; allowed: {', '.join(VARIANTS)}")
    rows = [_measure(v, shape, device, args, compile_) for v in variants]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({os.cpu_count()} cores)"
    )
    print(format_table(rows, name + f"; compile={compile_}", shape), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return rows


def run_ray_overhead(steps: int) -> dict[str, float]:
    """Train the tiny model for `steps` steps without and with Ray (one worker, same global
    batch, same checkpoint cadence); returns the times and their ratios."""
    from .config import parse_config
    from .runner import run_job
    from .tiny import create_tiny_model, sample_dataset_path

    with tempfile.TemporaryDirectory(prefix="sovai-ray-overhead-") as tmp:
        root = Path(tmp)
        model = create_tiny_model(root / "model")
        rows = sample_dataset_path().read_text(encoding="utf-8").splitlines()
        # 4 sequences of 128 tokens per step hold about 4 rows: enough rows for `steps` steps.
        data = root / "data.jsonl"
        data.write_text("\n".join(rows[: steps * 4]) + "\n", encoding="utf-8")
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        os.environ["SOVAI_CHECKPOINT_URI"] = str(root / "checkpoints")
        timings: dict[str, float] = {}
        import torch

        # Ray gives a 1-CPU worker OMP_NUM_THREADS=1; the in-process run gets the same, so the
        # ratio measures Ray, not a different thread count.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        for mode in ("no-ray", "ray"):
            cfg = parse_config(
                {
                    "apiVersion": "sovereign-ai.eu/v1alpha1",
                    "kind": "TrainingConfig",
                    "job": {"namespace": "bench", "name": f"overhead-{mode}", "uid": f"uid-{mode}"},
                    "baseModel": {"uri": str(model)},
                    "dataset": {"trainingUri": str(data), "format": "chat"},
                    "method": {
                        "type": "full",
                        "hyperparameters": {
                            "epochs": 1,
                            "batchSize": 4,
                            "microBatchSize": 4,
                            "learningRate": 1e-3,
                            "maxSeqLength": 128,
                            "warmupRatio": 0.0,
                            "seed": 0,
                        },
                    },
                    "resources": {"workers": 1, "gpusPerWorker": 0},
                    "tracking": {
                        "experimentName": "bench-ray-overhead",
                        "registeredModelName": f"overhead-{mode}",
                    },
                    "checkpointing": {
                        "everySteps": max(1, steps // 3),
                        "keep": 1,
                        "maxFailures": 0,
                    },
                }
            )
            start = time.perf_counter()
            result = run_job(
                cfg, use_ray=mode == "ray", work_dir=str(root / mode), print_result=False
            )
            timings[f"{mode}_wall_seconds"] = time.perf_counter() - start
            timings[f"{mode}_train_seconds"] = float(result["trainSeconds"])
            timings[f"{mode}_steps"] = float(result["steps"])
        torch.set_num_threads(threads)
        with contextlib.suppress(ImportError):
            import ray

            ray.shutdown()
    timings["train_time_ratio"] = timings["ray_train_seconds"] / timings["no-ray_train_seconds"]
    timings["wall_time_ratio"] = timings["ray_wall_seconds"] / timings["no-ray_wall_seconds"]
    return timings


def run_bench_cli(args: argparse.Namespace) -> int:
    if args.ray_overhead:
        timings = run_ray_overhead(args.ray_steps)
        print(
            "| mode | steps | training s | wall s |\n|---|---|---|---|\n"
            f"| no Ray | {timings['no-ray_steps']:.0f} | {timings['no-ray_train_seconds']:.2f} "
            f"| {timings['no-ray_wall_seconds']:.2f} |\n"
            f"| Ray Train, 1 worker | {timings['ray_steps']:.0f} "
            f"| {timings['ray_train_seconds']:.2f} "
            f"| {timings['ray_wall_seconds']:.2f} |\n"
            f"Ray / no Ray: training time {timings['train_time_ratio']:.2f}x, "
            f"wall time {timings['wall_time_ratio']:.2f}x",
            flush=True,
        )
        if args.json:
            Path(args.json).write_text(json.dumps(timings, indent=2))
        return 0
    run_throughput(args)
    return 0

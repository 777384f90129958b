"""`python -m sovereign_training bench`: training throughput of the project's paths against the
plain loops a user would write, measured in the same run on the same card.

Rows (same random-init model shape, same global batch, the same batch of random tokens at
every step, so the losses also show that every row learns the same thing):
- plain-full:   fp32 weights + bf16 autocast, default AdamW, eager, micro-batch --micro-batch;
- plain-lora:   PEFT LoRA on bf16 weights, fused AdamW, eager (the anchor's "plain PEFT LoRA");
- project-full: the training loop's path (speedups.py): bf16 weights, fused AdamW and every
                lever of `Speedups.for_device`, micro-batch --project-micro-batch;
- project-lora: the same with LoRA (only adapters train, frozen bf16 base);
- project-full/no-LEVER, project-lora/no-LEVER: the project row without one lever (--levers),
                so each lever's share is measured in the same run;
- plain-padded, project-packed: useful (non-padding) tokens per second on real row lengths
                (bench_packing.py).
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
import platform
import resource
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
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
MAIN_VARIANTS = ("plain-full", "plain-lora", "project-full", "project-lora")
PACKING_VARIANTS = ("plain-padded", "project-packed")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LEVER_SEPARATOR = "/no-"


@dataclass
class Row:
    variant: str
    micro_batch: int
    tokens_per_second: float
    step_seconds: float
    tflops: float | None
    mfu: float | None
    peak_memory_gib: float
    speedups: str = ""
    losses: list[float] = field(default_factory=list)
    padding_share: float | None = None  # of the tokens computed (packing rows)
    profile: dict[str, float] | None = None
    error: str | None = None


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
    parser.add_argument(
        "--variants",
        default=None,
        help="comma-separated rows (default: the four main rows, the lever rows where --levers, "
        "and the packing rows)",
    )
    switches = {
        "levers": (None, "also measure each project row without each of its levers (CUDA: on)"),
        "packing": (True, "measure plain-padded against project-packed on real row lengths"),
        "profile": (None, "profile two steps of the main project rows (CUDA: on)"),
        "compile": (None, "torch.compile the project variants (CUDA: on, CPU: off)"),
        "float8": (None, "FP8 matmuls in the project variants (default: where the GPU has them)"),
    }
    for name, (default, text) in switches.items():
        parser.add_argument(
            f"--{name}", action=argparse.BooleanOptionalAction, default=default, help=text
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


def llama_config(shape: dict[str, int], attention: str = "sdpa") -> Any:
    from transformers import LlamaConfig

    config = LlamaConfig(
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
    config._attn_implementation = attention
    return config


def peak_memory_gib(device: Any) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    # Process-wide high-water mark on CPU (KiB on Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _lora_settings(rank: int) -> Any:
    from .config import LoraSettings

    return LoraSettings(rank=rank, alpha=2 * rank, dropout=0.0, target_modules=LORA_TARGETS)


def new_model(shape: dict[str, int], device: Any, dtype: Any, attention: str = "sdpa") -> Any:
    """The random-init model, made on the device (fast) from the same seed for every row."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model: Any = LlamaForCausalLM(llama_config(shape, attention))
    return model.to(dtype=dtype)


# A training setup: (loss of one micro-batch, parameters the optimizer updates, micro-batch,
# the levers used). The loss function takes (input_ids, labels, position_ids or None,
# attention_mask or None, labelled tokens of the global batch).
LossFn = Callable[[Any, Any, Any, Any, Any], Any]


def build_plain(variant: str, shape: dict[str, int], device: Any, lora_rank: int) -> Any:
    """(loss_fn, optimizer, micro-batch) of a plain loop, as a user's first script has it."""
    import torch

    bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if variant in ("plain-full", "plain-padded"):
        model = new_model(shape, device, torch.float32)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        autocast: Callable[[], Any] = lambda: torch.autocast(  # noqa: E731
            device.type, dtype=torch.bfloat16, enabled=bf16_ok
        )
    else:
        from peft import LoraConfig, get_peft_model

        base = new_model(shape, device, torch.bfloat16 if bf16_ok else torch.float32)
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
        autocast = contextlib.nullcontext

    def loss_fn(ids: Any, labels: Any, positions: Any, mask: Any, labelled: Any) -> Any:
        # A user's loop: the model's mean loss per micro-batch, averaged over the accumulation.
        with autocast():
            out = model(input_ids=ids, labels=labels, attention_mask=mask)
        return out.loss * (labels[:, 1:] != -100).sum() / labelled

    return loss_fn, optimizer, shape["micro_batch"]


def build_project(
    variant: str,
    shape: dict[str, int],
    device: Any,
    lora_rank: int,
    speedups: Any,
    documents_per_block: float = 1.0,
) -> Any:
    """(loss_fn, optimizer, micro-batch) of the training loop's own path (loop.py), for
    blocks that hold `documents_per_block` sequences on average."""
    from .modeling import adapter_precision, add_lora, make_optimizer, param_dtype
    from .speedups import (
        CausalLMLoss,
        attention_implementation,
        compile_blocks,
        prepare_lora,
        prepare_model,
    )

    dtype = param_dtype(device)
    lora = variant.startswith("project-lora")
    attention = attention_implementation(speedups, documents_per_block)
    model = new_model(shape, device, dtype, attention)
    prepare_model(model, speedups)
    if lora:
        model = add_lora(model, _lora_settings(lora_rank), gradient_checkpointing=False)
        prepare_lora(model, speedups)
    if speedups.compile:
        compile_blocks(model)
    module = CausalLMLoss(model, compile_head=speedups.compile)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, 1e-4, device)
    autocast_lora = lora and not speedups.fused_lora

    def loss_fn(ids: Any, labels: Any, positions: Any, mask: Any, labelled: Any) -> Any:
        with adapter_precision(device, dtype, lora=autocast_lora):
            return module(
                input_ids=ids,
                labels=labels,
                position_ids=positions,
                attention_mask=mask,
                num_items_in_batch=labelled,
            )

    return loss_fn, optimizer, shape["project_micro_batch"]


def make_step(loss_fn: LossFn, optimizer: Any, batches: list[dict[str, Any]]) -> Callable[[], Any]:
    """One optimizer step over `batches` (the micro-batches of one global batch); returns the
    global batch's mean token loss as a tensor (read only after timing)."""
    import torch

    labelled = sum((b["labels"][:, 1:] != -100).sum() for b in batches)
    labelled = torch.as_tensor(labelled, device=batches[0]["input_ids"].device)

    def step() -> Any:
        total = None
        for b in batches:
            loss = loss_fn(
                b["input_ids"], b["labels"], b.get("position_ids"), b.get("mask"), labelled
            )
            loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total

    return step


def _sync(device: Any) -> Callable[[], None]:
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return sync


def time_steps(
    steps: list[Callable[[], Any]], warmup: int, timed: int, device: Any
) -> tuple[float, list[float]]:
    """(seconds for `timed` steps after `warmup` untimed ones, the loss after every step);
    step i runs steps[i % len(steps)]."""
    sync = _sync(device)
    losses = []
    for i in range(warmup):
        losses.append(steps[i % len(steps)]())
    sync()
    start = time.perf_counter()
    for i in range(warmup, warmup + timed):
        losses.append(steps[i % len(steps)]())
    sync()
    elapsed = time.perf_counter() - start
    return elapsed, [float(loss) for loss in losses]


def random_batches(shape: dict[str, int], micro: int, device: Any) -> list[dict[str, Any]]:
    """The micro-batches of one global batch of random tokens, every token labelled."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(1)
    batches = []
    for _ in range(shape["global_batch"] // micro):
        ids = torch.randint(0, shape["vocab"], (micro, shape["seq"]), generator=gen).to(device)
        batches.append({"input_ids": ids, "labels": ids})
    return batches


def parse_variant(variant: str) -> tuple[str, str | None]:
    """("project-full", "float8") for "project-full/no-float8"; (variant, None) otherwise."""
    base, _, lever = variant.partition(LEVER_SEPARATOR)
    return base, lever or None


def lever_variants(speedups: Any) -> list[str]:
    """project-X/no-LEVER for each lever the project rows use: fused_lora only for LoRA, and
    flex_attention only for packed blocks (random rows are one document each, where the
    training path loads SDPA). compile has no row: without it the other levers' unfused casts
    dominate, which says nothing about them (the last run with and without compile is in
    docs/benchmarks.md)."""
    rows = []
    for base in ("project-full", "project-lora"):
        for name in speedups.names():
            if name in ("compile", "flex_attention"):
                continue
            if getattr(speedups, name) and (name != "fused_lora" or base == "project-lora"):
                rows.append(f"{base}{LEVER_SEPARATOR}{name}")
    if speedups.flex_attention:
        rows.append(f"project-packed{LEVER_SEPARATOR}flex_attention")
    return rows


def measure(
    variant: str,
    shape: dict[str, int],
    device: Any,
    args: argparse.Namespace,
    speedups: Any,
    profile: bool,
) -> Row:
    import torch

    from . import flops

    base, lever = parse_variant(variant)
    levers = speedups.without(lever) if lever else speedups
    if base == "project-full":
        levers = levers.without("fused_lora")  # nothing to fuse without adapters
    # Random rows are one document each: the training path attends with SDPA there.
    levers = levers.without("flex_attention")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if base.startswith("plain"):
        loss_fn, optimizer, micro = build_plain(base, shape, device, args.lora_rank)
        used = ""
    else:
        loss_fn, optimizer, micro = build_project(base, shape, device, args.lora_rank, levers)
        used = levers.describe()
    step = make_step(loss_fn, optimizer, random_batches(shape, micro, device))
    elapsed, losses = time_steps([step], shape["warmup"], shape["steps"], device)
    seq = shape["seq"]
    n_params = _param_count(shape)
    per_token = flops.flops_per_token(
        n_params, shape["layers"], shape["hidden"], seq, lora="lora" in base
    )
    tps = shape["global_batch"] * seq * shape["steps"] / elapsed
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
        peak_memory_gib=peak_memory_gib(device),
        speedups=used,
        losses=losses,
    )
    if profile:
        from .bench_profile import profile_steps

        row.profile = profile_steps(step, 2, _sync(device))
    return row


def _param_count(shape: dict[str, int]) -> int:
    """Parameters of the preset's model (tied embeddings), without building it."""
    h, i, v = shape["hidden"], shape["intermediate"], shape["vocab"]
    kv = h // shape["heads"] * shape["kv_heads"]
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
    return v * h + shape["layers"] * per_layer + h


def release(device: Any) -> None:
    """Free what the last row held before the next one is built."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(rows: list[Row], header: str) -> str:
    by = {r.variant: r for r in rows if r.error is None}
    lines = [
        header,
        "| variant | levers | micro-batch | tokens/s | step s | model TFLOP/s | MFU | peak GiB "
        "| loss first → last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error is not None:
            lines.append(f"| {r.variant} | {r.speedups} | failed: {r.error} | | | | | | |")
            continue
        mfu = "n/a" if r.mfu is None else f"{100 * r.mfu:.1f}%"
        loss = f"{r.losses[0]:.3f} → {r.losses[-1]:.3f}" if r.losses else ""
        if r.padding_share is not None:
            loss += f" (padding {100 * r.padding_share:.0f}%)"
        lines.append(
            f"| {r.variant} | {r.speedups or '-'} | {r.micro_batch} | {r.tokens_per_second:,.0f}"
            f" | {r.step_seconds:.3f} | {_fmt(r.tflops, '.1f')} | {mfu}"
            f" | {r.peak_memory_gib:.2f} | {loss} |"
        )
    pairs = [
        ("project-full", "plain-full"),
        ("project-lora", "plain-lora"),
        ("project-packed", "plain-padded"),
    ]
    for project, plain in pairs:
        if project in by and plain in by:
            ratio = by[project].tokens_per_second / by[plain].tokens_per_second
            lines.append(f"{project} / {plain}: {ratio:.2f}x")
    for r in rows:
        base, lever = parse_variant(r.variant)
        if lever and base in by and r.variant in by:
            gain = by[base].tokens_per_second / r.tokens_per_second
            lines.append(f"{base}: {lever} gives {gain:.3f}x")
    for r in rows:
        if r.profile:
            from .bench_profile import format_profile

            lines.append(format_profile(r.variant, r.profile))
    return "\n".join(lines)


def environment(device: Any) -> str:
    import torch
    import transformers

    parts = [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
    with contextlib.suppress(ImportError):
        import peft

        parts.append(f"peft {peft.__version__}")
    parts.append(f"Python {platform.python_version()}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts.insert(
            0, f"{props.name} ({props.total_memory // 2**20:,} MiB, CUDA {torch.version.cuda})"
        )
    else:
        parts.insert(0, f"CPU ({os.cpu_count()} cores)")
    return "; ".join(parts)


def default_variants(args: argparse.Namespace, device: Any, speedups: Any) -> list[str]:
    """The goals' rows first (a run cut short keeps them), then one row per lever."""
    variants = list(MAIN_VARIANTS)
    if args.packing:
        variants += list(PACKING_VARIANTS)
    levers = device.type == "cuda" if args.levers is None else args.levers
    if levers:
        variants += [
            v
            for v in lever_variants(speedups)
            if args.packing or parse_variant(v)[0] != "project-packed"
        ]
    return variants


def run_throughput(args: argparse.Namespace) -> list[Row]:
    import torch

    from .speedups import Speedups

    shape = _shape(args)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    speedups = Speedups.for_device(device, use_compile=args.compile)
    if args.float8 is not None:
        speedups = replace(speedups, float8=args.float8)
    variants = (
        [v for v in args.variants.split(",") if v]
        if args.variants
        else default_variants(args, device, speedups)
    )
    known = (
        set(MAIN_VARIANTS)
        | set(PACKING_VARIANTS)
        | set(lever_variants(Speedups(True, True, True, True)))
    )
    unknown = sorted(set(variants) - known)
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; allowed: {', '.join(sorted(known))}")
    profile = device.type == "cuda" if args.profile is None else args.profile
    header = f"device: {environment(device)}; shape: {json.dumps(shape, separators=(',', ':'))}"
    print(header, flush=True)
    rows: list[Row] = []
    for variant in variants:
        started = time.perf_counter()
        try:
            if parse_variant(variant)[0] in PACKING_VARIANTS:
                from .bench_packing import measure_packing

                row = measure_packing(variant, shape, device, args, speedups)
            else:
                row = measure(
                    variant, shape, device, args, speedups, profile and variant in MAIN_VARIANTS[2:]
                )
        except Exception as exc:  # one failing row must not lose the others' figures
            traceback.print_exc()
            row = Row(
                variant, 0, 0.0, 0.0, None, None, 0.0, error=f"{type(exc).__name__}: {exc}"[:300]
            )
        release(device)
        print(
            f"{variant}: {row.tokens_per_second:,.0f} tokens/s "
            f"({time.perf_counter() - started:.0f} s with set-up and compilation)",
            flush=True,
        )
        rows.append(row)
        if args.json:  # written after every row, so a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    print(format_table(rows, header), flush=True)
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
    rows = run_throughput(args)
    return 1 if any(r.error for r in rows) else 0

"""Parse `vllm serve` arguments with vLLM's own command-line parser, and print what vLLM read.

Run with the vLLM package's Python sources on PYTHONPATH (see test_vllm_cli.py). Only the
parser runs: no engine starts, no model is read and no GPU is needed.

Reads {"commands": [[command + args], ...], "loraRanks": [N, ...]} as JSON on stdin and prints
{"commands": [what vLLM read, or {"error": ...}], "loraRanks": {"N": accepted}}: one process, so
that vLLM and torch are imported once.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _on_cpu_platform() -> None:
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    # vLLM picks its platform from the hardware; with none here, parse as the CPU platform
    # does. The serve arguments are the same on every platform.
    platforms._current_platform = CpuPlatform()


def parse(argv: list[str]) -> dict[str, Any]:
    _on_cpu_platform()
    import vllm.entrypoints.cli.serve as serve
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils import FlexibleArgumentParser

    # The `vllm` console script's own wiring (vllm.entrypoints.cli.main), serve only.
    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(required=True, dest="subparser")
    commands = {}
    for command in serve.cmd_init():
        command.subparser_init(subparsers)
        commands[command.name] = command
    if argv[:2] != ["vllm", "serve"]:
        raise SystemExit(f"not a `vllm serve` command: {argv[:2]}")
    args: argparse.Namespace = parser.parse_args(argv[1:])
    commands[args.subparser].validate(args)
    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag  # what ServeSubcommand.cmd does before it starts
    engine = AsyncEngineArgs.from_cli_args(args)
    if engine.enable_lora:
        from vllm.config.lora import LoRAConfig

        # What create_engine_config builds from these arguments; it refuses a rank vLLM
        # has no kernels for.
        LoRAConfig(max_lora_rank=engine.max_lora_rank, max_loras=engine.max_loras)
    return {
        "model": engine.model,
        "served_model_name": engine.served_model_name,
        "enable_lora": bool(engine.enable_lora),
        "max_lora_rank": engine.max_lora_rank,
        "lora_modules": [
            {"name": module.name, "path": module.path} for module in args.lora_modules or []
        ],
        "tensor_parallel_size": engine.tensor_parallel_size,
        "max_model_len": engine.max_model_len,
        "host": args.host,
        "port": args.port,
    }


def lora_rank_accepted(rank: int) -> bool:
    _on_cpu_platform()
    from vllm.config.lora import LoRAConfig

    try:
        LoRAConfig(max_lora_rank=rank)
    except ValueError:
        return False
    return True


def _parse_or_error(argv: list[str]) -> dict[str, Any]:
    try:
        return parse(argv)
    except (SystemExit, ValueError) as refused:  # argparse exits; vLLM's checks raise
        return {"error": repr(refused)}


if __name__ == "__main__":
    request = json.load(sys.stdin)
    print(
        json.dumps(
            {
                "commands": [_parse_or_error(argv) for argv in request["commands"]],
                "loraRanks": {str(r): lora_rank_accepted(r) for r in request["loraRanks"]},
            }
        )
    )

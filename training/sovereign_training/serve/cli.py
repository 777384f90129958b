"""``serve``: command-line entry of the CPU model server."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DESCRIPTION = "Serve a local model folder through an OpenAI-compatible API on the CPU."


def build_parser(prog: str = "python -m sovereign_training serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_serve_arguments(parser)
    return parser


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options, for this module's parser and for the package's subcommand."""
    parser.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help="a folder saved by training: a full or merged model, or a PEFT adapter",
    )
    parser.add_argument(
        "--served-model-name",
        help="the model name clients send (default: the model folder's name)",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--max-model-len",
        type=int,
        help="prompt + completion token limit (default: the model's context length)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="weights' dtype in memory (default float32, the fastest on most CPUs)",
    )
    parser.add_argument(
        "--base-model-dir",
        type=Path,
        help="for an adapter folder: the local base model (default: the adapter's own record)",
    )
    parser.add_argument(
        "--chat-template",
        type=Path,
        help="a Jinja chat template file, overriding the tokenizer's",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until it is stopped; 0 on a clean stop, 1 if the model failed to load."""
    parser = build_parser()
    return run_serve(parser.parse_args(argv), parser)


def run_serve(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Run the server from parsed ``serve`` options (see ``add_serve_arguments``)."""
    problem = None
    if args.chat_template is not None and not args.chat_template.is_file():
        problem = f"--chat-template {args.chat_template}: no such file"
    elif not 0 <= args.port <= 65535:
        problem = f"--port {args.port}: expected 0..65535"
    if problem is not None:
        if parser is not None:
            parser.error(problem)  # exits with status 2 and the usage line
        print(f"error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Heavy imports (torch, transformers) only once the arguments are known to be valid.
    import uvicorn

    from sovereign_training.serve.app import create_app
    from sovereign_training.serve.loading import LoadOptions, load_engine
    from sovereign_training.serve.state import ModelState

    model_dir: Path = args.model_dir.resolve()
    name = args.served_model_name or model_dir.name
    template = args.chat_template.read_text() if args.chat_template else None
    options = LoadOptions(
        model_dir=model_dir,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        base_model_dir=args.base_model_dir,
    )
    state = ModelState(lambda: load_engine(options))
    failures: list[BaseException] = []

    def on_load_failure(exc: BaseException) -> None:
        # A server that cannot load its model must exit, so that Kubernetes shows the crash
        # instead of a pod that is never ready.
        failures.append(exc)
        server.should_exit = True

    app = create_app(name, state, chat_template=template, on_load_failure=on_load_failure)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, log_level=args.log_level, access_log=False
    )
    server = uvicorn.Server(config)
    server.run()
    return 1 if failures else 0

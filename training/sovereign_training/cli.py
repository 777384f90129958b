"""Command-line entry points of the training data plane."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ConfigError, load_config
from .data import DatasetError
from .sources import SourceError


def _train(args: argparse.Namespace) -> int:
    from .runner import run_job

    cfg = load_config(args.config, args.config_sha256, args.config_wait_seconds)
    run_job(
        cfg,
        use_ray=False if args.no_ray else None,
        compile_model=args.compile,
        gradient_checkpointing=args.gradient_checkpointing,
        work_dir=args.work_dir,
    )
    return 0


# fetch's exit status when it refuses a model that is not the one expected.
FETCH_REFUSED = 3


def _fetch(args: argparse.Namespace) -> int:
    from .fetch import FetchRefused, fetch_model

    try:
        result = fetch_model(
            args.uri,
            args.dest,
            revision=args.revision,
            expect_digest=args.expect_digest,
            expect_job_uid=args.expect_job_uid,
        )
    except FetchRefused as refused:
        # The kubelet puts the termination log into the pod status, where the operator reads
        # why the model was refused.
        _write_termination_log(args.termination_log, refused.record())
        print(f"error: {refused.reason}: {refused}", file=sys.stderr, flush=True)
        return FETCH_REFUSED
    _write_termination_log(args.termination_log, result.record())
    print(result.line(), flush=True)
    return 0


def _write_termination_log(path: str | None, line: str) -> None:
    if path:
        Path(path).write_text(line + "\n", encoding="utf-8")


def _tiny(args: argparse.Namespace) -> int:
    from .tiny import create_tiny_model

    path = create_tiny_model(
        args.dest, dataset=args.dataset, chat_template=not args.no_chat_template
    )
    print(path)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serve import run_serve

    return run_serve(args)


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench_cli

    return run_bench_cli(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sovereign_training")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune per a job.json written by the operator")
    train.add_argument("--config", required=True, help="path of the job.json")
    train.add_argument(
        "--config-sha256",
        default=None,
        help="the sha256 the job.json must have (the operator sets it): wait until it does",
    )
    train.add_argument(
        "--config-wait-seconds",
        type=float,
        default=300.0,
        help="how long to wait for that job.json before failing (default 300)",
    )
    train.add_argument("--no-ray", action="store_true", help="run in this process, without Ray")
    train.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: SOVAI_TORCH_COMPILE, else on for GPU jobs)",
    )
    train.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute activations in backward (default: SOVAI_GRADIENT_CHECKPOINTING, else off)",
    )
    train.add_argument("--work-dir", default=None, help="scratch folder (default: SOVAI_WORK_DIR)")
    train.set_defaults(func=_train)

    fetch = sub.add_parser("fetch", help="copy a model into a folder unless it is already there")
    fetch.add_argument("--uri", required=True)
    fetch.add_argument("--dest", required=True)
    fetch.add_argument("--revision", default=None, help="hub revision for hf:// URIs")
    fetch.add_argument(
        "--expect-digest",
        default=None,
        help="sha256:... the model must have (the trainer's record); refuse it otherwise",
    )
    fetch.add_argument(
        "--expect-job-uid",
        default=None,
        help="the FineTuneJob uid the models:/ version's sovai.job.uid tag must carry",
    )
    fetch.add_argument(
        "--termination-log",
        default=None,
        help="write a one-line JSON record here: the digest fetched, or why it was refused",
    )
    fetch.set_defaults(func=_fetch)

    tiny = sub.add_parser("tiny", help="create the tiny random Llama + tokenizer used in tests")
    tiny.add_argument("--dest", required=True)
    tiny.add_argument("--dataset", default=None, help="JSONL to train the tokenizer on")
    tiny.add_argument("--no-chat-template", action="store_true")
    tiny.set_defaults(func=_tiny)

    from .serve import DESCRIPTION as SERVE_DESCRIPTION
    from .serve import add_serve_arguments

    serve = sub.add_parser("serve", help=SERVE_DESCRIPTION, description=SERVE_DESCRIPTION)
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)

    from .bench import add_bench_arguments

    bench = sub.add_parser("bench", help="training throughput benchmark")
    add_bench_arguments(bench)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (ConfigError, SourceError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2

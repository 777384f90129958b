"""`sovai`: the project's command line (local cluster, operator, manifests, demo)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from .audit.cli import add_audit_parser
from .devcluster import LocalCluster

Command = Callable[[argparse.Namespace], int]


def _dev_cluster(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workdir = Path(args.workdir).resolve() if args.workdir else None
    print(
        "starting the local control plane (etcd, kube-apiserver, controller-manager, "
        "scheduler, kwok" + (", KubeRay" if args.kuberay else "") + ") ...",
        flush=True,
    )
    with LocalCluster(workdir, kuberay=args.kuberay, keep_workdir=workdir is not None) as cluster:
        print(f"ready: {cluster.server}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"component logs: {cluster.log_dir}")
        print("press Ctrl-C to stop", flush=True)
        stop.wait()
        print("stopping ...", flush=True)
    return 0


def _operator(args: argparse.Namespace) -> int:
    from .main import main as run_operator  # imported here: Kopf is not needed otherwise

    return run_operator()


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # the demo pulls in nothing the operator image needs

    return run_demo(Path(args.repo).resolve(), Path(args.workdir).resolve(), keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sovai", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev-cluster", help="run the local control plane until Ctrl-C")
    dev.add_argument("--workdir", help="keep certificates, kubeconfig and logs in this folder")
    dev.add_argument(
        "--no-kuberay",
        dest="kuberay",
        action="store_false",
        help="do not start the KubeRay operator",
    )
    dev.set_defaults(handler=_dev_cluster)

    operator = commands.add_parser("operator", help="run the operator (settings: SOVAI_* env)")
    operator.set_defaults(handler=_operator)

    demo = commands.add_parser("demo", help="the whole product on this machine, end to end")
    demo.add_argument("--workdir", default=".demo", help="logs, cluster, models (default .demo)")
    demo.add_argument("--repo", default=".", help="the source checkout (charts, examples)")
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the cluster up after the demo, until Ctrl-C, to look around (kubectl, MLflow)",
    )
    demo.set_defaults(handler=_demo)

    add_audit_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Command = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

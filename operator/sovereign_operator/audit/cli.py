"""`sovai audit`: check the audit log, and tell one object's story from it.

``verify`` reads every record (every version, where the bucket keeps them), checks the chain,
then checks the heads claimed elsewhere (claims.py): each FineTuneJob's and ModelDeployment's
``status.audit`` and each registered model version's ``sovai.audit.chain_head`` tag. Exit 0:
nothing found; 1: findings, one per line; 2: the log, the cluster or MLflow could not be read.

``show ftj/NAME`` prints what the log says about one object, as a compliance officer reads it:
a summary, then each record. Rendering is pure (story.py), from a checked Chain.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .claims import (
    FINETUNEJOB,
    MODELDEPLOYMENT,
    Unreadable,
    cluster_objects,
    mlflow_claims,
    status_claims,
)
from .log import AuditLog, AuditUnavailable, Location, s3_client
from .story import render_story
from .verify import Chain, Claim, Finding, check_chain, check_claims, read_store

KIND_NAMES = {
    "ftj": FINETUNEJOB,
    "finetunejob": FINETUNEJOB,
    "finetunejobs": FINETUNEJOB,
    "md": MODELDEPLOYMENT,
    "modeldeployment": MODELDEPLOYMENT,
    "modeldeployments": MODELDEPLOYMENT,
}
NO_LOCK = "no Object Lock: tampering is detected, not prevented"


# -- arguments ----------------------------------------------------------------------------------


def add_audit_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``sovai audit verify`` and ``sovai audit show``."""
    audit = commands.add_parser("audit", help="verify the audit log, or show an object's story")
    verbs = audit.add_subparsers(dest="audit_command", required=True)

    verify = verbs.add_parser(
        "verify",
        help="check the chain and the heads the cluster and MLflow claim in it "
        "(exit 0: intact, 1: findings, 2: could not be read)",
    )
    _store_arguments(verify)
    verify.add_argument(
        "--kubeconfig",
        help="kubeconfig file(s) of the cluster whose jobs and deployments claim heads "
        "(default: in-cluster, $KUBECONFIG or ~/.kube/config)",
    )
    verify.add_argument(
        "--no-cluster",
        action="store_true",
        help="check the log alone, without the claims in the cluster's status",
    )
    verify.add_argument(
        "--mlflow-tracking-uri",
        help="also check each registered model version's sovai.audit.chain_head tag "
        "(default $MLFLOW_TRACKING_URI; http(s) only)",
    )
    verify.set_defaults(handler=_verify)

    show = verbs.add_parser("show", help="what the log says about one object, in order")
    show.add_argument("object", help="ftj/NAME or md/NAME (finetunejob/, modeldeployment/)")
    show.add_argument(
        "-n", "--namespace", default="default", help="its namespace (default: default)"
    )
    _store_arguments(show)
    show.set_defaults(handler=_show)


def _store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", help="s3://bucket/prefix of the log (default $SOVAI_AUDIT_URI)")
    parser.add_argument("--endpoint", help="the S3 endpoint URL (default $SOVAI_AUDIT_ENDPOINT)")
    parser.add_argument("--region", help="the S3 region (default $SOVAI_AUDIT_REGION)")


def _quiet(args: argparse.Namespace) -> None:
    # botocore says at INFO where it found the credentials: noise on a report's terminal.
    if not getattr(args, "verbose", False):
        logging.getLogger("botocore").setLevel(logging.WARNING)


def _location(args: argparse.Namespace) -> Location:
    uri = args.log or os.environ.get("SOVAI_AUDIT_URI")
    if not uri:
        raise Unreadable("no audit log named: pass --log s3://bucket/prefix or set SOVAI_AUDIT_URI")
    try:
        return Location.parse(uri)
    except ValueError as error:
        raise Unreadable(str(error)) from None


def _client(args: argparse.Namespace) -> Any:
    endpoint = args.endpoint or os.environ.get("SOVAI_AUDIT_ENDPOINT")
    region = args.region or os.environ.get("SOVAI_AUDIT_REGION")
    return s3_client(endpoint, region)


def read_chain(client: Any, location: Location) -> Chain:
    """The log's chain, checked; Unreadable when the store cannot be read."""
    try:
        stored, stray = read_store(client, location)
    except Exception as error:  # botocore's errors, a refused connection, no credentials
        raise Unreadable(f"cannot read the audit log {location}: {error}") from None
    return check_chain(stored, stray)


def _run(args: argparse.Namespace, command: Callable[[argparse.Namespace], int]) -> int:
    _quiet(args)
    try:
        return command(args)
    except Unreadable as error:
        print(f"sovai audit: {error}", file=sys.stderr)
        return 2


# -- verify -------------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    return _run(args, _verify_now)


def _verify_now(args: argparse.Namespace) -> int:
    location = _location(args)
    client = _client(args)
    chain = read_chain(client, location)
    try:
        retention = AuditLog(client, location, writer="sovai-audit-verify").retention()
    except AuditUnavailable as error:
        raise Unreadable(f"cannot read the Object Lock settings: {error}") from None
    claims: list[Claim] | None = None
    findings = list(chain.findings)
    if not args.no_cluster:
        jobs, deployments = cluster_objects(args.kubeconfig)
        claims, found = status_claims(jobs, FINETUNEJOB, location)
        more, found_too = status_claims(deployments, MODELDEPLOYMENT, location)
        claims += more
        findings += found + found_too
        tracking = args.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if tracking:
            more, found = mlflow_claims(tracking, jobs, location)
            claims += more
            findings += found
        findings += check_claims(chain, claims)
    for line in verify_report(location, chain, retention, claims, findings):
        print(line)
    return 1 if findings else 0


def verify_report(
    location: Location,
    chain: Chain,
    retention: str | None,
    claims: Sequence[Claim] | None,
    findings: Sequence[Finding],
) -> list[str]:
    """What ``verify`` prints: the log, then each finding as ``record N: problem``."""
    checked = (
        "not checked (--no-cluster)"
        if claims is None
        else f"{len(claims)} checked (status.audit of FineTuneJobs and ModelDeployments, "
        "MLflow model version tags)"
    )
    lines = [
        f"log: {location}",
        f"records: {len(chain.records)}",
        f"head: {chain.head}",
        f"object lock: {retention}" if retention else NO_LOCK,
        f"claims: {checked}",
    ]
    lines += [str(finding) for finding in findings]
    if findings:
        lines.append(f"{len(findings)} finding(s)")
    else:
        lines.append("verified: every record is in its place, linked to the one before it")
    return lines


def _show(args: argparse.Namespace) -> int:
    return _run(args, _show_now)


def parse_ref(text: str) -> tuple[str, str]:
    """``ftj/NAME`` -> (FineTuneJob, NAME); Unreadable for another kind."""
    kind, _, name = text.partition("/")
    if kind.lower() not in KIND_NAMES or not name or "/" in name:
        raise Unreadable(
            f"{text!r}: name an object as ftj/NAME or md/NAME (finetunejob/, modeldeployment/)"
        )
    return KIND_NAMES[kind.lower()], name


def _show_now(args: argparse.Namespace) -> int:
    kind, name = parse_ref(args.object)
    location = _location(args)
    chain = read_chain(_client(args), location)
    lines = render_story(chain, kind, args.namespace, name, location)
    if lines is None:
        print(
            f"sovai audit: the log {location} has no record about {kind} {args.namespace}/{name}",
            file=sys.stderr,
        )
        return 1
    print("\n".join(lines))
    return 0

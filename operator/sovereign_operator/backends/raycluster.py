"""Backend rayCluster: submit to, follow and stop a job on a Ray cluster the policy declares,
through Ray's Job Submission REST API. The token comes from a Secret and is never logged."""

from __future__ import annotations

import base64
import json
import logging
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..api.v1alpha1.finetunejob import FineTuneJobStatus
from ..api.v1alpha1.sovereigntypolicy import RayClusterEndpoint, SovereigntyPolicySpec
from ..builders.context import JOB_UID_LABEL, Owner
from ..builders.jobconfig import build_job_config
from ..builders.names import submission_id
from ..k8s.client import SECRET, Kube
from ..policy.places import ROUTES_ENV
from .context import JobContext
from .jobsapi import JobsApi, JobsApiError
from .logs import LOG_TAIL_BYTES, LOG_TAIL_LINES, last_progress
from .logs import result as parse_result
from .types import BackendObservation, BackendState

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long a token read from its Secret is used before it is read again (a rotated token is
# also read again at once when the dashboard refuses the one in use).
TOKEN_TTL_SECONDS = 300.0

_STATES = {
    "PENDING": BackendState.PENDING,
    "RUNNING": BackendState.RUNNING,
    "SUCCEEDED": BackendState.SUCCEEDED,
    "FAILED": BackendState.FAILED,
    "STOPPED": BackendState.FAILED,
}


def run_submission_id(uid: str, generation: int, attempt: int = 0) -> str:
    """The submission of this generation of the job, and of this retry of it. Only
    spec.suspend may change once a job has started, so a new generation is a resume, and a
    resume needs a new submission; so does a retry under backoffLimit. A restarted operator
    computes the same id and finds the job instead of submitting twice."""
    run = f"{submission_id(uid)}-{generation}"
    return f"{run}-r{attempt}" if attempt else run


def attempt_of(uid: str, generation: int, current: str | None) -> int:
    """Which attempt of this generation ``current`` (the recorded submission) is; 0 when it
    is of another generation or none."""
    run = run_submission_id(uid, generation)
    if current is None or not current.startswith(run):
        return 0
    suffix = current[len(run) :]
    return int(suffix[2:]) if suffix.startswith("-r") and suffix[2:].isdigit() else 0


def build_entrypoint(training_command: str, uid: str) -> str:
    """A shell entrypoint writing job.json from the environment, then starting the trainer.

    An existing Ray cluster has no ConfigMap mount; the document travels in the runtime
    environment (it holds no secret) and lands in a file as the contract expects.
    """
    # The file goes when the shell does (not exec'd, so that its EXIT trap runs; a signal from
    # Ray's job stop ends the shell through the same trap): a shared cluster's temp folder
    # would otherwise keep one per job.
    script = (
        f'config="${{TMPDIR:-/tmp}}/sovai-{uid}.json"; '
        "trap 'rm -f \"$config\"' EXIT; trap 'exit 143' TERM; trap 'exit 130' INT; "
        'printf "%s" "$SOVAI_JOB_CONFIG" > "$config" && '
        f'{training_command} --config "$config"'
    )
    return f"sh -c {shlex.quote(script)}"


def _ms(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if isinstance(value, int | float) else None


def endpoint_of(policy: SovereigntyPolicySpec, name: str | None) -> RayClusterEndpoint:
    for endpoint in policy.ray_clusters:
        if endpoint.name == name:
            return endpoint
    raise LookupError(f"Ray cluster {name!r} is not declared by the policy")


def nodes_outside(result: dict[str, Any] | None, regions: tuple[str, ...]) -> list[str]:
    """The nodes a rayCluster job's result reports outside ``regions``, or with no region
    (the cluster's nodes said nothing of where they are): each as "node N in R"."""
    nodes = (result or {}).get("nodes") or []
    return [
        f"node {n.get('node')} in {n.get('region') or 'unknown'}"
        for n in nodes
        if isinstance(n, dict) and n.get("region") not in regions
    ] + ([] if nodes or result is None else ["the result names no node"])


class RayClusterBackend:
    """Runs a FineTuneJob as a Ray job on a declared, existing Ray cluster."""

    kind = "rayCluster"

    def __init__(
        self,
        kube: Kube,
        training_command: str,
        mlflow_tracking_uri: str | None,
        hf_hub_offline: bool,
        timeout: float = 5.0,
    ) -> None:
        self.kube = kube
        self.training_command = training_command
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.hf_hub_offline = hf_hub_offline
        self.timeout = timeout
        # (namespace, name, key) of a token Secret -> (token, when read).
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    def _token(self, endpoint: RayClusterEndpoint, fresh: bool) -> str | None:
        """The endpoint's token from its Secret, kept for TOKEN_TTL_SECONDS (``fresh``: read
        it again now). Never logged."""
        ref = endpoint.auth_token_secret_ref
        if ref is None:
            return None
        key = (ref.namespace, ref.name, ref.key)
        kept = self._tokens.get(key)
        if kept is not None and not fresh and time.monotonic() - kept[1] < TOKEN_TTL_SECONDS:
            return kept[0]
        secret = self.kube.get(SECRET, ref.namespace, ref.name)
        encoded = (secret.get("data") or {}).get(ref.key)
        if encoded is None:
            raise LookupError(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}")
        token = base64.b64decode(encoded).decode().strip()
        self._tokens[key] = (token, time.monotonic())
        return token

    def _api(self, endpoint: RayClusterEndpoint, fresh: bool = False) -> JobsApi:
        return JobsApi(endpoint.address, token=self._token(endpoint, fresh), timeout=self.timeout)

    def calling(self, endpoint: RayClusterEndpoint, call: Callable[[JobsApi], T]) -> T:
        """``call`` with the endpoint's client; once more with the token read again when the
        dashboard refuses it (rotated since it was read)."""
        try:
            return call(self._api(endpoint))
        except JobsApiError as error:
            if error.status not in (401, 403) or endpoint.auth_token_secret_ref is None:
                raise
            return call(self._api(endpoint, fresh=True))

    def reconcile(self, ctx: JobContext) -> BackendObservation:
        """Submit this generation once (and again for each retry under backoffLimit), then
        read its state, progress and result."""
        endpoint = endpoint_of(ctx.policy, ctx.spec.execution.ray_cluster_ref)
        return self.calling(endpoint, lambda api: self._reconcile(ctx, endpoint, api))

    def _reconcile(
        self, ctx: JobContext, endpoint: RayClusterEndpoint, api: JobsApi
    ) -> BackendObservation:
        previous_id = ctx.previous.submission_id if ctx.previous else None
        if ctx.spec.suspend:
            if previous_id:
                api.stop(previous_id)
            return BackendObservation(BackendState.SUSPENDED, name=previous_id)
        attempt = attempt_of(ctx.owner.uid, ctx.generation, previous_id)
        sid = run_submission_id(ctx.owner.uid, ctx.generation, attempt)
        info = api.info(sid)
        if info is None:
            self._submit(ctx, endpoint, api, sid)
            info = api.info(sid) or {"status": "PENDING"}
        state = _STATES.get(str(info.get("status")), BackendState.PENDING)
        progress = result = None
        if state in (BackendState.RUNNING, BackendState.SUCCEEDED, BackendState.FAILED):
            node = info.get("driver_node_id")
            text = api.log_tail(sid, str(node), LOG_TAIL_LINES, LOG_TAIL_BYTES) if node else ""
            if not text or (state == BackendState.SUCCEEDED and parse_result(text) is None):
                # No tail (no driver node yet, or the log API did not answer), or one without
                # the result: the whole log, rather than progress or the result lost.
                text = api.logs(sid)
            progress, result = last_progress(text), parse_result(text)
        reason = message = None
        failed_attempts = 0
        started, ended = _ms(info.get("start_time")), _ms(info.get("end_time"))
        deadline = ctx.spec.execution.active_deadline_seconds
        now = datetime.now(UTC)
        if state == BackendState.RUNNING and deadline and started:
            if (now - started).total_seconds() > deadline:
                api.stop(sid)
                state, reason = BackendState.FAILED, "DeadlineExceeded"
                message = (
                    f"the Ray job ran longer than spec.execution.activeDeadlineSeconds "
                    f"({deadline} s) and was stopped"
                )
        elif state == BackendState.FAILED:
            stopped = info.get("status") == "STOPPED"
            reason = "RayJobStopped" if stopped else "RayJobFailed"
            message = str(info.get("message") or "the Ray job failed")
            limit = ctx.spec.execution.backoff_limit
            if not stopped and attempt < limit:
                # A retry under backoffLimit: a new submission, started from the checkpoint.
                retry = run_submission_id(ctx.owner.uid, ctx.generation, attempt + 1)
                self._submit(ctx, endpoint, api, retry)
                why = f"attempt {attempt + 1} of {limit + 1} failed ({message}); retrying"
                return BackendObservation(
                    BackendState.PENDING, name=retry, created_at=now, blockers=(why,)
                )
            # compute_status says how many attempts ran, for both backends.
            failed_attempts = attempt + 1
        unverified = nodes_outside(result, ctx.residency.regions)
        if unverified:
            # The result is not recorded: what came out of an unproven place is no model of
            # this job's (its MLflow run and version say where the nodes were).
            state, result = BackendState.FAILED, None
            reason, failed_attempts = "RegionNotVerified", 0
            message = (
                f"Ray cluster {endpoint.name}: {'; '.join(unverified)}; allowed: "
                f"[{', '.join(ctx.residency.regions)}]. Each node must carry its region as the "
                f"Ray node label {ctx.residency.region_label} "
                f"(ray start --labels={ctx.residency.region_label}=<region>)"
            )
        return BackendObservation(
            state=state,
            name=sid,
            created_at=ctx.previous.start_time
            if ctx.previous and ctx.previous.start_time
            else now.replace(microsecond=0),
            start_time=started,
            end_time=ended,
            reason=reason,
            message=message,
            progress=progress,
            result=result,
            failed_attempts=failed_attempts,
        )

    def _submit(
        self, ctx: JobContext, endpoint: RayClusterEndpoint, api: JobsApi, sid: str
    ) -> None:
        document = build_job_config(
            ctx.spec,
            ctx.owner,
            ctx.hyperparameters,
            ctx.residency,
            policy=ctx.policy,
            chain_head=ctx.chain_head,
        )
        env = {
            "SOVAI_JOB_CONFIG": json.dumps(document, sort_keys=True),
            "HF_HUB_OFFLINE": "1" if self.hf_hub_offline else "0",
            # Not the region: the Ray nodes report their own, from the label of this name
            # they were started with (ray start --labels), and the trainer refuses to run
            # on a node outside the allowed regions. The policy's word is not evidence.
            "SOVAI_REGION_LABEL": ctx.residency.region_label,
            ROUTES_ENV: ctx.residency.s3_routes,
        }
        if ctx.residency.hub_mirror:
            env["HF_ENDPOINT"] = ctx.residency.hub_mirror
        if self.mlflow_tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_tracking_uri
        api.submit(
            sid,
            build_entrypoint(self.training_command, ctx.owner.uid),
            metadata={
                JOB_UID_LABEL: ctx.owner.uid,
                "sovereign-ai.eu/finetunejob": f"{ctx.owner.namespace}/{ctx.owner.name}",
            },
            runtime_env={"env_vars": env},
        )
        log.info("submitted %s to Ray cluster %s", sid, endpoint.name)

    def stop(self, ctx: JobContext) -> None:
        """Stop the current submission (start-up deadline passed)."""
        endpoint = endpoint_of(ctx.policy, ctx.spec.execution.ray_cluster_ref)
        previous_id = ctx.previous.submission_id if ctx.previous else None
        attempt = attempt_of(ctx.owner.uid, ctx.generation, previous_id)
        sid = run_submission_id(ctx.owner.uid, ctx.generation, attempt)
        self.calling(endpoint, lambda api: api.stop(sid))

    def delete_run(
        self,
        policy: SovereigntyPolicySpec,
        ref: str | None,
        owner: Owner,
        status: FineTuneJobStatus | None,
    ) -> None:
        """Stop the job's submission when the FineTuneJob is deleted."""
        if status is None or not status.submission_id:
            return
        sid = status.submission_id
        self.calling(endpoint_of(policy, ref), lambda api: api.stop(sid))

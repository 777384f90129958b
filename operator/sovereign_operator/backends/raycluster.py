"""Backend rayCluster: submit to, follow and stop a job on a Ray cluster the policy declares,
through Ray's Job Submission REST API. The token comes from a Secret and is never logged."""

from __future__ import annotations

import base64
import json
import logging
import shlex
from datetime import UTC, datetime
from typing import Any

from ..api.v1alpha1.finetunejob import FineTuneJobStatus
from ..api.v1alpha1.sovereigntypolicy import RayClusterEndpoint, SovereigntyPolicySpec
from ..builders.context import JOB_UID_LABEL, Owner
from ..builders.jobconfig import build_job_config
from ..builders.names import submission_id
from ..k8s.client import SECRET, Kube
from ..policy.places import ROUTES_ENV
from .context import JobContext
from .jobsapi import JobsApi
from .logs import last_progress
from .logs import result as parse_result
from .types import BackendObservation, BackendState

log = logging.getLogger(__name__)

_STATES = {
    "PENDING": BackendState.PENDING,
    "RUNNING": BackendState.RUNNING,
    "SUCCEEDED": BackendState.SUCCEEDED,
    "FAILED": BackendState.FAILED,
    "STOPPED": BackendState.FAILED,
}


def run_submission_id(uid: str, generation: int) -> str:
    """The submission of this generation of the job. Only spec.suspend may change once a job
    has started, so a new generation is a resume, and a resume needs a new submission; a
    restarted operator computes the same id and finds the job instead of submitting twice."""
    return f"{submission_id(uid)}-{generation}"


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

    def _api(self, endpoint: RayClusterEndpoint) -> JobsApi:
        token: str | None = None
        ref = endpoint.auth_token_secret_ref
        if ref is not None:
            secret = self.kube.get(SECRET, ref.namespace, ref.name)
            encoded = (secret.get("data") or {}).get(ref.key)
            if encoded is None:
                raise LookupError(f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}")
            token = base64.b64decode(encoded).decode().strip()
        return JobsApi(endpoint.address, token=token, timeout=self.timeout)

    def reconcile(self, ctx: JobContext) -> BackendObservation:
        """Submit this generation once, then read its state, progress and result."""
        endpoint = endpoint_of(ctx.policy, ctx.spec.execution.ray_cluster_ref)
        api = self._api(endpoint)
        previous_id = ctx.previous.submission_id if ctx.previous else None
        if ctx.spec.suspend:
            if previous_id:
                api.stop(previous_id)
            return BackendObservation(BackendState.SUSPENDED, name=previous_id)
        sid = run_submission_id(ctx.owner.uid, ctx.generation)
        info = api.info(sid)
        if info is None:
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
            info = api.info(sid) or {"status": "PENDING"}
        state = _STATES.get(str(info.get("status")), BackendState.PENDING)
        progress = result = None
        if state in (BackendState.RUNNING, BackendState.SUCCEEDED, BackendState.FAILED):
            text = api.logs(sid)
            progress, result = last_progress(text), parse_result(text)
        reason = message = None
        if state == BackendState.FAILED:
            reason = "RayJobStopped" if info.get("status") == "STOPPED" else "RayJobFailed"
            message = str(info.get("message") or "the Ray job failed")
        unverified = nodes_outside(result, ctx.residency.regions)
        if unverified:
            # The result is not recorded: what came out of an unproven place is no model of
            # this job's (its MLflow run and version say where the nodes were).
            state, result = BackendState.FAILED, None
            reason = "RegionNotVerified"
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
            else datetime.now(UTC).replace(microsecond=0),
            start_time=_ms(info.get("start_time")),
            end_time=_ms(info.get("end_time")),
            reason=reason,
            message=message,
            progress=progress,
            result=result,
        )

    def stop(self, ctx: JobContext) -> None:
        """Stop the current submission (start-up deadline passed)."""
        endpoint = endpoint_of(ctx.policy, ctx.spec.execution.ray_cluster_ref)
        self._api(endpoint).stop(run_submission_id(ctx.owner.uid, ctx.generation))

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
        self._api(endpoint_of(policy, ref)).stop(status.submission_id)

"""Backend kuberay: read a RayJob's status (as KubeRay writes it) into a BackendObservation."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..api.v1alpha1.finetunejob import FineTuneJobStatus
from ..builders.context import SPEC_HASH_ANNOTATION, Owner, spec_hash
from ..builders.jobconfig import experiment_name, job_config_text
from ..builders.names import network_policy_name, rayjob_name
from ..builders.network import build_job_network_policy
from ..builders.rayjob import SUBMITTER_COMPONENT, SUBMITTER_CONTAINER, build_rayjob
from ..k8s.client import NETWORK_POLICY, RAYJOB, ApiError, Kube
from ..k8s.ensure import ForeignChild, delete_owned, ensure
from ..mlflow_rest import MlflowError, MlflowRest
from .context import JobContext
from .logs import LOG_TAIL_BYTES, LOG_TAIL_LINES, last_progress
from .logs import result as parse_result
from .mlflow_result import find_kept_result
from .pods import PodFacts
from .types import BackendObservation, BackendState

log = logging.getLogger(__name__)

_PENDING = frozenset({"", "New", "Initializing", "Waiting", "Retrying"})
_FAILED = frozenset({"Failed", "ValidationFailed"})
_SUSPENDED = frozenset({"Suspended", "Suspending"})
# After a failed attempt, until KubeRay starts the next (Initializing, a new status.startTime).
_BETWEEN_ATTEMPTS = frozenset({"Retrying", "New"})
NO_TRACKING_SERVER = (
    "no MLflow tracking server that the operator can read over HTTP is configured "
    "(SOVAI_MLFLOW_TRACKING_URI), so the job's run was not looked up"
)
# The submitter's `ray job submit` follows the driver's log, so the tail of the submitter pod's
# log (LOG_TAIL_LINES, read from the kubelet through the API server) holds the latest progress
# line and, at the end, the result.


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it, or None."""
    if not value or not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def replica_failures(rayjob_status: dict[str, Any]) -> tuple[str, ...]:
    """KubeRay's own reports that it could not create (or delete) the cluster's pods, as the
    RayJob mirrors them from its RayCluster (the ReplicaFailure condition, such as
    FailedCreateHeadPod with the API server's refusal): shown in the job's status at once,
    instead of a silent wait for the start-up deadline."""
    cluster = rayjob_status.get("rayClusterStatus") or {}
    return tuple(
        f"{c.get('reason') or 'ReplicaFailure'}: {c.get('message') or 'no message'}"
        for c in cluster.get("conditions") or []
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
    )


def observe_rayjob(
    rayjob: dict[str, Any] | None,
    pods: list[PodFacts] | tuple[PodFacts, ...] = (),
    progress: dict[str, Any] | None = None,
    result: dict[str, Any] | None = None,
) -> BackendObservation:
    """The normalised state of a RayJob, with start-up blockers from its pods. Pure."""
    if rayjob is None:
        return BackendObservation(BackendState.ABSENT)
    metadata = rayjob.get("metadata", {})
    status = rayjob.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or ""
    job_status = status.get("jobStatus") or ""
    reason = status.get("reason") or None
    message = status.get("message") or None
    if deployment == "Complete":
        if job_status == "SUCCEEDED":
            state = BackendState.SUCCEEDED
        else:
            state = BackendState.FAILED
            reason = reason or f"RayJob{job_status.title() or 'Failed'}"
            message = message or f"the Ray job ended with status {job_status or 'unknown'}"
    elif deployment in _FAILED:
        state = BackendState.FAILED
        reason = reason or "RayJobFailed"
        message = message or f"KubeRay reports the RayJob as {deployment}"
    elif deployment in _SUSPENDED:
        state = BackendState.SUSPENDED
    elif deployment == "Running":
        state = BackendState.RUNNING
    else:
        state = BackendState.PENDING
    failed = _count(status.get("failed"))
    blockers = replica_failures(status) + tuple(blocker for pod in pods for blocker in pod.blockers)
    return BackendObservation(
        state=state,
        name=metadata.get("name"),
        created_at=parse_time(metadata.get("creationTimestamp")),
        start_time=parse_time(status.get("startTime")),
        end_time=parse_time(status.get("endTime")),
        reason=reason,
        message=message,
        progress=progress,
        result=result,
        blockers=blockers,
        version=metadata.get("resourceVersion"),
        uid=metadata.get("uid"),
        failed_attempts=failed,
        between_attempts=failed > 0 and deployment in _BETWEEN_ATTEMPTS,
    )


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def outcome(rayjob: dict[str, Any] | None) -> bool | None:
    """Whether the RayJob's Ray job succeeded (True) or failed (False) once KubeRay reports it
    ended; None while it has not ended. Pure."""
    status = (rayjob or {}).get("status") or {}
    deployment = status.get("jobDeploymentStatus") or ""
    if deployment == "Complete":
        return status.get("jobStatus") == "SUCCEEDED"
    if deployment in _FAILED:
        return False
    return None


def covering(rayjob: dict[str, Any], network_policy: dict[str, Any]) -> dict[str, Any]:
    """``rayjob`` with a spec-hash annotation that also covers its pods' NetworkPolicy. The
    policy's CIDRs can change while the RayJob's own spec does not; the NetworkPolicy is then
    ensured again on the next pass, like any child whose desired hash changed. Pure."""
    digest = spec_hash({"rayjob": rayjob["spec"], "networkPolicy": network_policy["spec"]})
    metadata = rayjob["metadata"]
    annotations = {**metadata.get("annotations", {}), SPEC_HASH_ANNOTATION: digest}
    return {**rayjob, "metadata": {**metadata, "annotations": annotations}}


class KubeRayBackend:
    """Creates the NetworkPolicy and the RayJob (ensure), reads state from the cached
    RayJob and pods, and progress and the result from the tail of the submitter pod's log."""

    kind = "kuberay"

    def __init__(
        self, kube: Kube, retry_after: float = 30.0, mlflow: MlflowRest | None = None
    ) -> None:
        self.kube = kube
        self.retry_after = retry_after
        # The tracking server the jobs log to, where each run keeps its result: read when the
        # submitter's log no longer gives it. None: no server to ask (none configured, or not
        # one this process can read over HTTP).
        self.mlflow = mlflow
        self._logs_failed: dict[str, float] = {}
        # Per job uid: when MLflow was last asked for its kept result, and what it said.
        self._mlflow_asked: dict[str, tuple[float, str]] = {}

    def reconcile(self, ctx: JobContext) -> BackendObservation:
        """Ensure the children as built, then observe them."""
        network_policy = build_job_network_policy(ctx.owner, ctx.policy)
        job_config = job_config_text(
            ctx.spec,
            ctx.owner,
            ctx.hyperparameters,
            ctx.residency,
            policy=ctx.policy,
            chain_head=ctx.chain_head,
        )
        rayjob = build_rayjob(
            ctx.spec,
            ctx.owner,
            ctx.build,
            ctx.residency,
            job_config=job_config,
            succeeded=outcome(ctx.live_rayjob),
        )
        desired = covering(rayjob, network_policy)
        live = ctx.live_rayjob
        wanted_hash = desired["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        live_hash = ((live or {}).get("metadata", {}).get("annotations") or {}).get(
            SPEC_HASH_ANNOTATION
        )
        if live is None or live_hash != wanted_hash:
            # The NetworkPolicy first, so that no pod of the job ever runs without it; then
            # the RayJob, which carries job.json in its head pod's annotations.
            try:
                ensure(self.kube, network_policy)
                live = ensure(self.kube, desired).obj
            except ForeignChild as conflict:
                return BackendObservation(
                    BackendState.ABSENT, name=rayjob_name(ctx.owner.name), blockers=(str(conflict),)
                )
            except ApiError as error:
                if not error.namespace_terminating:
                    raise
                # Its namespace is being deleted: nothing more is made; the cleanup follows.
                return BackendObservation(
                    BackendState.ABSENT,
                    name=rayjob_name(ctx.owner.name),
                    blockers=("the namespace is being deleted",),
                )
        observation = observe_rayjob(live, ctx.pods)
        if observation.state in (BackendState.RUNNING, BackendState.SUCCEEDED):
            progress, result = self._read_logs(ctx)
            observation = replace(observation, progress=progress, result=result)
        if observation.state == BackendState.SUCCEEDED and observation.result is None:
            observation = self._read_kept_result(ctx, observation)
        return observation

    def _read_logs(self, ctx: JobContext) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Progress and result from the submitter's log; (None, None) while there is none.

        A pod whose log cannot be read (not started yet, or a kwok pod, which has no kubelet
        to serve it) leaves the fields empty rather than invented, and is asked again after
        ``retry_after`` seconds rather than at every pass.
        """
        submitters = [p for p in ctx.pods if p.component == SUBMITTER_COMPONENT and p.node]
        if not submitters:
            return None, None
        uid = ctx.owner.uid
        failed_at = self._logs_failed.get(uid)
        if failed_at is not None and time.monotonic() - failed_at < self.retry_after:
            return None, None
        # A retried submission makes a new pod: the last one listed is the newest by name only,
        # so prefer one that is running or finished over one still pending.
        pod = sorted(submitters, key=lambda p: (p.phase != "Pending", p.name))[-1]
        try:
            text = self.kube.log_tail(
                pod.namespace, pod.name, SUBMITTER_CONTAINER, LOG_TAIL_LINES, LOG_TAIL_BYTES
            )
        except ApiError as error:
            log.debug("log of %s/%s not readable: %s", pod.namespace, pod.name, error)
            self._logs_failed[uid] = time.monotonic()
            return None, None
        self._logs_failed.pop(uid, None)
        return last_progress(text), parse_result(text)

    def _read_kept_result(
        self, ctx: JobContext, observation: BackendObservation
    ) -> BackendObservation:
        """The result the job's MLflow run kept, when the log gave none (its pods are gone, or
        kwok's, or the line fell out of the tail). Asked at most every ``retry_after`` seconds
        per job, like the log; meanwhile the last look's finding stands."""
        if self.mlflow is None:
            return replace(observation, result_tried=NO_TRACKING_SERVER)
        uid = ctx.owner.uid
        asked = self._mlflow_asked.get(uid)
        if asked is not None and time.monotonic() - asked[0] < self.retry_after:
            return replace(observation, result_tried=asked[1])
        try:
            kept = find_kept_result(self.mlflow, experiment_name(ctx.spec, ctx.owner), ctx.owner)
        except MlflowError as error:
            kept = str(error)
        if isinstance(kept, str):
            log.debug(
                "no result kept in MLflow for %s/%s: %s", ctx.owner.namespace, ctx.owner.name, kept
            )
            self._mlflow_asked[uid] = (time.monotonic(), kept)
            return replace(observation, result_tried=kept)
        self._mlflow_asked.pop(uid, None)
        return replace(observation, result=kept.document, result_from=f"MLflow run {kept.run_id}")

    def stop(self, ctx: JobContext) -> None:
        """Give up on a job that cannot start."""
        self.stop_owned(ctx.owner)

    def stop_owned(self, owner: Owner) -> None:
        """Delete the job's RayJob, and so its pods (it cannot start, or its policy no longer
        allows it). The NetworkPolicy stays while they terminate."""
        delete_owned(self.kube, RAYJOB, owner.namespace, rayjob_name(owner.name), owner.uid)

    def delete(self, owner: Owner, status: FineTuneJobStatus | None) -> None:
        """Delete the children explicitly (owner references would too, later, via the GC);
        only those this job controls."""
        delete_owned(self.kube, RAYJOB, owner.namespace, rayjob_name(owner.name), owner.uid)
        # Last, after the RayJob. Its pods may still be in their termination grace period, then
        # without it; leaving it to the garbage collector would not close that gap, as the
        # collector removes it as soon as this job is gone.
        delete_owned(
            self.kube, NETWORK_POLICY, owner.namespace, network_policy_name(owner.name), owner.uid
        )
        self._logs_failed.pop(owner.uid, None)
        self._mlflow_asked.pop(owner.uid, None)

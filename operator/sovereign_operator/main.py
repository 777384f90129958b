"""The operator process: settings, Kopf configuration, handler registration, kopf.run().

Settings and credentials are read when the operator starts (never at import time), before
Kopf runs; the startup handler then sets Kopf's settings, builds the API client and starts the
metrics endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes.client import Configuration
from pydantic import ValidationError

from .api.v1alpha1.common import FINALIZER, GROUP, LAST_HANDLED_FIELD, VERSION
from .api.v1alpha1.finetunejob import PLURAL as FTJ_PLURAL
from .api.v1alpha1.sovereigntypolicy import PLURAL as POLICY_PLURAL
from .audit.log import AuditLog, AuditUnavailable, Location, s3_client
from .backends.kuberay import KubeRayBackend
from .backends.kueue import WORKLOAD_GROUP, WORKLOAD_VERSION
from .backends.raycluster import RayClusterBackend
from .builders.context import JOB_UID_LABEL, MANAGED_BY, MANAGED_BY_LABEL, BuildConfig
from .builders.serving import DEPLOYMENT_UID_LABEL
from .config import Settings, describe_errors
from .handlers import finetunejob, indexes, modeldeployment, terminating
from .handlers.finetunejob_follow import follow_jobs
from .handlers.state import OperatorState
from .images.references import VERSION as PRODUCT_VERSION
from .k8s.client import ConfigurationError, Kube, load_configuration
from .k8s.events import COMPONENT as EVENT_COMPONENT
from .kopf_tuning import (
    DigestDiffBase,
    ProgressAnnotations,
    QuietTimerSuccesses,
    login_with_bounded_pool,
    slim_watched_objects,
    smaller_tls_read_buffers,
)
from .metrics import Metrics
from .mlflow_rest import MlflowRest

ANNOTATION_PREFIX = "sovereign-ai.eu"
LIST_CHUNK_SIZE = 100
log = logging.getLogger(__name__)


def build_config(settings: Settings) -> BuildConfig:
    """The builders' view of the settings."""
    return BuildConfig(
        runtime_image=settings.runtime_image,
        mlflow_tracking_uri=settings.mlflow_tracking_uri,
        mlflow_secret_name=settings.mlflow_secret_name,
        hf_hub_offline=settings.hf_hub_offline,
        head_cpu=settings.head_cpu,
        head_memory=settings.head_memory,
        ray_version=settings.ray_version,
        training_command=settings.training_command,
    )


# A handler thread waits on MLflow at most this long per look (a lost result, rarely).
MLFLOW_TIMEOUT_S = 10.0


def tracking_server(settings: Settings) -> MlflowRest | None:
    """The tracking server the operator reads kept results from, with the credentials in its
    own environment (MLFLOW_TRACKING_TOKEN, or _USERNAME and _PASSWORD: never a job's Secret);
    None without an http(s) tracking URI."""
    uri = settings.mlflow_tracking_uri
    if not uri or not uri.startswith(("http://", "https://")):
        return None
    return MlflowRest.from_environment(uri, timeout=MLFLOW_TIMEOUT_S)


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    """Kopf's own settings: progress in annotations, our finalizer, peering, events."""
    progress = ProgressAnnotations(prefix=ANNOTATION_PREFIX)
    kopf_settings.persistence.progress_storage = progress
    # In the status, so that Kopf writes it in the same request as the handler's status; as
    # digests, so that it neither doubles the object nor clutters `kubectl describe`.
    kopf_settings.persistence.diffbase_storage = DigestDiffBase(
        field=f"status.{LAST_HANDLED_FIELD}", progress=progress
    )
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.peering.standalone = settings.replicas <= 1
    kopf_settings.peering.name = settings.peering_name
    kopf_settings.peering.mandatory = settings.replicas > 1
    kopf_settings.posting.enabled = settings.post_events
    kopf_settings.posting.reporting_component = EVENT_COMPONENT
    kopf_settings.execution.executor = ThreadPoolExecutor(max_workers=settings.max_workers)
    kopf_settings.queueing.worker_limit = settings.worker_limit
    kopf_settings.watching.server_timeout = 300
    # Kopf lists every watched kind before it watches it, and again when a watch must restart
    # (410 Gone). Unchunked, the list of 5,000 RayJobs is one response of some 40 MB of JSON,
    # over 100 MB as Python objects at once (bench/operator_scale.py, docs/benchmarks.md); in
    # pages of LIST_CHUNK_SIZE, one page at a time.
    kopf_settings.watching.chunk_size = LIST_CHUNK_SIZE
    # A per-object worker ends after this long without events (Kopf's default: 5 s). Under a
    # burst, thousands of idle workers would otherwise hold their last event (memory).
    kopf_settings.queueing.idle_timeout = 0.5
    # Only the pods, RayJobs and Deployments the operator made are watched (server-side
    # filtering). Pods: a job's Ray pods and a deployment's serving pods both carry the
    # managed-by label (a selector cannot say "this label or that one").
    selectors = kopf_settings.watching.label_selectors
    selectors["", "v1", "pods"] = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    selectors["ray.io", "v1", "rayjobs"] = JOB_UID_LABEL
    selectors["apps", "v1", "deployments"] = DEPLOYMENT_UID_LABEL


def open_audit_log(settings: Settings) -> AuditLog | None:
    """The audit log named by SOVAI_AUDIT_URI, read up to its head; None when none is kept.
    A store that does not answer now is read at the first append instead (passes wait)."""
    if settings.audit_uri is None:
        log.warning("SOVAI_AUDIT_URI is not set: no audit log is kept (docs/compliance.md)")
        return None
    audit = AuditLog(
        s3_client(settings.audit_endpoint, settings.audit_region),
        Location.parse(settings.audit_uri),
    )
    try:
        retention = audit.retention()
        audit.load()
    except AuditUnavailable as error:
        log.error("the audit log cannot be read yet: %s", error)
        return audit
    if retention is None:
        log.warning(
            "the audit log's bucket has no Object Lock: changes to it are detected "
            "(sovai audit verify), not prevented"
        )
    log.info("audit log %s: %d records, Object Lock %s", audit.location, audit.head.seq, retention)
    return audit


def register(
    registry: kopf.OperatorRegistry, settings: Settings, load: Callable[[], Configuration]
) -> None:
    """Register every handler with an explicit, stable id."""
    ftj = (GROUP, VERSION, FTJ_PLURAL)

    namespaces = len(settings.namespaces)

    # Own registry: Kopf's default login handlers are not in it.
    @kopf.on.login(registry=registry, id="sovai-login")
    async def login(
        settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any
    ) -> kopf.AiohttpSession:
        return login_with_bounded_pool(namespaces, settings, logger)

    @kopf.on.startup(registry=registry, id="sovai-startup")
    def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        configure_kopf(settings, memo.settings)
        # One connection per handler thread, so threads never queue for a socket.
        kube = Kube(load, pool_size=memo.settings.max_workers + 4)
        metrics = Metrics()
        metrics.serve(memo.settings.metrics_port)
        memo.state = OperatorState(
            settings=memo.settings,
            kube=kube,
            metrics=metrics,
            build=build_config(memo.settings),
            kuberay=KubeRayBackend(kube, mlflow=tracking_server(memo.settings)),
            raycluster=RayClusterBackend(
                kube,
                memo.settings.training_command,
                memo.settings.mlflow_tracking_uri,
                memo.settings.hf_hub_offline,
            ),
            executor=settings.execution.executor,
            audit=open_audit_log(memo.settings),
        )
        log.info("sovereign-ai operator started", extra={"namespaces": memo.settings.namespaces})

    @kopf.on.startup(registry=registry, id="sovai-follow")
    async def start_following(memo: Any, **kwargs: Any) -> None:
        """Start the follow-up sweep, with Kopf's live indexes (handed to startup handlers)."""
        state: OperatorState = memo.state
        state.indexes = {key: value for key, value in kwargs.items() if key.startswith("sovai_")}
        memo.follower = asyncio.create_task(
            follow_jobs(state, memo.settings.reconcile_interval_seconds), name="sovai-follow"
        )

    @kopf.on.cleanup(registry=registry, id="sovai-follow-stop")
    async def stop_following(memo: Any, **_: Any) -> None:
        follower = getattr(memo, "follower", None)
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    kopf.index(
        "ray.io",
        "v1",
        "rayjobs",
        id="sovai_rayjobs",
        registry=registry,
        labels={JOB_UID_LABEL: kopf.PRESENT},
    )(indexes.rayjobs_by_owner)
    kopf.index(
        "", "v1", "pods", id="sovai_pods", registry=registry, labels={JOB_UID_LABEL: kopf.PRESENT}
    )(indexes.pods_by_owner)
    kopf.index(
        "apps",
        "v1",
        "deployments",
        id="sovai_deployments",
        registry=registry,
        labels={DEPLOYMENT_UID_LABEL: kopf.PRESENT},
    )(indexes.deployments_by_owner)
    kopf.index(
        "",
        "v1",
        "pods",
        id="sovai_serving_pods",
        registry=registry,
        labels={DEPLOYMENT_UID_LABEL: kopf.PRESENT},
    )(indexes.serving_pods_by_owner)
    kopf.index(*ftj, id="sovai_finetunejobs", registry=registry)(indexes.finetunejob_phases)
    # Kueue's queues, when Kueue is installed (Kopf starts the watch when its CRD appears):
    # where a job waiting for quota stands.
    kopf.index(WORKLOAD_GROUP, WORKLOAD_VERSION, "workloads", id="sovai_workloads",
               registry=registry)(indexes.workloads_waiting)  # fmt: skip
    kopf.index("", "v1", "nodes", id="sovai_nodes", registry=registry)(indexes.node_labels)
    kopf.index("", "v1", "namespaces", id="sovai_namespaces", registry=registry)(
        indexes.namespace_labels
    )
    kopf.index(
        "",
        "v1",
        "namespaces",
        id="sovai_terminating",
        registry=registry,
        when=terminating.is_terminating,
    )(terminating.terminating_namespaces)
    kopf.index(GROUP, VERSION, POLICY_PLURAL, id="sovai_policies", registry=registry)(
        indexes.policies
    )
    kopf.on.create(*ftj, id="ftj-reconcile", registry=registry)(finetunejob.on_change)
    kopf.on.resume(*ftj, id="ftj-resume", registry=registry)(finetunejob.on_change)
    kopf.on.update(*ftj, id="ftj-update", field="spec", registry=registry)(finetunejob.on_change)
    kopf.on.delete(*ftj, id="ftj-cleanup", registry=registry)(finetunejob.on_delete)
    modeldeployment.register(registry)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives threads their own malloc arenas, which multiplies the resident set of a
    thread-pool process for nothing; this one waits on I/O, so two arenas are plenty."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8: M_ARENA_MAX


def freeze_startup_objects() -> None:
    """Keep what start-up loaded (modules, the API models' validators, Kopf's registry) out
    of every later cyclic collection. A full collection walks every object the process holds;
    following thousands of jobs, each one paused the event loop and the handler threads
    together, and those pauses were the tail of create -> RayJob (bench/operator_scale.py:
    steady p99 0.12-0.26 s before, 0.05 s after, docs/benchmarks.md). Python's thresholds stay:
    collecting less often kept more garbage alive and raised the resident set."""
    gc.collect()
    gc.freeze()


def run(settings: Settings | None = None, stop_flag: threading.Event | None = None) -> None:
    """Run the operator until stopped (SIGTERM/SIGINT, or ``stop_flag``)."""
    settings = settings or Settings()
    limit_malloc_arenas()
    kopf.configure(
        verbose=settings.log_level.upper() == "DEBUG",
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(settings.log_level.upper())
    logging.getLogger("kopf.objects").addFilter(QuietTimerSuccesses())
    load_configuration()  # a bad kubeconfig fails here, before Kopf starts
    registry = kopf.OperatorRegistry()
    register(registry, settings, load_configuration)
    memo = kopf.Memo(settings=settings)
    slim_watched_objects(indexes.INDEXED_SPEC_FIELDS)
    smaller_tls_read_buffers()
    freeze_startup_objects()
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    kopf.run(
        registry=registry,
        memo=memo,
        standalone=settings.replicas <= 1,
        peering_name=settings.peering_name,
        liveness_endpoint=liveness,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        stop_flag=stop_flag,
    )


def settings_help() -> str:
    """Every SOVAI_* variable with its default and description, for ``--help``."""
    lines = ["settings (environment variables, read once at startup):"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        lines.append(f"  SOVAI_{name.upper()} (default: {default!r})")
        lines.append(f"      {field.description}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sovereign_operator",
        description=(
            "Run the Sovereign AI operator: reconcile FineTuneJobs, ModelDeployments and "
            "SovereigntyPolicies until SIGTERM. In a pod it authenticates with its service "
            "account, elsewhere with the current kubeconfig context."
        ),
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {PRODUCT_VERSION}")
    return parser


def main(argv: Sequence[str] = ()) -> int:
    """Entry point of `python -m sovereign_operator` and `sovai operator`."""
    build_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        logging.basicConfig()
        log.critical("invalid settings: %s", describe_errors(error))
        return 2
    try:
        run(settings)
    except ConfigurationError as error:
        log.critical("cannot authenticate to the Kubernetes API: %s", error)
        return 2
    return 0

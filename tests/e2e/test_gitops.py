"""GitOps as a user runs it (docs/gitops.md): a real Argo CD syncs the chart and the custom
resources from a git repository, and reports their health through the chart's own Lua scripts.

Argo CD's application controller and repo server (built from its Go module), with Redis and a
git server on loopback, run beside the cluster (devcluster/argocd.py), with the `argocd-cm` the
chart's docs tell users to write. The Applications are the chart's `argocd/application.yaml`
example, pointed at the local git server. Everything else is what a user does: commit and push,
ask Argo CD to refresh (`argocd app get --refresh` sets the same annotation), read
`kubectl get application`. Nothing here writes a status: the operator, KubeRay and Argo CD do.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from sovereign_operator.devcluster import LocalCluster
from sovereign_operator.devcluster.argocd import NAMESPACE as ARGOCD_NAMESPACE
from sovereign_operator.devcluster.argocd import ArgoCD, GitRepository
from sovereign_operator.devcluster.incluster import (
    S3_SECRET,
    local_places,
)
from sovereign_operator.devcluster.processes import tail
from sovereign_operator.devcluster.samples import cpu_lora_job, cpu_serving
from sovereign_operator.images.references import OPERATOR_IMAGE, OPERATOR_REPOSITORY

from .kube_helpers import (
    CHART,
    SYSTEM_NAMESPACE,
    get,
    small_node_config,
    start_mlflow,
    team_namespace,
    wait,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

REGION = "eu-west-par"
OPERATOR_APP, WORKLOADS_APP = "sovereign-ai-operator", "sovereign-ai-workloads"
# Argo CD installs the chart as a release named after the Application: the chart's full name.
FULLNAME = OPERATOR_APP
TEAM = "ml-team"  # the workloads Application's namespace in application.yaml
CLAIM, BUCKET, ARTIFACTS_BUCKET = "shared", "eu-gitops-data", "eu-gitops-mlflow"
JOB, BROKEN, SERVER = "tiny-lora", "broken-lora", "tiny-chat"
CRDS = [
    f"{plural}.sovereign-ai.eu"
    for plural in ("finetunejobs", "modeldeployments", "sovereigntypolicies")
]


def to_yaml(manifest: dict[str, Any]) -> str:
    """A manifest as a user writes it in git. A string that a YAML 1.2 parser would read as a
    number (learningRate "3e-3") is quoted: PyYAML, a YAML 1.1 writer, leaves it bare."""

    class Dumper(yaml.SafeDumper):
        pass

    def string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        try:
            float(value)
        except ValueError:
            return dumper.represent_str(value)
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')

    Dumper.add_representer(str, string)
    return yaml.dump(manifest, Dumper=Dumper, sort_keys=False)


def example_applications(
    repo: GitRepository, store_places: dict[str, Any], tracking_uri: str
) -> list[dict[str, Any]]:
    """The chart's argocd/application.yaml, pointed at the local git server: the operator from
    the chart (its values as a platform team sets them here) and the team's resources."""
    operator, workloads = yaml.safe_load_all((CHART / "argocd" / "application.yaml").read_text())
    operator["spec"]["source"].update(repoURL=repo.url, targetRevision="main")
    values = operator["spec"]["source"]["helm"]["valuesObject"]
    values["image"] = {"repository": OPERATOR_REPOSITORY}
    values["sovereigntyPolicy"]["spec"] = store_places
    values["config"] = small_node_config(tracking_uri)
    workloads["spec"]["source"].update(repoURL=repo.url, targetRevision="main", path=TEAM)
    assert workloads["spec"]["destination"]["namespace"] == TEAM
    return [operator, workloads]


def application(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return get(cluster, "application", name, "-n", ARGOCD_NAMESPACE)


def health_of(app: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    """A resource's health as the Application's status shows it ({} while not reported)."""
    for resource in (app.get("status") or {}).get("resources") or []:
        if (resource["kind"], resource["name"]) == (kind, name):
            found: dict[str, Any] = resource.get("health") or {}
            return found
    return {}


def synced_and_healthy(app: dict[str, Any]) -> bool:
    status = app.get("status") or {}
    return (
        (status.get("sync") or {}).get("status"),
        (status.get("health") or {}).get("status"),
    ) == ("Synced", "Healthy")


def refresh(cluster: LocalCluster, name: str, kind: str = "normal") -> None:
    """What `argocd app get --refresh` does: Argo CD compares with git now, not at its next
    resync, and removes the annotation when it has."""
    cluster.kubectl(
        "annotate",
        "application",
        name,
        "-n",
        ARGOCD_NAMESPACE,
        "--overwrite",
        f"argocd.argoproj.io/refresh={kind}",
    )


class Watch:
    """Waits on Applications; a timeout shows the Applications and Argo CD's logs too."""

    def __init__(self, cluster: LocalCluster, argocd: ArgoCD) -> None:
        self.cluster = cluster
        self.argocd = argocd

    def until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            wait(check, timeout, what, self.cluster, (TEAM,), 2)
        except AssertionError as error:
            apps = self.cluster.kubectl(
                "get", "applications", "-n", ARGOCD_NAMESPACE, "-o", "yaml", check=False
            ).stdout
            operator = self.cluster.kubectl(
                "logs", f"deployment/{FULLNAME}", "-n", SYSTEM_NAMESPACE, "--tail=60", check=False
            ).stdout
            logs = "\n".join(
                f"--- {name}\n{tail(path, 30)}"
                for name, path in self.argocd.component_logs().items()
            )
            raise AssertionError(f"{error}\n{apps[-8000:]}\n{operator}\n{logs}") from None

    def app(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        seen: dict[str, dict[str, Any]] = {}

        def test() -> bool:
            seen["app"] = application(self.cluster, name)
            return check(seen["app"])

        self.until(test, timeout, f"Application {name} {what}")
        return seen["app"]


def team_resources() -> dict[str, dict[str, Any]]:
    """The custom resources the team keeps in git (folder ml-team/): a LoRA job, suspended for
    now; one naming a policy that does not exist (it fails); and the server of the job's model."""
    job = cpu_lora_job(
        JOB,
        TEAM,
        claim=CLAIM,
        bucket=BUCKET,
        secret=S3_SECRET,
        region=REGION,
        registered_model_name="tiny-gitops",
        experiment_name="gitops",
    )
    job["spec"]["suspend"] = True
    broken = copy.deepcopy(job)
    broken["metadata"]["name"] = BROKEN
    broken["spec"]["placement"]["policyRef"] = "no-such-policy"
    broken["spec"]["output"]["uri"] = f"s3://{BUCKET}/output/{BROKEN}"
    server = cpu_serving(SERVER, TEAM, job=JOB, region=REGION, served_model_name=SERVER)
    for manifest in (job, broken, server):
        del manifest["metadata"]["namespace"]  # the Application's destination says where
    return {
        f"{TEAM}/{JOB}.yaml": job,
        f"{TEAM}/{BROKEN}.yaml": broken,
        f"{TEAM}/{SERVER}.yaml": server,
    }


@pytest.fixture(scope="module")
def argocd(node_cluster: LocalCluster) -> Iterator[ArgoCD]:
    with ArgoCD(node_cluster) as running:
        yield running
    assert not running.leftovers(), running.leftovers()


@pytest.fixture(scope="module")
def gitops(
    node_cluster: LocalCluster, argocd: ArgoCD, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The whole story, once; yields what was seen along the way."""
    cluster = node_cluster
    watch = Watch(cluster, argocd)
    store = cluster.s3_credentials
    assert store is not None, "the e2e cluster runs its S3 store"
    seen: dict[str, Any] = {}
    # What the platform runs beside the product (MLflow), and what the team has before anything
    # comes from git: its namespace, the S3 store's keys, its data, a claim with the base model.
    tracking_uri = start_mlflow(cluster, ARTIFACTS_BUCKET, REGION)
    folder = tmp_path_factory.mktemp("gitops-claim") / "claim"
    team_namespace(cluster, TEAM, folder, claim=CLAIM, bucket=BUCKET)

    # Git: the chart, and the team's resources.
    repo = argocd.repository("platform")
    repo.copy(CHART, "charts/sovereign-ai-operator")
    files = team_resources()
    for path, manifest in files.items():
        repo.write(path, to_yaml(manifest))
    seen["first_commit"] = repo.commit("the operator's chart and the team's fine-tuning")
    places = local_places(store, SYSTEM_NAMESPACE, REGION)
    operator_app, workloads_app = example_applications(repo, places, tracking_uri)
    try:
        # 1. The operator: CRDs (wave -2), policy and admission policies (-1), then the operator.
        cluster.apply(operator_app)
        seen["operator_app"] = watch.app(
            OPERATOR_APP, synced_and_healthy, 420, "Synced and Healthy"
        )
        seen["crds"] = [get(cluster, "crd", name) for name in CRDS]
        seen["policy"] = get(cluster, "sovereigntypolicy", "eu-only")
        seen["deployment"] = get(cluster, "deployment", FULLNAME, "-n", SYSTEM_NAMESPACE)
        seen["operator_pods"] = get(
            cluster,
            "pods",
            "-n",
            SYSTEM_NAMESPACE,
            "-l",
            "app.kubernetes.io/name=sovereign-ai-operator",
        )["items"]

        # 2. The team's resources: their health through the chart's scripts.
        cluster.apply(workloads_app)

        def first_health(app: dict[str, Any]) -> bool:
            health = {
                name: health_of(app, "FineTuneJob", name).get("status") for name in (JOB, BROKEN)
            }
            return health == {JOB: "Suspended", BROKEN: "Degraded"}

        seen["workloads_first"] = watch.app(
            WORKLOADS_APP, first_health, 300, "showing the jobs Suspended and Degraded"
        )

        # 3. A commit: the job is resumed, the broken one removed.
        del files[f"{TEAM}/{JOB}.yaml"]["spec"]["suspend"]
        repo.write(f"{TEAM}/{JOB}.yaml", to_yaml(files[f"{TEAM}/{JOB}.yaml"]))
        repo.remove(f"{TEAM}/{BROKEN}.yaml")
        seen["second_commit"] = second = repo.commit("resume tiny-lora; drop broken-lora")
        refresh(cluster, WORKLOADS_APP)

        def resumed(app: dict[str, Any]) -> bool:
            status = app.get("status") or {}
            operation = (status.get("operationState") or {}).get("syncResult") or {}
            health = health_of(app, "FineTuneJob", JOB)
            if health.get("status") == "Progressing":
                seen.setdefault("progressing", []).append(health.get("message"))
            if operation.get("revision") != second or health.get("status") != "Progressing":
                return False
            # The operator reacted: it observed the new generation (the script says Progressing
            # while it has not, too).
            job = get(cluster, "finetunejob", JOB, "-n", TEAM)
            seen["job_after_commit"] = job
            observed = (job.get("status") or {}).get("observedGeneration")
            return bool(observed == job["metadata"]["generation"])

        seen["workloads_resumed"] = watch.app(
            WORKLOADS_APP, resumed, 300, "synced to the second commit, the job Progressing"
        )
        seen["broken_left"] = cluster.kubectl(
            "get", "finetunejob", BROKEN, "-n", TEAM, "--ignore-not-found", "-o", "name"
        ).stdout

        # 4. Training on the real node, then serving its model.
        def job_done(app: dict[str, Any]) -> bool:
            health = health_of(app, "FineTuneJob", JOB)
            if health.get("status") == "Progressing":
                seen.setdefault("progressing", []).append(health.get("message"))
            if health.get("status") == "Degraded":
                raise AssertionError(f"the job failed: {health}")
            return health.get("status") == "Healthy"

        seen["job_healthy"] = watch.app(WORKLOADS_APP, job_done, 900, "showing the job Healthy")
        seen["workloads_final"] = watch.app(
            WORKLOADS_APP, synced_and_healthy, 600, "Synced and Healthy"
        )

        # 5. No endless diff: a hard refresh (manifests rendered again) finds nothing to sync,
        # and no sync starts.
        before = {name: application(cluster, name) for name in (OPERATOR_APP, WORKLOADS_APP)}
        for name in before:
            refresh(cluster, name, "hard")

        def refreshed(app: dict[str, Any]) -> bool:
            annotations = app["metadata"].get("annotations") or {}
            return "argocd.argoproj.io/refresh" not in annotations

        seen["before_refresh"] = before
        seen["after_refresh"] = {
            name: watch.app(name, refreshed, 120, "refreshed") for name in before
        }
        yield seen
    finally:
        uninstall(cluster)


def uninstall(cluster: LocalCluster) -> None:
    """As docs/gitops.md says to uninstall: the workloads Application first (its finalizer
    deletes the team's resources, which the operator, still running, finalizes), then the
    operator's; the CRDs stay (Delete=false) and go by hand, so that the next test's `helm
    install` creates its own. Then what the platform had set up beside the product."""
    for name, seconds in ((WORKLOADS_APP, 180), (OPERATOR_APP, 180)):
        cluster.kubectl("delete", "application", name, "-n", ARGOCD_NAMESPACE,
                        "--ignore-not-found", f"--timeout={seconds}s", timeout=seconds + 20,
                        check=False)  # fmt: skip
    cluster.kubectl("delete", "namespace", TEAM, "--timeout=120s", timeout=140, check=False)
    cluster.kubectl("delete", "crd", *CRDS, "--ignore-not-found", timeout=120, check=False)
    cluster.kubectl("delete", "deployment,service", "mlflow", "-n", SYSTEM_NAMESPACE,
                    "--ignore-not-found", check=False)  # fmt: skip
    cluster.kubectl("delete", "pv", f"{TEAM}-{CLAIM}", "--wait=false", check=False)


def created(manifest: dict[str, Any]) -> str:
    stamp: str = manifest["metadata"]["creationTimestamp"]
    return stamp


def test_the_application_syncs_the_chart_in_its_waves(
    node_cluster: LocalCluster, gitops: dict[str, Any]
) -> None:
    app = gitops["operator_app"]
    assert app["status"]["sync"]["revision"] in (gitops["first_commit"], gitops["second_commit"])
    # Waves are applied one after the other (two seconds apart at least): CRDs, then the
    # policy, then the operator's Deployment.
    newest_crd = max(created(crd) for crd in gitops["crds"])
    assert newest_crd < created(gitops["policy"]) < created(gitops["deployment"]), (
        [created(c) for c in gitops["crds"]],
        created(gitops["policy"]),
        created(gitops["deployment"]),
    )
    # The operator runs as a pod on the real node, from the product's own image.
    [pod] = gitops["operator_pods"]
    assert node_cluster.real_node is not None
    assert pod["spec"]["nodeName"] == node_cluster.real_node.name
    assert pod["spec"]["containers"][0]["image"] == OPERATOR_IMAGE
    assert health_of(app, "Deployment", FULLNAME)["status"] == "Healthy"


def test_argocd_shows_each_jobs_health_through_the_charts_scripts(gitops: dict[str, Any]) -> None:
    first = gitops["workloads_first"]
    suspended = health_of(first, "FineTuneJob", JOB)
    assert suspended["status"] == "Suspended"
    assert suspended["message"], suspended
    broken = health_of(first, "FineTuneJob", BROKEN)
    assert broken["status"] == "Degraded"
    # The operator's message, through the script: the failed phase and what is wrong.
    assert broken["message"].startswith("Failed: "), broken
    assert "no-such-policy" in broken["message"], broken
    assert "does not exist" in broken["message"], broken
    # The server waits for the job's model.
    assert health_of(first, "ModelDeployment", SERVER)["status"] == "Progressing"
    assert first["status"]["health"]["status"] == "Degraded"  # the worst of its resources
    # While it ran, and when it succeeded.
    # The operator's phase, through the script ("Running: 42%"), while it trained.
    running = [m for m in gitops["progressing"] if m.startswith("Running")]
    assert running, gitops["progressing"]
    healthy = health_of(gitops["job_healthy"], "FineTuneJob", JOB)
    assert healthy["message"].startswith("Fine-tuned model models:/tiny-gitops/"), healthy


def test_a_commit_is_synced_and_the_operator_reacts(gitops: dict[str, Any]) -> None:
    job = gitops["job_after_commit"]
    assert "suspend" not in job["spec"] or job["spec"]["suspend"] is False
    assert job["status"]["observedGeneration"] == job["metadata"]["generation"]
    assert job["status"]["phase"] in ("Pending", "Validating", "Queued", "Running"), job["status"]
    assert gitops["broken_left"] == "", "the job removed from git was not pruned"
    app = gitops["workloads_resumed"]
    assert app["status"]["sync"]["revision"] == gitops["second_commit"]


def test_the_applications_end_synced_and_healthy_without_drift(gitops: dict[str, Any]) -> None:
    final = gitops["workloads_final"]
    assert synced_and_healthy(final)
    assert health_of(final, "ModelDeployment", SERVER)["status"] == "Healthy"
    for name, app in gitops["after_refresh"].items():
        before = gitops["before_refresh"][name]
        assert synced_and_healthy(app), (name, app["status"])
        drifting = [r for r in app["status"]["resources"] if r.get("status") != "Synced"]
        assert not drifting, (name, drifting)
        # No sync was started by the refresh: nothing drifted for self-heal to undo.
        assert (
            app["status"]["operationState"]["startedAt"]
            == before["status"]["operationState"]["startedAt"]
        ), name

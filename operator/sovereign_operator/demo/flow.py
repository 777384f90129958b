"""The demo's story, step by step, on real components only.

Everything runs on this machine: the local control plane with KubeRay, kwok GPU nodes (they
run nothing, they show placement), and one real node in eu-west-par (kubelet, containerd,
runc) that runs the product's own images. The operator runs as the chart's Deployment, MLflow
as a tracking server in the cluster; the FineTuneJob trains for real in Ray pods that KubeRay
makes, and the ModelDeployment serves its adapter from a pod that the openai client asks
through the Service.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
import yaml

from ..builders.podtemplate import IMAGE_UID  # who must be able to write the claim's folder
from ..builders.serving import DEPLOYMENT_NAME_LABEL
from ..devcluster import LocalCluster, ensure_binaries
from ..devcluster.incluster import (
    MLFLOW_PORT,
    S3_SECRET,
    host_path_claim,
    local_places,
    mlflow_server,
    mlflow_tracking_uri,
    s3_secret,
)
from ..devcluster.nodes import DEFAULT_NODES
from ..devcluster.s3store import (
    S3Credentials,
    audit_environment,
    audit_settings,
    make_bucket,
    make_locked_bucket,
    objects,
    upload,
)
from ..devcluster.samples import cpu_lora_job, cpu_serving
from ..images.build import build_images
from ..images.references import NODE_IMAGES, RUNTIME_IMAGE
from .steps import Steps

SYSTEM_NAMESPACE = "sovereign-ai-system"
RELEASE = "sovai"
OPERATOR_DEPLOYMENT = f"{RELEASE}-sovereign-ai-operator"
NAMESPACE = "ml-team"
REGION = "eu-west-par"
CLAIM = "shared"
DATA_BUCKET = "eu-ml-team"
ARTIFACTS_BUCKET = "eu-mlflow-artifacts"
AUDIT_BUCKET = "eu-audit-log"
AUDIT_PREFIX = "demo"
JOB = "eu-dp-assistant"
MODEL_NAME = "eu-dp-assistant"
REGION_LABEL = "topology.kubernetes.io/region"
FTJ_COLUMNS = (
    "NAME:.metadata.name,PHASE:.status.phase,STEP:.status.progress.step,"
    "TOTAL:.status.progress.totalSteps,LOSS:.status.progress.trainLoss,"
    "ETA:.status.progress.estimatedRemainingSeconds"
)
MDEP_COLUMNS = (
    "NAME:.metadata.name,PHASE:.status.phase,READY:.status.readyReplicas,"
    "MESSAGE:.status.conditions[?(@.type=='Ready')].message"
)
# The GPU pools are kwok nodes; their taint keeps the CPU pods of the demo on the real node.
GPU_NODES = tuple(node for node in DEFAULT_NODES if node.gpu_product)


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


class Demo:
    def __init__(self, repo: Path, workdir: Path, keep: bool = False) -> None:
        self.repo = repo
        self.workdir = workdir
        self.keep = keep
        self.steps = Steps(total=9, log_dir=workdir / "logs")
        self.stack = ExitStack()

    # -- helpers ---------------------------------------------------------------------------

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, check=check, stdin=stdin)

    def get(self, *args: str) -> Any:
        result = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def helm(self, *args: str) -> str:
        argv = [str(self.cluster.binaries["helm"]), f"--kubeconfig={self.cluster.kubeconfig}"]
        return subprocess.run(
            [*argv, *args], capture_output=True, text=True, check=True, timeout=300
        ).stdout

    def phase(self, kind: str, name: str) -> str | None:
        obj = self.get(kind, name, "-n", NAMESPACE)
        return obj.get("status", {}).get("phase") if obj else None

    def node_regions(self) -> dict[str, str]:
        return {
            n["metadata"]["name"]: n["metadata"]["labels"].get(REGION_LABEL, "?")
            for n in self.get("nodes")["items"]
        }

    def pods_with_regions(self, selector: str) -> list[tuple[str, str, str]]:
        regions = self.node_regions()
        return [
            (p["metadata"]["name"], p["spec"]["nodeName"], regions.get(p["spec"]["nodeName"], "?"))
            for p in self.get("pods", "-n", NAMESPACE, "-l", selector)["items"]
            if p["spec"].get("nodeName")
        ]

    def show_placement(self, selector: str) -> list[tuple[str, str, str]]:
        placed = self.pods_with_regions(selector)
        self.steps.show("pod → node → region")
        for pod, node, region in placed:
            self.steps.show(f"  {pod} → {node} → {region}")
        return placed

    def status_line(self, kind: str, name: str, columns: str) -> str:
        """One line of the object's status, without AGE: printed only when it changes."""
        return self.kubectl(
            "get", kind, name, "-n", NAMESPACE, "--no-headers", f"-o=custom-columns={columns}"
        ).stdout.strip()

    def service_url(self, namespace: str, name: str) -> str:
        """http://<cluster IP>:<port> of a Service: kube-proxy's rules route it from this
        machine, which does not use the cluster's DNS."""
        service = self.get("service", name, "-n", namespace)
        return f"http://{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"

    # -- the story -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.start_cluster()
            self.install_chart()
            self.prepare_data()
            self.fine_tune_in_ray_pods()
            self.serve_model()
            self.query_model()
            self.show_admission_and_gpu_placement()
            self.check_audit_log()
            self.summary()
            if self.keep:
                self.stay_up()
        finally:
            self.stop_everything()

    def stop_everything(self) -> None:
        """Stop what the demo started, saying what while it happens. A second Ctrl-C must not
        cut the teardown short (that is what left processes and mounts behind): until it is
        done, Ctrl-C only says that it is still stopping."""

        def still_stopping(signum: int, frame: object) -> None:
            self.steps.say("    still stopping; the last line will say when everything is")

        previous = signal.signal(signal.SIGINT, still_stopping)
        began = time.monotonic()
        try:
            self.steps.say("\nStopping everything started here:")
            self.stack.close()
        finally:
            signal.signal(signal.SIGINT, previous)
        cluster: LocalCluster | None = getattr(self, "cluster", None)
        left = cluster.leftovers() if cluster is not None else []
        if left:
            raise RuntimeError("the teardown left these behind: " + "; ".join(left))
        self.steps.say(
            f"Everything started here is stopped ({time.monotonic() - began:.0f} s): no "
            f"process, mount, network interface or firewall rule of it is left. Logs and the "
            f"evidence stay in {self.workdir}."
        )

    def stay_up(self) -> None:
        """--keep: the cluster stays up for the commands the summary printed, until Ctrl-C."""
        self.steps.say("\n--keep: the cluster stays up until Ctrl-C.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass

    def start_cluster(self) -> None:
        with self.steps.step(
            "Build the images (cached) and start the local cluster: etcd, kube-apiserver, "
            "controller-manager, scheduler, KubeRay, kwok GPU nodes and a real node"
        ):
            images = {image.name: image for image in build_images(self.repo, NODE_IMAGES)}
            for name in NODE_IMAGES:
                image = images[name]
                cached = "cached" if image.cached else f"built in {image.build_seconds:.0f} s"
                self.steps.show(f"{image.reference}  {image.manifest_digest}  ({cached})")
            self.cluster = self.stack.enter_context(
                LocalCluster(
                    self.workdir / "cluster",
                    nodes=GPU_NODES,
                    binaries=ensure_binaries(node=True),
                    real_node=True,
                    node_images=[Path(images[name].archive) for name in NODE_IMAGES],
                    keep_workdir=True,
                    report_stop=self.steps.show,
                    s3=True,
                )
            )
            self.steps.show(
                self.kubectl("get", "nodes", "-L", f"{REGION_LABEL},nvidia.com/gpu.product").stdout
            )

    def install_chart(self) -> None:
        with self.steps.step(
            "helm install the chart: CRDs, admission policies, RBAC, the eu-only policy (with "
            "the cluster's S3 store and MLflow as its places), and the operator as a pod; "
            "MLflow as a tracking server in the cluster, its artifacts in the S3 store"
        ):
            store = self.store
            self.kubectl("create", "namespace", SYSTEM_NAMESPACE)
            make_bucket(store, ARTIFACTS_BUCKET)
            # The audit log's bucket: Object Lock keeps every record as first written.
            make_locked_bucket(store, AUDIT_BUCKET)
            self.cluster.apply(s3_secret(SYSTEM_NAMESPACE, store))
            for manifest in mlflow_server(
                SYSTEM_NAMESPACE, RUNTIME_IMAGE, [REGION], artifacts=(store, ARTIFACTS_BUCKET)
            ):
                self.cluster.apply(manifest)
            self.tracking_uri = mlflow_tracking_uri(SYSTEM_NAMESPACE)
            config = {
                "mlflowTrackingUri": self.tracking_uri,
                # The real node has two cores for everything.
                "headCpu": "500m",
                "headMemory": "4Gi",
                "reconcileIntervalSeconds": 2,
                "startupDeadlineSeconds": 900,
                "logFormat": "text",
                **audit_settings(store, AUDIT_BUCKET, AUDIT_PREFIX),
            }
            chart = self.repo / "charts" / "sovereign-ai-operator"
            self.helm(
                "install",
                RELEASE,
                str(chart),
                "-n",
                SYSTEM_NAMESPACE,
                "--wait",
                "--timeout=300s",
                "--set-json",
                f"config={json.dumps(config)}",
                "--set",
                f"audit.credentialsSecret={S3_SECRET}",
                # The chart's policy declares no place: the cluster's MLflow and S3 store are
                # this cluster's, as a platform team would add theirs.
                *(
                    arg
                    for key, value in local_places(store, SYSTEM_NAMESPACE, REGION).items()
                    for arg in ("--set-json", f"sovereigntyPolicy.spec.{key}={json.dumps(value)}")
                ),
            )
            self.steps.wait(
                lambda: (
                    (self.get("deployment", "mlflow", "-n", SYSTEM_NAMESPACE) or {})
                    .get("status", {})
                    .get("availableReplicas")
                ),
                timeout=300,
                what="MLflow to be Available",
            )
            self.steps.show(self.helm("list", "-n", SYSTEM_NAMESPACE))
            pods = self.kubectl("get", "pods", "-o", "wide", "-n", SYSTEM_NAMESPACE).stdout
            self.steps.show(pods)
            self.steps.show(self.kubectl("get", "sovereigntypolicies").stdout)
            self.steps.show(self.kubectl("get", "validatingadmissionpolicies").stdout)

    @property
    def store(self) -> S3Credentials:
        assert self.cluster is not None
        assert self.cluster.s3_credentials is not None
        return self.cluster.s3_credentials

    def prepare_data(self) -> None:
        with self.steps.step(
            "The sample EU chat data in the S3 store, its keys in a Secret; a claim on the real "
            "node with a tiny base model"
        ):
            folder = self.workdir / "claim"
            # A small, randomly initialised Llama with a tokenizer trained on the sample data:
            # nothing is downloaded.
            from sovereign_training.tiny import create_tiny_model

            create_tiny_model(folder / "models" / "tiny")
            data = self.repo / "examples" / "data" / "eu-data-protection-chat.jsonl"
            uri = upload(self.store, DATA_BUCKET, "data/train.jsonl", data)
            self.steps.show(f"{uri} at {self.store.endpoint} ({data.stat().st_size} bytes)")
            for path in (folder, *folder.rglob("*")):
                os.chown(path, IMAGE_UID, IMAGE_UID)
            os.chmod(self.workdir, 0o755)
            self.kubectl("create", "namespace", NAMESPACE)
            self.cluster.apply(s3_secret(NAMESPACE, self.store))
            assert self.cluster.real_node is not None
            for manifest in host_path_claim(
                CLAIM, NAMESPACE, str(folder), self.cluster.real_node.name
            ):
                self.cluster.apply(manifest)
            self.steps.show(self.kubectl("get", "pvc", "-n", NAMESPACE).stdout)

    def fine_tune_in_ray_pods(self) -> None:
        with self.steps.step(
            "Fine-tune (LoRA) for real: KubeRay's head, two workers and the submitter train "
            "data-parallel on the real node, tracked in MLflow"
        ):
            job = cpu_lora_job(
                JOB,
                NAMESPACE,
                claim=CLAIM,
                bucket=DATA_BUCKET,
                secret=S3_SECRET,
                region=REGION,
                registered_model_name=MODEL_NAME,
                experiment_name="eu-data-protection",
            )
            self.cluster.apply(job)

            def progress() -> str:
                return self.status_line("ftj", JOB, FTJ_COLUMNS)

            def running_with_progress() -> bool:
                status = (self.get("finetunejob", JOB, "-n", NAMESPACE) or {}).get("status", {})
                if status.get("phase") in ("Failed", "Succeeded"):
                    return True
                return bool((status.get("progress") or {}).get("step"))

            self.steps.wait(
                running_with_progress, 900, f"FineTuneJob {JOB} to report progress", 2.0, progress
            )
            self.steps.show("$ kubectl get pods -o wide   (during training)")
            self.steps.show(self.kubectl("get", "pods", "-o", "wide", "-n", NAMESPACE).stdout)
            self.steps.wait(
                lambda: self.phase("finetunejob", JOB) in ("Succeeded", "Failed"),
                timeout=900,
                what=f"FineTuneJob {JOB} to finish",
                interval=3.0,
                progress=progress,
            )
            if self.phase("finetunejob", JOB) != "Succeeded":
                raise RuntimeError(
                    "the FineTuneJob failed:\n"
                    + self.kubectl("describe", "ftj", JOB, "-n", NAMESPACE).stdout
                )
            self.steps.show(self.kubectl("get", "ftj", "-n", NAMESPACE).stdout)
            described = self.kubectl("describe", "ftj", JOB, "-n", NAMESPACE).stdout
            # The status and the Events tell the story; the spec was shown when applied.
            self.steps.show("$ kubectl describe ftj " + JOB + "   (from Status:)")
            self.steps.show(described[described.find("\nStatus:") + 1 :])
            self.show_registered_model()

    def show_registered_model(self) -> None:
        status = self.get("finetunejob", JOB, "-n", NAMESPACE)["status"]
        mlflow = status.get("mlflow") or {}
        # MLflow's REST API, asked directly: from this machine through the Service's cluster
        # IP, with the Service's name as the Host (MLflow refuses Host headers it does not know).
        response = requests.get(
            self.service_url(SYSTEM_NAMESPACE, "mlflow") + "/api/2.0/mlflow/model-versions/get",
            params={"name": mlflow.get("modelName"), "version": mlflow.get("modelVersion")},
            headers={"Host": self.tracking_uri.split("//", 1)[1]},
            timeout=30,
        )
        response.raise_for_status()
        version = response.json()["model_version"]
        tags = {tag["key"]: tag["value"] for tag in version.get("tags", [])}
        registered = {"source": version.get("source"), "runId": version.get("run_id"), "tags": tags}
        self.evidence = {"finetunejob": status, "mlflowModelVersion": registered}
        self.steps.show(f"registered in MLflow as {status.get('fineTunedModel')}:")
        self.steps.show(json.dumps(registered, indent=2, sort_keys=True))
        described = self.kubectl("describe", "finetunejob", JOB, "-n", NAMESPACE).stdout
        self.steps.show("where each URI went (kubectl describe finetunejob, its Storage):")
        self.steps.show(status_section(described, "Storage"))
        written = objects(self.store, DATA_BUCKET, f"output/{JOB}/")
        self.steps.show(f"the adapter in the S3 store, s3://{DATA_BUCKET}/output/{JOB}/:")
        self.steps.show("\n".join(f"    {key}" for key in written))

    def serve_model(self) -> None:
        with self.steps.step(
            "Serve the adapter on its base with a ModelDeployment, from a pod on the real node"
        ):
            deployment = cpu_serving(MODEL_NAME, NAMESPACE, job=JOB, region=REGION)
            self.cluster.apply(deployment)
            self.steps.wait(
                lambda: self.phase("modeldeployment", MODEL_NAME) in ("Ready", "Failed"),
                timeout=600,
                what="the ModelDeployment to be Ready",
                progress=lambda: self.status_line("mdep", MODEL_NAME, MDEP_COLUMNS),
            )
            if self.phase("modeldeployment", MODEL_NAME) != "Ready":
                raise RuntimeError(
                    self.kubectl("describe", "mdep", MODEL_NAME, "-n", NAMESPACE).stdout
                )
            self.steps.show(self.kubectl("get", "mdep", "-n", NAMESPACE).stdout)
            status = self.get("modeldeployment", MODEL_NAME, "-n", NAMESPACE)["status"]
            self.evidence["modeldeployment"] = status
            for key in ("modelUri", "modelDigest", "baseModelUri", "baseModelDigest", "url"):
                self.steps.show(f"{key}: {status.get(key)}")
            self.show_placement(f"{DEPLOYMENT_NAME_LABEL}={MODEL_NAME}")

    def query_model(self) -> None:
        with self.steps.step(
            "Ask it with the openai client, through the Service (kube-proxy)"
        ) as log:
            from openai import OpenAI

            base_url = self.service_url(NAMESPACE, MODEL_NAME) + "/v1"
            client = OpenAI(base_url=base_url, api_key="unused", timeout=120)
            reply = client.chat.completions.create(
                model=MODEL_NAME,
                max_tokens=24,
                messages=[{"role": "user", "content": "Where may personal data be processed?"}],
            )
            usage = reply.usage
            answer = (
                f"model: {reply.model}\n"
                f"answer: {reply.choices[0].message.content!r}\n"
                f"usage: {usage.prompt_tokens if usage else '?'} prompt + "
                f"{usage.completion_tokens if usage else '?'} completion tokens"
            )
            log.write_text(answer)
            self.steps.show(f"$ OpenAI(base_url={base_url!r}).chat.completions.create(...)")
            self.steps.show(answer)

    def show_admission_and_gpu_placement(self) -> None:
        with self.steps.step(
            "Residency: admission rejects us-east-1 and a bucket at no declared endpoint; a GPU "
            "job's workers land only on EU GPU nodes"
        ):
            refusals = {
                "finetunejob-us-east-1.yaml": {"placement": {"regions": ["us-east-1"]}},
                "finetunejob-us-bucket.yaml": {
                    "dataset": {"trainingUri": "s3://us-datasets/train.jsonl", "format": "chat"}
                },
            }
            for shown, change in refusals.items():
                rejected = _load(self.repo / "examples" / "finetunejob-lora.yaml")
                rejected["metadata"] = {"name": "refused", "namespace": NAMESPACE}
                rejected["spec"] |= change
                result = self.kubectl("apply", "-f", "-", check=False, stdin=json.dumps(rejected))
                if result.returncode == 0:
                    raise RuntimeError(f"{shown} was admitted")
                self.steps.show(f"$ kubectl apply -f {shown}")
                self.steps.show(result.stderr)

            job = _load(self.repo / "examples" / "finetunejob-lora.yaml")
            job["metadata"] = {"name": "support-assistant-lora", "namespace": NAMESPACE}
            job["spec"]["placement"]["regions"] = ["eu-west-par", "eu-central-fra"]
            job["spec"]["execution"].pop("image", None)  # the locally built runtime image
            self.cluster.apply(job)
            selector = "ray.io/group=workers"
            self.steps.wait(
                lambda: len(self.pods_with_regions(selector)) >= 2,
                timeout=180,
                what="the RayCluster's GPU workers to be bound",
            )
            self.steps.show(
                self.kubectl("get", "ftj", "support-assistant-lora", "-n", NAMESPACE).stdout
            )
            placed = self.show_placement(selector)
            outside = [p for p in placed if p[2] not in ("eu-west-par", "eu-central-fra")]
            if outside:
                raise RuntimeError(f"pods outside the EU: {outside}")
            self.kubectl("delete", "ftj", "support-assistant-lora", "-n", NAMESPACE, "--wait=false")

    def audit(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`sovai audit ...` from this machine, as a compliance officer runs it: the store's
        keys, the cluster's kubeconfig."""
        env = {
            **os.environ,
            **audit_environment(self.store, AUDIT_BUCKET, AUDIT_PREFIX),
            "KUBECONFIG": str(self.cluster.kubeconfig),
        }
        argv = [sys.executable, "-m", "sovereign_operator.cli", "audit", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)

    def check_audit_log(self) -> None:
        with self.steps.step(
            "The audit log: every record chained to the one before, in a bucket with Object "
            "Lock; `sovai audit verify` checks it against the cluster, `sovai audit show` tells "
            "the job's story"
        ):
            verified = self.audit("verify")
            self.steps.show("$ sovai audit verify")
            self.steps.show(verified.stdout + verified.stderr)
            if verified.returncode != 0:
                raise RuntimeError("sovai audit verify found the audit log broken")
            shown = self.audit("show", f"ftj/{JOB}", "-n", NAMESPACE)
            self.steps.show(f"$ sovai audit show ftj/{JOB} -n {NAMESPACE}")
            self.steps.show(shown.stdout + shown.stderr)
            if shown.returncode != 0:
                raise RuntimeError(f"sovai audit show ftj/{JOB} failed")

    def summary(self) -> None:
        evidence_path = self.workdir / "evidence" / f"{NAMESPACE}-{JOB}.json"
        evidence_path.parent.mkdir(parents=True, exist_ok=True)
        evidence_path.write_text(json.dumps(self.evidence, indent=2, sort_keys=True))
        total = time.monotonic() - self.steps.started
        self.steps.say(f"\nThe demo ran end to end in {total:.0f} s. Where to look:")
        self.steps.show(f"evidence:  {evidence_path}  (placement, residency, MLflow lineage)")
        self.steps.show(f"logs:      {self.steps.log_dir}")
        kubectl = self.cluster.binaries["kubectl"]
        kubeconfig = f"export KUBECONFIG={self.cluster.kubeconfig} PATH={kubectl.parent}:$PATH"
        mlflow = (
            f"kubectl port-forward -n {SYSTEM_NAMESPACE} svc/mlflow {MLFLOW_PORT}:{MLFLOW_PORT}, "
            f"then http://127.0.0.1:{MLFLOW_PORT} (runs, the registered model "
            f"{MODEL_NAME}, its model card: the version's README.md artifact)"
        )
        if self.keep:
            self.steps.show(f"kubectl:   {kubeconfig}; kubectl get ftj,mdep -n {NAMESPACE}")
            self.steps.show(f"MLflow:    {mlflow}")
            self.steps.show(
                f"audit:     SOVAI_AUDIT_URI=s3://{AUDIT_BUCKET}/{AUDIT_PREFIX} "
                f"SOVAI_AUDIT_ENDPOINT={self.store.endpoint} and the keys of Secret "
                f"{NAMESPACE}/{S3_SECRET} as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, then "
                f"`sovai audit verify`, `sovai audit show ftj/{JOB} -n {NAMESPACE}`; change a "
                "byte of a record in the bucket and verify names it (docs/compliance.md)"
            )
        else:
            self.steps.show(
                "cluster:   stopped as the demo ends; `sovai demo --keep` (make demo "
                "DEMO_ARGS=--keep) keeps it up afterwards for kubectl and the MLflow UI"
            )


def status_section(described: str, name: str) -> str:
    """The lines of one field of `kubectl describe`'s Status (``  Storage:`` and what is
    indented under it)."""
    lines = described.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"{name}:"), None)
    if start is None:
        return f"(no {name} in the status)"
    indent = len(lines[start]) - len(lines[start].lstrip())
    section = [lines[start]]
    for line in lines[start + 1 :]:
        if (
            line.strip()
            and len(line) - len(line.lstrip()) <= indent
            and not line.lstrip().startswith("-")
        ):
            break
        section.append(line)
    return "\n".join(section)


def run_demo(repo: Path, workdir: Path, keep: bool = False) -> int:
    """Run the demo in ``workdir`` (emptied first, so it can be re-run). Returns an exit code.
    With ``keep``, the cluster stays up after the last step until Ctrl-C."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # The openai client logs every request at INFO; the demo prints what matters itself.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    demo = Demo(repo, workdir, keep=keep)
    try:
        demo.run()
    except KeyboardInterrupt:
        demo.steps.say("interrupted")
        return 130
    except Exception as error:  # the step runner already named the step and its log
        demo.steps.say(f"\nFAILED: {error}")
        return 1
    return 0

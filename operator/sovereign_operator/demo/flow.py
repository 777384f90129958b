"""The demo's story, step by step, on real components only.

Everything runs on this machine: the local control plane (with KubeRay and kwok GPU nodes),
the Helm chart, the operator as the chart's ServiceAccount, a local Ray head and MLflow on
sqlite. The rayCluster-backed FineTuneJob really trains a small model on the CPU.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
import yaml

from ..builders.serving import DEPLOYMENT_NAME_LABEL
from ..devcluster import LocalCluster, ensure_binaries
from ..devcluster.identity import service_account_kubeconfig
from ..devcluster.processes import ManagedProcess, free_port
from ..devcluster.services import LocalMlflow, LocalRayHead
from .steps import Steps

SYSTEM_NAMESPACE = "sovereign-ai-system"
RELEASE = "sovai"
SERVICE_ACCOUNT = f"{RELEASE}-sovereign-ai-operator"
NAMESPACE = "ml-team"
RAY_TOKEN_SECRET = "local-ray-token"
# Images must come from a registry the example policy allows.
IMAGE = "registry.eu-west-par.example.eu/sovereign-ai/runtime:0.1.0"
JOB = "eu-dp-assistant"
MODEL_NAME = "eu-dp-assistant"
REGION_LABEL = "topology.kubernetes.io/region"


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


class Demo:
    def __init__(self, repo: Path, workdir: Path) -> None:
        self.repo = repo
        self.workdir = workdir
        self.steps = Steps(total=9, log_dir=workdir / "logs")
        self.stack = ExitStack()
        self.python = sys.executable

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

    # -- the story -------------------------------------------------------------------------

    def run(self) -> None:
        with self.stack:
            self.start_control_plane()
            self.start_data_plane()
            self.install_chart()
            self.apply_policy()
            self.start_operator()
            self.fine_tune_on_local_ray()
            self.show_admission_and_placement()
            self.serve_model()
            self.query_model()
            self.summary()

    def start_control_plane(self) -> None:
        with self.steps.step(
            "Start the local control plane (etcd, kube-apiserver, "
            "controller-manager, scheduler, kwok GPU nodes, KubeRay)"
        ):
            binaries = ensure_binaries()
            self.cluster = self.stack.enter_context(
                LocalCluster(self.workdir / "cluster", binaries=binaries, keep_workdir=True)
            )
            self.steps.show(
                self.kubectl("get", "nodes", "-L", f"{REGION_LABEL},nvidia.com/gpu.product").stdout
            )

    def start_data_plane(self) -> None:
        with self.steps.step(
            "Start the embedded data plane: a local Ray head and MLflow on sqlite"
        ):
            self.mlflow = self.stack.enter_context(
                LocalMlflow(self.workdir / "mlflow", self.workdir / "logs")
            )
            self.ray = self.stack.enter_context(LocalRayHead(self.workdir / "logs"))
            self.steps.show(f"MLflow tracking URI: {self.mlflow.tracking_uri}")
            self.steps.show(f"Ray dashboard / Job Submission API: {self.ray.address} (token auth)")

    def install_chart(self) -> None:
        with self.steps.step("helm install the chart (CRDs, admission policies, RBAC, operator)"):
            values = {
                # The example policy is applied in the next step, with the local Ray cluster.
                "sovereigntyPolicy": {"create": False},
                "rbac": {"raySecrets": [{"namespace": SYSTEM_NAMESPACE, "name": RAY_TOKEN_SECRET}]},
                "config": {
                    "defaultPolicy": "eu-only",
                    "runtimeImage": IMAGE,
                    "mlflowTrackingUri": self.mlflow.tracking_uri,
                    # The local Ray head runs jobs with this machine's interpreter.
                    "trainingCommand": f"{self.python} -m sovereign_training train",
                    "startupDeadlineSeconds": 600,
                    "reconcileIntervalSeconds": 2,
                    "logFormat": "text",
                },
                # Even the (kwok-simulated) operator pod must stay in the EU.
                "nodeSelector": {REGION_LABEL: "eu-west-par"},
            }
            args = [a for k, v in values.items() for a in ("--set-json", f"{k}={json.dumps(v)}")]
            chart = self.repo / "charts" / "sovereign-ai-operator"
            self.helm(
                "install",
                RELEASE,
                str(chart),
                "-n",
                SYSTEM_NAMESPACE,
                "--create-namespace",
                "--wait",
                "--timeout=120s",
                *args,
            )
            self.steps.show(self.helm("list", "-n", SYSTEM_NAMESPACE))
            self.steps.show(
                self.kubectl(
                    "get", "crd", "-l", "app.kubernetes.io/name=sovereign-ai-operator"
                ).stdout
            )
            self.steps.show(self.kubectl("get", "validatingadmissionpolicies").stdout)

    def apply_policy(self) -> None:
        with self.steps.step(
            "Apply the example SovereigntyPolicy (EU regions; the local Ray "
            "cluster declared in eu-west-par)"
        ):
            self.cluster.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": RAY_TOKEN_SECRET, "namespace": SYSTEM_NAMESPACE},
                    "stringData": {"token": self.ray.token},
                }
            )
            policy = _load(self.repo / "examples" / "sovereigntypolicy-eu.yaml")
            policy["spec"]["rayClusters"] = [
                {
                    "name": "local-eu",
                    "address": self.ray.address,
                    "region": "eu-west-par",
                    "authTokenSecretRef": {
                        "namespace": SYSTEM_NAMESPACE,
                        "name": RAY_TOKEN_SECRET,
                        "key": "token",
                    },
                }
            ]
            self.cluster.apply(policy)
            self.kubectl("create", "namespace", NAMESPACE)
            self.steps.show(self.kubectl("get", "sovereign-ai").stdout)

    def start_operator(self) -> None:
        with self.steps.step(
            "Run the operator as the chart's ServiceAccount, with the chart's settings"
        ):
            kubeconfig = service_account_kubeconfig(
                self.cluster,
                SERVICE_ACCOUNT,
                SYSTEM_NAMESPACE,
                self.workdir / "operator.kubeconfig",
            )
            env = self.chart_environment()
            health = free_port()
            env.update(
                {
                    "KUBECONFIG": str(kubeconfig),
                    "SOVAI_HEALTH_PORT": str(health),
                    "SOVAI_METRICS_PORT": str(free_port()),
                }
            )
            operator = ManagedProcess(
                "operator", [self.python, "-m", "sovereign_operator"], self.workdir / "logs", env
            )
            operator.start()
            self.stack.callback(operator.stop)
            operator.wait_until(
                lambda: requests.get(f"http://127.0.0.1:{health}/healthz", timeout=2).ok,
                120,
                "healthy (/healthz)",
            )
            self.operator = operator
            self.steps.show(f"identity: system:serviceaccount:{SYSTEM_NAMESPACE}:{SERVICE_ACCOUNT}")
            self.steps.show(f"log: {operator.log_path}")

    def chart_environment(self) -> dict[str, str]:
        """The SOVAI_* variables of the chart's rendered operator Deployment."""
        manifest = self.helm("get", "manifest", RELEASE, "-n", SYSTEM_NAMESPACE)
        for document in yaml.safe_load_all(manifest):
            if document and document.get("kind") == "Deployment":
                container = document["spec"]["template"]["spec"]["containers"][0]
                return {
                    item["name"]: str(item["value"])
                    for item in container.get("env", [])
                    if item["name"].startswith("SOVAI_") and "value" in item
                }
        raise RuntimeError("the chart rendered no Deployment")

    def fine_tune_on_local_ray(self) -> None:
        with self.steps.step(
            "Fine-tune a small model for real on the local Ray (rayCluster "
            "backend), tracked in MLflow"
        ):
            base = self.workdir / "models" / "tiny-base"
            if not (base / "config.json").exists():
                # A small, randomly initialised Llama with a tokenizer trained on the sample
                # data: nothing is downloaded.
                subprocess.run(
                    [
                        self.python,
                        "-c",
                        "import sys; from sovereign_training.tiny import create_tiny_model; "
                        "create_tiny_model(sys.argv[1])",
                        str(base),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
            dataset = self.repo / "examples" / "data" / "eu-data-protection-chat.jsonl"
            job = {
                "apiVersion": "sovereign-ai.eu/v1alpha1",
                "kind": "FineTuneJob",
                "metadata": {"name": JOB, "namespace": NAMESPACE},
                "spec": {
                    "baseModel": {"uri": base.as_uri()},
                    "dataset": {"trainingUri": dataset.as_uri(), "format": "chat"},
                    "method": {
                        "type": "full",
                        "hyperparameters": {
                            "epochs": 2,
                            "batchSize": 8,
                            "microBatchSize": 8,
                            "learningRate": "3e-3",
                            "maxSeqLength": 256,
                        },
                    },
                    "resources": {"workers": 1, "gpusPerWorker": 0, "cpu": "1", "memory": "2Gi"},
                    "execution": {"backend": "rayCluster", "rayClusterRef": "local-eu"},
                    "tracking": {
                        "experimentName": "eu-data-protection",
                        "registeredModelName": MODEL_NAME,
                    },
                },
            }
            self.cluster.apply(job)
            self.steps.wait(
                lambda: self.phase("finetunejob", JOB) in ("Succeeded", "Failed"),
                timeout=900,
                what=f"FineTuneJob {JOB} to finish",
                interval=3.0,
                progress=lambda: self.kubectl(
                    "get", "ftj", JOB, "-n", NAMESPACE, "--no-headers"
                ).stdout.strip(),
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

    def phase(self, kind: str, name: str) -> str | None:
        obj = self.get(kind, name, "-n", NAMESPACE)
        return obj.get("status", {}).get("phase") if obj else None

    def show_registered_model(self) -> None:
        status = self.get("finetunejob", JOB, "-n", NAMESPACE)["status"]
        mlflow = status.get("mlflow") or {}
        self.model_uri = str(status.get("fineTunedModel") or mlflow.get("modelUri"))
        from mlflow import MlflowClient  # the demo runs with the training extra installed

        client = MlflowClient(tracking_uri=self.mlflow.tracking_uri)
        version = client.get_model_version(
            str(mlflow.get("modelName")), str(mlflow.get("modelVersion"))
        )
        registered = {"source": version.source, "tags": dict(version.tags)}
        shown = json.dumps(registered, indent=2, sort_keys=True)
        self.evidence = {"finetunejob": status, "mlflowModelVersion": registered}
        self.steps.show(f"registered in MLflow as {self.model_uri}, with lineage tags:")
        self.steps.show(shown)

    def show_admission_and_placement(self) -> None:
        with self.steps.step(
            "Residency: admission rejects us-east-1; KubeRay pods land only on EU GPU nodes"
        ):
            rejected = _load(self.repo / "examples" / "finetunejob-lora.yaml")
            rejected["metadata"] = {"name": "runs-in-virginia", "namespace": NAMESPACE}
            rejected["spec"]["placement"]["regions"] = ["us-east-1"]
            result = self.kubectl("apply", "-f", "-", check=False, stdin=json.dumps(rejected))
            if result.returncode == 0:
                raise RuntimeError("a FineTuneJob asking for us-east-1 was admitted")
            self.steps.show("$ kubectl apply -f finetunejob-us-east-1.yaml")
            self.steps.show(result.stderr)

            job = _load(self.repo / "examples" / "finetunejob-lora.yaml")
            job["metadata"] = {"name": "support-assistant-lora", "namespace": NAMESPACE}
            job["spec"]["placement"]["regions"] = ["eu-west-par", "eu-central-fra"]
            self.cluster.apply(job)
            selector = "ray.io/node-type"
            self.steps.wait(
                lambda: len(self.pods_with_regions(selector)) >= 3,
                timeout=180,
                what="the RayCluster's head and worker pods to be bound",
            )
            placed = self.pods_with_regions(selector)
            self.steps.show(
                self.kubectl("get", "ftj", "support-assistant-lora", "-n", NAMESPACE).stdout
            )
            self.steps.show("pod → node → region")
            for pod, node, region in placed:
                self.steps.show(f"  {pod} → {node} → {region}")
            outside = [p for p in placed if p[2] not in ("eu-west-par", "eu-central-fra")]
            if outside:
                raise RuntimeError(f"pods outside the EU: {outside}")
            self.kubectl("delete", "ftj", "support-assistant-lora", "-n", NAMESPACE, "--wait=false")

    def serve_model(self) -> None:
        with self.steps.step("Serve the fine-tuned model with a ModelDeployment on EU nodes"):
            deployment = {
                "apiVersion": "sovereign-ai.eu/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "eu-dp-assistant", "namespace": NAMESPACE},
                "spec": {
                    "model": {"fineTuneJobRef": {"name": JOB}},
                    "runtime": "transformers",
                    "replicas": 2,
                    "resources": {"gpusPerReplica": 0, "cpu": "1", "memory": "2Gi"},
                    "placement": {"regions": ["eu-central-fra"]},
                },
            }
            self.cluster.apply(deployment)
            self.steps.wait(
                lambda: self.phase("modeldeployment", "eu-dp-assistant") == "Ready",
                timeout=240,
                what="the ModelDeployment to be Ready",
                progress=lambda: self.kubectl(
                    "get", "mdep", "eu-dp-assistant", "-n", NAMESPACE, "--no-headers"
                ).stdout.strip(),
            )
            self.steps.show(self.kubectl("get", "mdep", "-n", NAMESPACE).stdout)
            self.steps.show("pod → node → region")
            for pod, node, region in self.pods_with_regions(
                f"{DEPLOYMENT_NAME_LABEL}=eu-dp-assistant"
            ):
                self.steps.show(f"  {pod} → {node} → {region}")

    def query_model(self) -> None:
        with self.steps.step(
            "Run the CPU server on the same model (as its pod would) and ask it "
            "with the openai client"
        ) as log:
            model_dir = self.workdir / "serving" / "model"
            env = {**os.environ, "MLFLOW_TRACKING_URI": self.mlflow.tracking_uri}
            subprocess.run(
                [
                    self.python,
                    "-m",
                    "sovereign_training",
                    "fetch",
                    "--uri",
                    self.model_uri,
                    "--dest",
                    str(model_dir),
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            port = free_port()
            server = ManagedProcess(
                "model-server",
                [
                    self.python,
                    "-m",
                    "sovereign_training",
                    "serve",
                    "--model-dir",
                    str(model_dir),
                    "--served-model-name",
                    MODEL_NAME,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                self.workdir / "logs",
                env,
            )
            server.start()
            self.stack.callback(server.stop)
            server.wait_until(
                lambda: requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok,
                180,
                "healthy (/health)",
            )
            from openai import OpenAI

            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="local")
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
            self.steps.show("$ client.chat.completions.create(model='eu-dp-assistant', ...)")
            self.steps.show(answer)

    def summary(self) -> None:
        evidence_path = self.workdir / "evidence" / f"{NAMESPACE}-{JOB}.json"
        evidence_path.parent.mkdir(parents=True, exist_ok=True)
        evidence_path.write_text(json.dumps(self.evidence, indent=2, sort_keys=True))
        total = time.monotonic() - self.steps.started
        self.steps.say(f"\nThe demo ran end to end in {total:.0f} s. Where to look:")
        self.steps.show(f"kubeconfig:  export KUBECONFIG={self.cluster.kubeconfig}")
        self.steps.show(
            f"MLflow UI:   {self.python} -m mlflow ui --backend-store-uri "
            f"sqlite:///{self.mlflow.data_dir / 'mlflow.db'}"
        )
        self.steps.show(f"evidence:    {evidence_path}  (placement, residency, MLflow lineage)")
        self.steps.show(f"logs:        {self.steps.log_dir}")
        self.steps.say("Everything started here is now stopped (the cluster folder is kept).")


def run_demo(repo: Path, workdir: Path) -> int:
    """Run the demo in ``workdir`` (emptied first, so it can be re-run). Returns an exit code."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # The openai client logs every request at INFO; the demo prints what matters itself.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    demo = Demo(repo, workdir)
    try:
        demo.run()
    except KeyboardInterrupt:
        demo.steps.say("\ninterrupted: everything started has been stopped")
        return 130
    except Exception as error:  # the step runner already named the step and its log
        demo.steps.say(f"\nFAILED: {error}")
        return 1
    return 0

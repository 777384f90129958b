"""The custom resources that the demo and the end-to-end tests run on the real node: a LoRA
FineTuneJob small enough for two cores, and the ModelDeployment that serves its adapter.

One definition, so that what the tests prove is what the demo shows.
"""

from __future__ import annotations

from typing import Any

from ..api.v1alpha1.common import API_VERSION


def cpu_lora_job(
    name: str,
    namespace: str,
    *,
    claim: str,
    bucket: str,
    secret: str,
    region: str,
    registered_model_name: str,
    experiment_name: str,
) -> dict[str, Any]:
    """Two CPU workers fine-tune the tiny base model (on the claim: pvc://<claim>/models/tiny)
    on the sample chat data in the S3 store (s3://<bucket>/data/train.jsonl, read with the
    keys of Secret ``secret``); the adapter goes to s3://<bucket>/output/<name> and is
    registered in MLflow."""
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "baseModel": {"uri": f"pvc://{claim}/models/tiny"},
            "dataset": {
                "trainingUri": f"s3://{bucket}/data/train.jsonl",
                "format": "chat",
                "secretRef": {"name": secret},
            },
            "method": {
                "type": "lora",
                # The batch sizes are left to the trainer, which chooses them from the
                # dataset's size (8 and 4 for this one's few hundred sequences) and reports them.
                "hyperparameters": {
                    "epochs": 2,
                    "batchSize": "auto",
                    "microBatchSize": "auto",
                    "learningRate": "3e-3",
                    "maxSeqLength": 256,
                },
                "lora": {"rank": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
            },
            "resources": {"workers": 2, "gpusPerWorker": 0, "cpu": "500m", "memory": "2Gi"},
            "placement": {"regions": [region]},
            # The finished Ray cluster soon makes room on the node's two cores for serving.
            "execution": {"ttlSecondsAfterFinished": 30},
            "tracking": {
                "experimentName": experiment_name,
                "registeredModelName": registered_model_name,
            },
            "output": {"uri": f"s3://{bucket}/output/{name}"},
        },
    }


def cpu_serving(
    name: str, namespace: str, *, job: str, region: str, served_model_name: str | None = None
) -> dict[str, Any]:
    """One replica of the CPU server (transformers runtime) serving the job's model; for the
    job above, its adapter on the job's base."""
    serving = {"servedModelName": served_model_name} if served_model_name else {}
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"fineTuneJobRef": {"name": job}},
            "runtime": "transformers",
            "replicas": 1,
            "resources": {"gpusPerReplica": 0, "cpu": "1", "memory": "2Gi"},
            "placement": {"regions": [region]},
            "serving": serving,
        },
    }

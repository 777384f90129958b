"""Hostile and careless specs, drawn by hypothesis, against the real API server with the
operator running (issue 21's standing suite).

Each example is a valid FineTuneJob or ModelDeployment with up to three fields replaced by a
hostile value (empty, huge, negative, of the wrong type, a URI with a trick in it, an unknown
key). Every one is created, suspended so that no child is made. Then:
- a refusal names a field of the spec;
- an accepted one is reconciled by the operator, and never ends Failed for a reason admission
  could have seen (only what docs/api.md lists under "What admission cannot see");
- the operator is still running, and its log holds no handler failure and no traceback.

SOVAI_FUZZ_SPECS sets how many examples (default 2,000, as `make test` runs it);
docs/reliability.md records a longer run.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sovereign_operator.devcluster import LocalCluster

from .operator_process import OperatorProcess, setup_namespace, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES = int(os.environ.get("SOVAI_FUZZ_SPECS", "2000"))
BATCH = 100  # created, checked and deleted together
GROUP, VERSION = "sovereign-ai.eu", "v1alpha1"
# Late failures that admission cannot see (docs/api.md): which policy applies, and what a
# default or a reference resolves to.
LATE_CODES = {"PolicyNotFound", "PolicyNotApplicable", "NoPolicy", "AmbiguousPolicy"}

HOSTILE: list[Any] = [
    None,
    "",
    " ",
    "x" * 5000,
    "\u00fc\u00df\u2603",
    "\x00",
    "../../etc/passwd",
    "${HOME}",
    "auto",
    "s3://eu-x.s3.us-east-1.amazonaws.com/data.jsonl",
    "s3://eu-data/x.jsonl?endpoint=https://s3.us-east-1.amazonaws.com",
    "hf://",
    "models:/",
    "pvc://claim/../../x",
    "file:///etc/shadow",
    "registry.eu-west-par.example.eu.evil.com/x:1",
    -1,
    0,
    1,
    2**31,
    2**63 - 1,
    -(2**63),
    1.5,
    1e308,
    "-1",
    "0",
    "0m",
    "1e309",
    "9999999Ei",
    "1.5Gi",
    "+1",
    ".5",
    "abc",
    True,
    {},
    [],
    ["q_proj"],
    {"unexpected": "value"},
]

FTJ_PATHS = [
    "baseModel.uri",
    "baseModel.revision",
    "dataset.trainingUri",
    "dataset.validationUri",
    "dataset.format",
    "dataset.sha256",
    "method.type",
    "method.mergeAdapter",
    "method.hyperparameters.epochs",
    "method.hyperparameters.batchSize",
    "method.hyperparameters.microBatchSize",
    "method.hyperparameters.learningRate",
    "method.hyperparameters.maxSeqLength",
    "method.hyperparameters.warmupRatio",
    "method.hyperparameters.seed",
    "method.lora.rank",
    "method.lora.alpha",
    "method.lora.dropout",
    "method.lora.targetModules",
    "resources.workers",
    "resources.gpusPerWorker",
    "resources.gpuType",
    "resources.cpu",
    "resources.memory",
    "placement.regions",
    "placement.queueName",
    "placement.tolerations",
    "execution.image",
    "execution.activeDeadlineSeconds",
    "execution.backoffLimit",
    "execution.ttlSecondsAfterFinished",
    "execution.startupDeadlineSeconds",
    "output.uri",
    "suffix",
    "tracking.experimentName",
    "tracking.registeredModelName",
    "unknownField",
]
MDEP_PATHS = [
    "model.uri",
    "runtime",
    "replicas",
    "autoscaling.minReplicas",
    "autoscaling.maxReplicas",
    "resources.gpusPerReplica",
    "resources.cpu",
    "resources.memory",
    "placement.regions",
    "serving.servedModelName",
    "serving.maxModelLen",
    "serving.tensorParallelSize",
    "serving.port",
    "serving.image",
    "unknownField",
]


def base_spec(kind: str, namespace: str) -> dict[str, Any]:
    policy = {"policyRef": f"pol-{namespace}"}
    if kind == "FineTuneJob":
        return {
            "baseModel": {"uri": "hf://sovereign-ai-test/tiny-llama"},
            "dataset": {"trainingUri": "s3://eu-data/faq/train.jsonl"},
            "method": {"type": "lora", "lora": {"rank": 8}},
            "resources": {"workers": 1, "gpusPerWorker": 1, "cpu": "2", "memory": "8Gi"},
            "placement": policy,
            "suspend": True,
        }
    return {
        "model": {"uri": "models:/faq/1"},
        "runtime": "transformers",
        "resources": {"gpusPerReplica": 0, "cpu": "1", "memory": "2Gi"},
        "placement": policy,
        "suspend": True,
    }


def mutate(spec: dict[str, Any], path: str, value: Any) -> None:
    node = spec
    *parents, leaf = path.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = copy.deepcopy(value)


@st.composite
def examples(draw: st.DrawFn) -> tuple[str, list[tuple[str, Any]]]:
    kind = draw(st.sampled_from(["FineTuneJob", "ModelDeployment"]))
    paths = FTJ_PATHS if kind == "FineTuneJob" else MDEP_PATHS
    mutations = draw(
        st.lists(st.tuples(st.sampled_from(paths), st.sampled_from(HOSTILE)), max_size=3)
    )
    return kind, mutations


class Fuzzer:
    """Creates the examples in batches and checks each batch once the operator is done."""

    def __init__(self, cluster: LocalCluster, namespace: str, operator: OperatorProcess) -> None:
        self.api = client.CustomObjectsApi(
            config.new_client_from_config(config_file=str(cluster.kubeconfig))
        )
        self.namespace = namespace
        self.operator = operator
        self.pending: list[tuple[str, str, list[tuple[str, Any]]]] = []
        self.problems: list[str] = []
        self.counts = {"refused": 0, "accepted": 0}
        self.accepted: dict[str, list[tuple[str, Any]]] = {}

    def plural(self, kind: str) -> str:
        return "finetunejobs" if kind == "FineTuneJob" else "modeldeployments"

    def create(self, kind: str, mutations: list[tuple[str, Any]]) -> None:
        spec = base_spec(kind, self.namespace)
        for path, value in mutations:
            mutate(spec, path, value)
        name = f"f-{uuid.uuid4().hex[:12]}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
        try:
            self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, self.plural(kind), body
            )
        except ApiException as error:
            self.counts["refused"] += 1
            message = json.loads(error.body or "{}").get("message", "") if error.body else ""
            # 422: the schema and CEL rules; 403: the admission policies (the policy's rules).
            if error.status not in (400, 403, 422) or "spec." not in message:
                self.problems.append(
                    f"{kind} {mutations!r} refused without naming a field: "
                    f"{error.status} {message[:300]}"
                )
            return
        self.counts["accepted"] += 1
        self.accepted[name] = mutations
        self.pending.append((kind, name, mutations))
        if len(self.pending) >= BATCH:
            self.check()

    def check(self) -> None:
        """Wait until the operator has written a status on every accepted object, judge it,
        then delete the batch."""

        def phased_status(kind: str, name: str) -> dict[str, Any] | None:
            """The object's status once it has a phase; None before."""
            obj = self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, self.plural(kind), name
            )
            assert isinstance(obj, dict)  # the client reads a custom object as its JSON
            status: dict[str, Any] = obj.get("status") or {}
            return status if status.get("phase") else None

        for kind, name, mutations in self.pending:
            status = wait_for(
                partial(phased_status, kind, name),
                60,
                f"{kind} {name} ({mutations!r}) to get a phase",
                interval=0.2,
                on_timeout=self.operator.log_tail,
            )
            error = status.get("error") or {}
            if status["phase"] == "Failed" and error.get("code") not in LATE_CODES:
                self.problems.append(
                    f"{kind} {mutations!r} was admitted, then failed for a reason admission "
                    f"could see: {error}"
                )
        for plural in ("finetunejobs", "modeldeployments"):
            self.api.delete_collection_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural
            )
        self.pending.clear()


@pytest.fixture(scope="module")
def fuzzer(crds: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzer]:
    namespace = f"fuzz-{uuid.uuid4().hex[:8]}"
    crds.kubectl("create", "namespace", namespace)
    setup_namespace(
        crds,
        namespace,
        allowedModelSources=[
            {"scheme": "models", "host": "*"},
            {"scheme": "hf", "host": "sovereign-ai-test"},
        ],
    )
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    with OperatorProcess(crds, workdir, namespaces=[namespace]) as operator:
        yield Fuzzer(crds, namespace, operator)
    crds.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", check=False)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=EXAMPLES <= 2000,  # the same examples in every `make test`; longer runs roam
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(example=examples())
def test_hostile_specs_are_refused_by_field_or_run(
    fuzzer: Fuzzer, example: tuple[str, list[tuple[str, Any]]]
) -> None:
    fuzzer.create(*example)


def test_the_fuzzed_operator_kept_running_and_found_nothing(fuzzer: Fuzzer) -> None:
    """Runs after the examples (same module, in order): the last batch, then the verdict."""
    fuzzer.check()
    log = fuzzer.operator.log_text()
    assert fuzzer.operator.process is not None
    assert fuzzer.operator.process.poll() is None
    assert "Traceback" not in log, fuzzer.operator.log_tail(200)
    # A child patched again and again is a loop (the API server stores a spelling the operator
    # keeps "correcting"): once is a repair, more is not.
    patches = Counter(
        line.split("re-applying ", 1)[1].split(":", 1)[0]
        for line in log.splitlines()
        if "re-applying " in line
    )
    loops = [
        (child, count, fuzzer.accepted.get(child.rsplit("/", 1)[-1]))
        for child, count in patches.most_common(10)
        if count > 1
    ]
    assert not loops, loops
    assert sum(fuzzer.counts.values()) >= min(EXAMPLES, 2000) * 0.9, fuzzer.counts
    assert not fuzzer.problems, "\n".join(fuzzer.problems[:50])
    print(f"fuzz: {fuzzer.counts}")

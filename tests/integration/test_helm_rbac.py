"""The FineTuneJob suite's key path with the operator authenticated as the chart's ServiceAccount
(proving the chart's RBAC is sufficient), and one rule less failing it (so the rule is needed).

The tests imported from test_finetunejob run here again, unchanged, with the autouse fixture
operator_as_chart_service_account swapping the operator's kubeconfig for a token of the SA.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sovereign_operator.devcluster import LocalCluster

from .chart_identity import (
    RBAC_NAMESPACE,
    RBAC_RELEASE,
    chart_service_account,
    forbidden_calls,
    operator_as_chart_service_account,
    token_kubeconfig,
)
from .operator_process import OperatorProcess, setup_namespace
from .test_finetunejob import (
    mlflow,
    mlflow_operator,
    operator,
    test_a_success_whose_result_cannot_be_read_is_not_called_succeeded,
    test_delete_cleans_up_children_and_removes_the_finalizer,
    test_ftj_becomes_a_rayjob_whose_pods_bind_only_to_allowed_gpu_nodes,
    test_invalid_input_fails_with_a_condition_and_event_naming_the_field,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fixtures and tests imported to be collected here (pytest finds them by name in this module).
__all__ = [
    "chart_service_account",
    "mlflow",
    "mlflow_operator",
    "operator",
    "operator_as_chart_service_account",
    "test_a_success_whose_result_cannot_be_read_is_not_called_succeeded",
    "test_delete_cleans_up_children_and_removes_the_finalizer",
    "test_ftj_becomes_a_rayjob_whose_pods_bind_only_to_allowed_gpu_nodes",
    "test_invalid_input_fails_with_a_condition_and_event_naming_the_field",
]

CHART_ROLE = f"{RBAC_RELEASE}-sovereign-ai-operator"


def test_one_rule_less_fails_the_key_path(
    crds: LocalCluster, namespace: str, tmp_path: Path, chart_service_account: Path
) -> None:
    """The chart's ClusterRole without `patch finetunejobs/status`, bound to a new SA: the
    key-path test above then fails, and the log shows exactly that call refused. (The same
    test, imported above, passes with the full role.)"""
    role = json.loads(crds.kubectl("get", "clusterrole", CHART_ROLE, "-o", "json").stdout)
    rules = [r for r in role["rules"] if "finetunejobs/status" not in r["resources"]]
    assert len(rules) == len(role["rules"]) - 1
    less = f"sovai-less-{namespace}"
    crds.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": less, "namespace": RBAC_NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": less}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": less},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": less},
         "subjects": [{"kind": "ServiceAccount", "name": less, "namespace": RBAC_NAMESPACE}]},
    )  # fmt: skip
    kubeconfig = token_kubeconfig(crds, less, RBAC_NAMESPACE, tmp_path / "less.kubeconfig")
    setup_namespace(crds, namespace)
    process = OperatorProcess(
        crds, tmp_path, namespaces=[namespace], env={"KUBECONFIG": str(kubeconfig)}
    )
    try:
        with process, pytest.raises(AssertionError, match="to be Queued"):
            test_ftj_becomes_a_rayjob_whose_pods_bind_only_to_allowed_gpu_nodes(
                crds, namespace, process
            )
        assert ("patch", "finetunejobs/status") in forbidden_calls(process.log_text())
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            crds.kubectl("delete", kind, less, "--wait=false", check=False)
        crds.kubectl("delete", "sovereigntypolicy", f"pol-{namespace}", "--wait=false", check=False)

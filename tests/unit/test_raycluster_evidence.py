"""A rayCluster job's placement evidence comes from its nodes: what they report is judged."""

from __future__ import annotations

from sovereign_operator.backends.raycluster import nodes_outside

REGIONS = ("eu-west-par",)


def test_nodes_in_the_allowed_regions_pass() -> None:
    result = {"nodes": [{"node": "a", "region": "eu-west-par"}]}
    assert nodes_outside(result, REGIONS) == []


def test_a_node_elsewhere_or_silent_fails() -> None:
    result = {
        "nodes": [
            {"node": "a", "region": "eu-west-par"},
            {"node": "b", "region": "us-east-1"},
            {"node": "c", "region": "unknown"},
            {"node": "d"},
        ]
    }
    assert nodes_outside(result, REGIONS) == [
        "node b in us-east-1",
        "node c in unknown",
        "node d in unknown",
    ]


def test_a_result_without_nodes_proves_nothing() -> None:
    assert nodes_outside({"modelUri": "models:/x/1"}, REGIONS) == ["the result names no node"]
    assert nodes_outside(None, REGIONS) == []

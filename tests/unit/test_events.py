"""The Event the operator posts on a transition, as `kubectl describe` will list it."""

from __future__ import annotations

from datetime import UTC, datetime

from sovereign_operator.k8s.events import MESSAGE_LIMIT, build_event, transition_key

JOB = {
    "apiVersion": "sovereign-ai.eu/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "ft", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7"},
}


def test_the_event_names_the_object_reason_and_time() -> None:
    event = build_event(
        JOB, "Normal", "Queued", "Pending -> Queued", datetime(2026, 11, 27, tzinfo=UTC)
    )
    assert event == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "ft.", "namespace": "team-a"},
        "involvedObject": {
            "apiVersion": "sovereign-ai.eu/v1alpha1",
            "kind": "FineTuneJob",
            "name": "ft",
            "namespace": "team-a",
            "uid": "u-1",
        },
        "type": "Normal",
        "reason": "Queued",
        "message": "Pending -> Queued",
        "source": {"component": "sovereign-ai-operator"},
        "reportingComponent": "sovereign-ai-operator",
        "firstTimestamp": "2026-11-27T00:00:00Z",
        "lastTimestamp": "2026-11-27T00:00:00Z",
        "count": 1,
    }


def test_long_messages_are_cut_to_the_limit() -> None:
    event = build_event(JOB, "Warning", "Failed", "x" * 5000, datetime.now(UTC))
    assert len(event["message"]) == MESSAGE_LIMIT


def test_a_transition_posted_twice_has_one_name_and_a_later_one_another() -> None:
    """An operator killed after posting a transition's Event, before recording the phase,
    posts it again on restart: the same name, refused as AlreadyExists, not a duplicate."""
    t1, t2 = datetime(2026, 11, 27, 8, tzinfo=UTC), datetime(2026, 11, 27, 9, tzinfo=UTC)
    now = datetime.now(UTC)

    def name(key: str) -> str:
        return str(build_event(JOB, "Normal", "Queued", "m", now, key)["metadata"]["name"])

    first = name(transition_key("Suspended", "Queued", t1))
    assert first == name(transition_key("Suspended", "Queued", t1))
    assert first.startswith("ft.")
    assert first != name(transition_key("Suspended", "Queued", t2))  # resumed again later
    assert first != name(transition_key("Pending", "Queued", t1))
    other = {"kind": "FineTuneJob", "metadata": {"name": "ft", "namespace": "team-a", "uid": "u-2"}}
    key = transition_key("Suspended", "Queued", t1)
    assert build_event(other, "Normal", "Queued", "m", now, key)["metadata"]["name"] != first

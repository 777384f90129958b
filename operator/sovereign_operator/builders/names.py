"""Deterministic child names that fit Kubernetes' limits however long the owner's name is."""

from __future__ import annotations

import hashlib
import re

# KubeRay appends "-xxxxx" to a RayJob's name for its RayCluster and keeps cluster names at
# <= 53 characters so that "<cluster>-serve-svc" fits 63; it refuses RayJob names over 47.
RAYJOB_NAME_MAX = 47
HASH_LENGTH = 8
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def short_hash(text: str, length: int = HASH_LENGTH) -> str:
    """A stable hex digest prefix of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def fit_name(base: str, limit: int) -> str:
    """``base`` as a DNS-1035 label of at most ``limit`` characters.

    Kept as is when it already is one. Any other name gets a readable head (dots become dashes,
    a leading digit gets a letter, cut to fit) and a hash of the whole name: "llama.v2" and
    "llama-v2", or "7b" and "j7b", are different objects and so get different children.
    """
    if len(base) <= limit and _DNS1035.match(base):
        return base
    cleaned = base.replace(".", "-")
    if not cleaned[:1].isalpha():
        cleaned = "j" + cleaned
    head = cleaned[: limit - HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{short_hash(base)}"


def rayjob_name(ftj_name: str) -> str:
    """Name of the RayJob of a FineTuneJob (<= 47 characters, DNS-1035)."""
    return fit_name(ftj_name, RAYJOB_NAME_MAX)


def network_policy_name(ftj_name: str) -> str:
    """Name of the NetworkPolicy of a FineTuneJob's Ray pods (<= 63 characters)."""
    return f"{rayjob_name(ftj_name)}-egress"


def submission_id(uid: str) -> str:
    """Ray Job Submission id of a FineTuneJob: derived from its uid, so a retry or an operator
    restart finds the same submission instead of submitting twice."""
    return f"sovai-{uid}"

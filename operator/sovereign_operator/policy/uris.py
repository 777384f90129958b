"""Matching of URIs against UriPatterns and images against registries.

Mirrors the CEL in crdgen/admission.py: the host of a URI is the first non-empty segment
after "scheme:", cut at "@" (bucket, claim, organisation, MLflow model name, top directory).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..api.v1alpha1.sovereigntypolicy import UriPattern


def uri_scheme(uri: str) -> str:
    """The scheme: what precedes the first ':'."""
    return uri.split(":", 1)[0]


def uri_host(uri: str) -> str:
    """The host as policy patterns see it; '' when there is none."""
    rest = uri[uri.index(":") + 1 :] if ":" in uri else uri
    segments = [s for s in rest.split("/") if s]
    return segments[0].split("@")[0] if segments else ""


def host_matches(pattern: str, host: str) -> bool:
    """ "*" any, "*suffix", "prefix*", or exact."""
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    if pattern.endswith("*"):
        return host.startswith(pattern[:-1])
    return host == pattern


def uri_allowed(uri: str, patterns: Sequence[UriPattern]) -> bool:
    """Whether some pattern has the URI's scheme and matches its host."""
    host = uri_host(uri)
    return any(
        uri.startswith(f"{p.scheme.value}:") and host_matches(p.host, host) for p in patterns
    )


def image_allowed(image: str, registries: Sequence[str]) -> bool:
    """Whether the image starts with an allowed registry followed by '/'. Short names
    (implicitly docker.io) never match: images must be fully qualified."""
    return any(image.startswith(f"{registry}/") for registry in registries)


def describe(patterns: Sequence[UriPattern]) -> tuple[str, ...]:
    """Patterns as users read them: scheme://host, and "at <endpoint>" when one is named."""
    return tuple(
        f"{p.scheme.value}://{p.host}" + (f" at {p.endpoint}" if p.endpoint else "")
        for p in patterns
    )

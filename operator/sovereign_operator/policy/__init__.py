"""The operator's re-check of SovereigntyPolicies: pure functions over a spec and a policy.

The same rules as the ValidatingAdmissionPolicy in crds/admission-policies.yaml, with the same
messages, so that a user sees one wording whichever layer speaks.
"""

from .residency import (
    check_finetunejob,
    check_modeldeployment,
    effective_regions,
    selects_namespace,
)
from .uris import image_allowed, uri_allowed, uri_host
from .violations import Violation

__all__ = [
    "Violation",
    "check_finetunejob",
    "check_modeldeployment",
    "effective_regions",
    "image_allowed",
    "selects_namespace",
    "uri_allowed",
    "uri_host",
]

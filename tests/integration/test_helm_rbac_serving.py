"""The ModelDeployment suite's key path with the operator authenticated as the chart's
ServiceAccount: the tests imported from test_modeldeployment run here again, unchanged."""

from __future__ import annotations

import pytest

from .chart_identity import chart_service_account, operator_as_chart_service_account
from .test_modeldeployment import (
    operator,
    test_unsucceeded_finetunejob_blocks_serving_then_ready_on_eu_nodes_driving_finetunejob_status,
    test_update_suspend_resume_and_delete,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fixtures and tests imported to be collected here (pytest finds them by name in this module).
__all__ = [
    "chart_service_account",
    "operator",
    "operator_as_chart_service_account",
    "test_unsucceeded_finetunejob_blocks_serving_then_ready_on_eu_nodes_driving_finetunejob_status",
    "test_update_suspend_resume_and_delete",
]

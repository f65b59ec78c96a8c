"""Schemathesis against the OpenAPI spec: generated valid (positive) and invalid (negative)
requests to every operation, authenticated as an admin, on SQLite and PostgreSQL. No response
may be a 5xx, and responses must match the documented status codes, content types and schemas.

(schemathesis' pytest plugin, `from_fixture`, does not work with pytest 9, so the operations'
Hypothesis strategies are driven directly; the checks are schemathesis' own.)
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis.errors import Unsatisfiable
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from usdcop_platform.api.app import create_app
from usdcop_platform_tests.api.conftest import seed_proposal

# The approvals sidecar's operations (the inference router, mounted in the same app, has its own tests).
APPROVALS_PATHS = ("/api/experiments", "/api/models", "/api/audit", "/api/keys", "/health")
# Examples per operation and generation mode: covers these small schemas, fast in CI.
EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> bool:
    """Run the checks on generated cases; False when the mode cannot generate any (no inputs)."""
    checks = CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error, content_type_conformance]

    @given(case=operation.as_strategy(generation_mode=mode))
    @hsettings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        return False  # an operation without parameters or body has no invalid input
    return True


@pytest.mark.slow
def test_no_5xx_and_responses_match_the_spec(settings, store, lake, calendar, keys) -> None:
    for i in range(3):
        seed_proposal(store, lake, calendar, seed=i, n_sessions=2, with_series=i == 0)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, store))
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if op.path.startswith(APPROVALS_PATHS)]
    labels = {op.label for op in operations}
    assert {"POST /api/experiments/{proposal_id}/approve", "POST /api/experiments/{proposal_id}/backtest",
            "GET /api/experiments/{proposal_id}", "GET /health"} <= labels
    negative = set()
    for op in operations:
        assert _fuzz(op, GenerationMode.POSITIVE, keys.h("admin"))
        if _fuzz(op, GenerationMode.NEGATIVE, keys.h("admin")):
            negative.add(op.label)
    assert {"POST /api/experiments/{proposal_id}/approve", "POST /api/experiments/{proposal_id}/backtest",
            "GET /api/experiments"} <= negative

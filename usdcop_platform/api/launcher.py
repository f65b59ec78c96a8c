"""REQUEST_MORE_TESTS: launch the backtest of a new period as a Dagster run.

When `Settings.dagster_webserver_url` (USDCOP_DAGSTER_URL) is set, the request is submitted to
the Dagster webserver through `dagster_graphql.DagsterGraphQLClient`; the run carries the
request in its tags, so the run, the request row and the audit row point at each other, and
the evaluation assets complete the request from the tag (app/backtest_requests.py).
Without a webserver URL the request stays PENDING in `backtest_requests` until an operator
runs `usdcop backtest --request-id N`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from usdcop_platform.app.backtest_requests import BACKTEST_REQUEST_TAG

log = logging.getLogger(__name__)

# The evaluation domain's job (defs/evaluation): backtest asset -> promotion proposal asset, on
# the experiment partition. Its ops are named after the asset keys.
BACKTEST_JOB_NAME = "evaluate_experiment_job"
BACKTEST_OP = "evaluation__backtest"
PROPOSAL_OP = "evaluation__promotion_proposal"
# Seconds to wait for the webserver's GraphQL answer before leaving the request PENDING.
GRAPHQL_TIMEOUT_S = 30
TAG_PREFIX = "usdcop/"


@dataclass(frozen=True)
class LaunchResult:
    launched: bool
    run_id: str | None
    error: str | None


def run_tags(request: Any, experiment: str) -> dict[str, str]:
    """Tags that identify the request on the run; `dagster/partition` selects the experiment."""
    return {
        BACKTEST_REQUEST_TAG: str(request["id"]),
        f"{TAG_PREFIX}model_id": str(request["model_id"]),
        f"{TAG_PREFIX}proposal_id": str(request.get("proposal_id") or ""),
        f"{TAG_PREFIX}start_date": str(request["start_date"]),
        f"{TAG_PREFIX}end_date": str(request["end_date"]),
        f"{TAG_PREFIX}requested_by": str(request["requested_by"]),
        "dagster/partition": experiment,
    }


def run_config(request: Any) -> dict[str, Any]:
    """Run config of the job: backtest this model over the requested sessions, then re-evaluate
    its proposal (BacktestRunConfig / ProposalRunConfig of defs/evaluation/assets.py)."""
    model_id = str(request["model_id"])
    return {
        "ops": {
            BACKTEST_OP: {
                "config": {"model_id": model_id, "start": str(request["start_date"]), "end": str(request["end_date"])}
            },
            PROPOSAL_OP: {"config": {"model_id": model_id}},
        }
    }


def graphql_client(url: str) -> Any:
    """A DagsterGraphQLClient for an http(s)://host[:port][/prefix] webserver URL."""
    from dagster_graphql import DagsterGraphQLClient

    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        raise ValueError(f"USDCOP_DAGSTER_URL {url!r} has no host")
    return DagsterGraphQLClient(
        parts.hostname,
        port_number=parts.port,
        use_https=parts.scheme == "https",
        timeout=GRAPHQL_TIMEOUT_S,
        path_prefix=parts.path.rstrip("/"),
    )


def launch_backtest(url: str | None, request: Any, experiment: str, *, client: Any | None = None) -> LaunchResult:
    """Submit the backtest run; never raises (a failure leaves the request PENDING with the error)."""
    if not url and client is None:
        return LaunchResult(False, None, None)
    try:
        c = client or graphql_client(url or "")
        run_id = c.submit_job_execution(
            BACKTEST_JOB_NAME, run_config=run_config(request), tags=run_tags(request, experiment)
        )
        return LaunchResult(True, str(run_id), None)
    except Exception as exc:  # noqa: BLE001 - any webserver/GraphQL failure is reported, not raised
        log.warning("could not launch the backtest run for request %s: %s", request["id"], exc)
        return LaunchResult(False, None, f"{type(exc).__name__}: {exc}")

"""A reviewer's backtest request (REQUEST_MORE_TESTS), as the evaluation run serves it.

The request becomes a run of `evaluate_experiment_job` tagged with BACKTEST_REQUEST_TAG: the
API's launcher submits it to the Dagster webserver, `usdcop backtest --request-id N` runs it
in process. In such a run:

- evaluation/backtest backtests the request's model over the request's period and stores it
  under its own lake partition (adapters.backtests.backtest_partition), never over the backtest
  the proposal was made from;
- evaluation/promotion_proposal does not redo the first vote: it calls `complete_request`, the
  one way a request completes (the store attaches the result to the proposal, which goes back
  from MORE_TESTS_REQUESTED to PENDING_APPROVAL, marks the request DONE and audits it);
- a failure of either step marks the request FAILED with the error (`failure_recorded`); the
  proposal stays MORE_TESTS_REQUESTED until a re-run succeeds.

No Dagster import here: the API's launcher imports the tag.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from usdcop_platform.adapters import backtests as bt_store

BACKTEST_REQUEST_TAG = "usdcop/backtest_request_id"
# The reviewer recorded on the audit row of a completed request: the evaluation run itself.
COMPLETED_BY = "system"
# Benchmark metrics kept beside the candidate's for an additional backtest.
BENCHMARK_KEYS = ("sharpe", "total_return", "max_drawdown")


class BacktestRequestError(RuntimeError):
    """The run's backtest request cannot be served as asked; the message says why."""


def request_id_of_run(tags: Mapping[str, str]) -> int | None:
    """The backtest request a run serves (its BACKTEST_REQUEST_TAG), or None for an ordinary run."""
    raw = tags.get(BACKTEST_REQUEST_TAG)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BacktestRequestError(f"run tag {BACKTEST_REQUEST_TAG}={raw!r} is not a backtest request id") from None


def request_of_run(store: Any, tags: Mapping[str, str]) -> Any | None:
    """The request row of a tagged run (None for an ordinary run)."""
    request_id = request_id_of_run(tags)
    if request_id is None:
        return None
    request = store.backtest_requests.get(request_id)
    if request is None:
        raise BacktestRequestError(
            f"backtest request {request_id} (run tag {BACKTEST_REQUEST_TAG}) does not exist in {store.masked_url}"
        )
    return request


def request_period(
    request: Any, model_id: str | None = None, start: str | None = None, end: str | None = None
) -> tuple[str, str, str]:
    """(model_id, start, end) of the request; the run config may repeat them but not differ."""
    wanted = (str(request["model_id"]), request["start_date"].isoformat(), request["end_date"].isoformat())
    for name, given, want in zip(("model_id", "start", "end"), (model_id, start, end), wanted):
        if given is None:
            continue
        same = given == want if name == "model_id" else _iso(given) == want
        if not same:
            raise BacktestRequestError(
                f"the run config sets {name}={given!r} but backtest request {request['id']} asks for {want!r}"
            )
    return wanted


def _iso(value: str) -> str | None:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        return None


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def failure_recorded(store: Any, request: Any | None, run_id: str | None) -> Iterator[None]:
    """Mark the request FAILED with the error when the body raises (then re-raise)."""
    try:
        yield
    except Exception as exc:
        if request is not None:
            store.backtest_requests.fail(request["id"], error_text(exc), dagster_run_id=run_id)
        raise


def additional_backtest_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the proposal keeps of an additional backtest: the candidate's metrics, the facts of
    the period (bars, sessions covered, out of sample or not), and the benchmarks' headline."""
    benchmarks = report.get("benchmarks") or {}
    return {
        **(report.get("metrics") or {}),
        "n_bars": report.get("n_bars"),
        "test_start": report.get("test_start"),
        "test_end": report.get("test_end"),
        "out_of_sample": report.get("out_of_sample"),
        "insufficient": report.get("insufficient"),
        "backtest_hash": report.get("backtest_hash"),
        "baseline_model_id": report.get("baseline_model_id"),
        "benchmarks": {
            name: {k: m.get(k) for k in BENCHMARK_KEYS}
            for name, m in benchmarks.items()
            if isinstance(m, Mapping)
        },
    }


def complete_request(store: Any, request_id: int, report: Mapping[str, Any], *, run_id: str | None,
                     review_days: int) -> Any:
    """Complete a request with the report of its backtest (see the module docstring).

    The reopened proposal gets a fresh review window of `review_days`. Idempotent: completing
    the same request again replaces its entry on the proposal (no duplicate, no second audit
    row). Returns the store's {request, proposal, reopened, audit_id}."""
    return store.backtest_requests.complete(
        request_id,
        metrics=additional_backtest_metrics(report),
        series_partition=str(report["lake_partition"]),
        dagster_run_id=run_id,
        expires_at=datetime.now(timezone.utc) + timedelta(days=review_days),
        completed_by=COMPLETED_BY,
    )


@dataclass(frozen=True)
class Completion:
    """A served request: its period, the lake partition and report of its backtest, and the store's
    {request, proposal, reopened, audit_id}."""

    model_id: str
    start: str
    end: str
    partition: str
    report: Mapping[str, Any]
    outcome: Any


def complete_from_lake(store: Any, lake: Any, experiment: str, request: Any, *, run_id: str | None,
                       review_days: int) -> Completion:
    """Attach the requested period's backtest (written by evaluation/backtest in the same run) to the
    proposal: no new first vote."""
    model_id, start, end = request_period(request)
    partition = bt_store.backtest_partition(model_id, start, end)
    report = bt_store.load_backtest_report(lake, experiment, partition)
    if report is None:
        raise BacktestRequestError(
            f"no backtest of request {request['id']} ({model_id}, {start}..{end}) in the lake: "
            "materialize evaluation/backtest in the same run"
        )
    outcome = complete_request(store, request["id"], report, run_id=run_id, review_days=review_days)
    return Completion(model_id, start, end, partition, report, outcome)


__all__ = [
    "BACKTEST_REQUEST_TAG",
    "BacktestRequestError",
    "Completion",
    "additional_backtest_metrics",
    "complete_from_lake",
    "complete_request",
    "error_text",
    "failure_recorded",
    "request_id_of_run",
    "request_of_run",
    "request_period",
]

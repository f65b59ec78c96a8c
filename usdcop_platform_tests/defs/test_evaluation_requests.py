"""REQUEST_MORE_TESTS through the evaluation run: a run tagged with a backtest request backtests
the requested period under its own lake partition and attaches it to the proposal, which goes
back to PENDING_APPROVAL; a failing run marks the request FAILED. Real store, lake, ONNX models.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from usdcop_platform.adapters import backtests as bt_store
from usdcop_platform.api.launcher import run_config as launcher_run_config
from usdcop_platform.api.launcher import run_tags as launcher_run_tags
from usdcop_platform.defs.evaluation.assets import backtest, promotion_proposal
from usdcop_platform.app.backtest_requests import BACKTEST_REQUEST_TAG
from usdcop_platform_tests.defs.test_evaluation import (  # noqa: F401 - `world` and `cli_env` are fixtures
    EXPERIMENT,
    cli_env,
    follow_signal_layers,
    metadata,
    world,
)

START, END = "2024-06-03", "2024-06-14"  # two weeks inside the test split (two of its Mondays are holidays)
PARTITION = f"cand@{START}_{END}"


def period_bars(world) -> int:
    calendar = world["platform"].calendar
    return len(calendar.sessions(date.fromisoformat(START), date.fromisoformat(END))) * calendar.bars_per_session


def materialize(world, assets=(backtest, promotion_proposal), run_config=None, raise_on_error=True, tags=None):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("experiments", [EXPERIMENT])
    return dg.materialize_to_memory(
        list(assets), partition_key=EXPERIMENT, resources={"platform": world["platform"], "mlflow": world["mlflow"]},
        instance=instance,
        run_config=run_config, raise_on_error=raise_on_error, tags=tags,
    )


def _primary(world) -> dict:
    lake = world["lake"]
    return {
        "series": bt_store.load_backtest_series(lake, EXPERIMENT, "cand"),
        "report": bt_store.load_backtest_report(lake, EXPERIMENT, "cand"),
        "proposal": world["store"].proposals.by_model("cand"),
    }


def _request(world, start: str = START, end: str = END):
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    materialize(world)
    store = world["store"]
    proposal = store.proposals.by_model("cand")
    decision = store.approvals.decide(proposal["proposal_id"], "REQUEST_MORE_TESTS", reviewer="bo",
                                      notes="and early June?", backtest_start=start, backtest_end=end)
    return store.backtest_requests.get(decision["backtest_request_id"])


def _run_request(world, request, raise_on_error: bool = True, run_config=None):
    """The run the API's launcher submits: the job's run config and tags for this request."""
    tags = launcher_run_tags(request, EXPERIMENT)
    return materialize(
        world, run_config=run_config or launcher_run_config(request), raise_on_error=raise_on_error,
        tags={k: v for k, v in tags.items() if k != "dagster/partition"},
    )


def test_a_request_run_attaches_the_period_and_reopens_the_proposal(world) -> None:
    request = _request(world)
    before = _primary(world)
    assert before["proposal"]["status"] == "MORE_TESTS_REQUESTED"

    result = _run_request(world, request)
    bt = metadata(result, "evaluation__backtest")
    assert bt["lake_partition"] == PARTITION and bt["backtest_request_id"] == request["id"]
    n_bars = period_bars(world)
    assert bt["n_bars"] == n_bars and n_bars < before["series"].height
    prop_meta = metadata(result, "evaluation__promotion_proposal")
    assert prop_meta["status"] == "PENDING_APPROVAL" and prop_meta["reopened"] is True

    store, lake = world["store"], world["lake"]
    after = _primary(world)
    # The test-split backtest and the first vote made from it are untouched.
    assert after["series"].equals(before["series"])
    assert after["report"] == before["report"]
    row = after["proposal"]
    for key in ("recommendation", "confidence", "criteria", "metrics", "backtest_hash", "series_path", "lineage",
                "test_start", "test_end"):
        assert row[key] == before["proposal"][key], key
    # The extra period: its own partition, attached to the proposal, which awaits a decision again.
    assert row["status"] == "PENDING_APPROVAL" and row["decided_by"] is None
    assert bt_store.load_backtest_series(lake, EXPERIMENT, PARTITION).height == n_bars
    (extra,) = row["additional_backtests"]
    report = bt_store.load_backtest_report(lake, EXPERIMENT, PARTITION)
    assert (extra["request_id"], extra["start"], extra["end"], extra["series_partition"]) == (
        request["id"], START, END, PARTITION)
    assert extra["metrics"]["sharpe"] == pytest.approx(report["metrics"]["sharpe"])
    assert bt["sharpe"] == pytest.approx(report["metrics"]["sharpe"], rel=1e-3)  # metadata: 4 significant digits
    assert extra["metrics"]["n_bars"] == n_bars and extra["metrics"]["out_of_sample"] is True
    assert extra["metrics"]["benchmarks"]["buy_and_hold"]["total_return"] is not None
    assert extra["dagster_run_id"] == result.run_id

    done = store.backtest_requests.get(request["id"])
    assert (done["status"], done["dagster_run_id"], done["error"]) == ("DONE", result.run_id, None)
    completed = store.audit.list(proposal_id=row["proposal_id"], action="MORE_TESTS_COMPLETED")
    assert len(completed) == 1 and completed[0]["details"]["backtest_request_id"] == request["id"]

    # A later first-vote run (no request) is still made from the test split, not the extra period.
    materialize(world, assets=(promotion_proposal,))
    again = store.proposals.by_model("cand")
    assert again["test_start"] == before["proposal"]["test_start"] and len(again["additional_backtests"]) == 1

    # The reviewer decides again.
    assert store.approvals.decide(row["proposal_id"], "APPROVE", reviewer="ana").status == "APPROVED"


def test_rerunning_the_same_request_does_not_duplicate(world) -> None:
    request = _request(world)
    _run_request(world, request)
    second = _run_request(world, request)
    store = world["store"]
    row = store.proposals.by_model("cand")
    assert [e["request_id"] for e in row["additional_backtests"]] == [request["id"]]
    assert row["additional_backtests"][0]["dagster_run_id"] == second.run_id
    assert len(store.audit.list(proposal_id=row["proposal_id"], action="MORE_TESTS_COMPLETED")) == 1
    assert store.backtest_requests.get(request["id"])["status"] == "DONE"
    assert bt_store.model_partitions(world["lake"], EXPERIMENT, "cand") == ["cand", PARTITION]


def test_a_failing_request_run_marks_the_request_failed(world) -> None:
    request = _request(world)
    before = _primary(world)
    rec = world["store"].models.get("cand")
    Path(rec["onnx_path"]).unlink()

    result = _run_request(world, request, raise_on_error=False)
    assert not result.success
    store = world["store"]
    failed = store.backtest_requests.get(request["id"])
    assert failed["status"] == "FAILED" and failed["dagster_run_id"] == result.run_id
    assert failed["error"].startswith("EvaluationError: refusing to backtest the candidate model")
    row = store.proposals.by_model("cand")
    assert row["status"] == "MORE_TESTS_REQUESTED" and row["additional_backtests"] == []
    assert [a["action"] for a in store.audit.list(proposal_id=row["proposal_id"])] == ["REQUEST_MORE_TESTS"]
    assert _primary(world)["series"].equals(before["series"])
    assert not world["lake"].exists(bt_store.reports_dataset(EXPERIMENT), PARTITION)


def test_a_run_config_that_contradicts_the_request_fails_it(world) -> None:
    request = _request(world)
    cfg = launcher_run_config(request)
    cfg["ops"]["evaluation__backtest"]["config"]["end"] = "2024-06-28"
    result = _run_request(world, request, raise_on_error=False, run_config=cfg)
    assert not result.success
    failed = world["store"].backtest_requests.get(request["id"])
    assert failed["status"] == "FAILED" and "asks for '2024-06-14'" in failed["error"]


def test_an_explicit_period_without_a_request_never_overwrites_the_test_split(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    materialize(world)
    before = _primary(world)
    materialize(world, run_config={"ops": {"evaluation__backtest": {"config": {"start": START, "end": END}}}})
    after = _primary(world)
    assert after["series"].equals(before["series"]) and after["report"] == before["report"]
    # The explicit period is a diagnostic in its own partition: the first vote stays on the test split.
    assert world["lake"].exists(bt_store.reports_dataset(EXPERIMENT), PARTITION)
    assert after["proposal"]["test_start"] == before["proposal"]["test_start"]
    assert after["proposal"]["backtest_hash"] == before["proposal"]["backtest_hash"]
    assert after["proposal"]["lineage"]["backtest_partition"] != PARTITION


def test_an_unknown_request_tag_is_a_clear_error(world) -> None:
    world["register"]("cand", follow_signal_layers(world["contract"].names))
    with pytest.raises(Exception, match="backtest request 999 .* does not exist"):
        materialize(world, tags={BACKTEST_REQUEST_TAG: "999"})


# ---- the CLI: usdcop backtest --request-id N (no Dagster webserver) -------------------------------
def test_cli_runs_a_pending_request(cli_env) -> None:
    from typer.testing import CliRunner

    from usdcop_platform.cli import app

    request = _request(cli_env)
    out = CliRunner().invoke(app, ["backtest", "--request-id", str(request["id"])])
    assert out.exit_code == 0, out.output
    assert "DONE" in out.output and PARTITION in out.output and "PENDING_APPROVAL" in out.output
    store = cli_env["store"]
    done = store.backtest_requests.get(request["id"])
    assert done["status"] == "DONE" and done["dagster_run_id"]
    row = store.proposals.by_model("cand")
    assert row["status"] == "PENDING_APPROVAL"
    assert [e["request_id"] for e in row["additional_backtests"]] == [request["id"]]


def test_run_backtest_request_records_a_failure_before_the_run(cli_env) -> None:
    from usdcop_platform.commands.evaluation import run_backtest_request
    from usdcop_platform.contracts.base import ConfigError

    request = _request(cli_env)
    (Path(cli_env["platform"].config_dir) / "experiments" / "smoke.yaml").unlink()
    with pytest.raises(ConfigError):
        run_backtest_request(request["id"])
    failed = cli_env["store"].backtest_requests.get(request["id"])
    assert failed["status"] == "FAILED" and failed["error"].startswith("ConfigError")
    assert cli_env["store"].proposals.by_model("cand")["status"] == "MORE_TESTS_REQUESTED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--request-id", "999"], "backtest request 999 does not exist"),
        (["--request-id", "1", "--experiment", "smoke"], "give it alone"),
        ([], "give --experiment NAME (or --request-id N)"),
    ],
)
def test_cli_request_id_bad_arguments_are_one_clear_line(cli_env, args, message) -> None:
    from typer.testing import CliRunner

    from usdcop_platform.cli import app

    out = CliRunner().invoke(app, ["backtest", *args])
    assert out.exit_code == 1
    assert message in out.output and "Traceback" not in out.output

"""monitoring/realized_performance and monitoring/shadow_ab_report on a real store and lake:
realized PnL from signals + the bars that followed, degradation vs the backtest, rollback proposal
(or automatic rollback), the WARN check, and the paired A/B test."""

from __future__ import annotations

from datetime import date

import dagster as dg
import numpy as np
import polars as pl
import pytest

from usdcop_platform.core.actions import BUY, HOLD, SELL
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.defs.monitoring.assets import (
    MonitoringRunConfig,
    realized_performance,
    shadow_ab_report,
)
from usdcop_platform.defs.monitoring.checks import PERFORMANCE_CHECK, realized_performance_within_expectation
from usdcop_platform.app.lifecycle import ROLLBACK_PROPOSED
from usdcop_platform_tests.defs.monitoring_support import (
    add_signals,
    at,
    config_copy,
    make_world,
    register_model,
    sessions_from,
    write_bars,
)
from usdcop_platform_tests.webhook_receiver import webhook_receiver

FIRST = date(2024, 3, 4)
COST = 75e-4  # config/experiments/smoke.yaml backtest.cost_bps


def _seed(world, n_sessions: int = 6, seed: int = 0) -> list[date]:
    """Up-trending bars; production always SELLs (loses), the challenger always BUYs (shadow)."""
    rng = np.random.default_rng(seed)
    sessions = sessions_from(world, FIRST, n_sessions)
    register_model(world, "m-old", production=True)
    register_model(world, "m-prod", production=True, sharpe=2.0)  # archives m-old (the rollback target)
    register_model(world, "m-chal")
    for d in sessions:
        closes = list(4000.0 * np.exp(np.cumsum(rng.normal(1e-4, 2e-4, 60))))
        write_bars(world, d, closes)
        # a signal every 5 bars: positions are held until the next signal
        add_signals(world, d, "m-prod", "production", [SELL] * 12, every=5)
        add_signals(world, d, "m-chal", "shadow", [BUY] * 11 + [HOLD], every=5)
    return sessions


def _run(world, as_of, webhook_url=None):
    cfg = MonitoringRunConfig(as_of=as_of.isoformat())
    return dg.materialize(
        [realized_performance, shadow_ab_report, realized_performance_within_expectation],
        resources=world.resources(webhook_url),
        run_config=dg.RunConfig(ops={"monitoring__realized_performance": cfg, "monitoring__shadow_ab_report": cfg}),
        raise_on_error=False,
    )


def _meta(result, key):
    for e in result.get_asset_materialization_events():
        m = e.event_specific_data.materialization
        if m.asset_key.to_user_string() == key:
            return {k: v.value for k, v in m.metadata.items()}
    return None


def _check(result):
    (ev,) = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return ev


def test_degradation_files_one_rollback_proposal_and_warns(tmp_path, db_url) -> None:
    world = make_world(tmp_path, db_url)
    sessions = _seed(world)
    as_of = at(world, sessions[-1], 13, 30)
    with webhook_receiver() as rx:
        result = _run(world, as_of, rx.url)
        assert result.success
        meta = _meta(result, "monitoring/realized_performance")
        assert meta["status"] == "ROLLBACK" and meta["action"] == "rollback_proposed"
        assert meta["production_model_id"] == "m-prod" and meta["expected_sharpe"] == 2.0
        assert meta["sessions_with_signals"] == 6 and meta["signals"] == 6 * 12 * 2
        check = _check(result)
        assert check.check_name == PERFORMANCE_CHECK and not check.passed
        assert check.severity == dg.AssetCheckSeverity.WARN
        kinds = [a["kind"] for a in world.store.alerts.list()]
        assert "realized_degradation" in kinds and "rollback_proposal" in kinds
        assert any("rollback proposed for production model m-prod (would restore m-old)" in t for t in rx.texts())

        (proposal,) = world.store.audit.list(action=ROLLBACK_PROPOSED)
        assert proposal["model_id"] == "m-prod" and proposal["details"]["target_model_id"] == "m-old"
        assert world.store.models.production()["model_id"] == "m-prod"  # a proposal changes nothing by itself

        again = _run(world, as_of, rx.url)
        assert _meta(again, "monitoring/realized_performance")["action"] == "already_proposed"
        assert len(world.store.audit.list(action=ROLLBACK_PROPOSED)) == 1
        assert len(world.store.alerts.list(kind="rollback_proposal")) == 1  # status unchanged: no repeat alert

    # realized PnL by hand for the first session: short all session, entry + closing cost
    bars = world.lake.read("raw/usdcop_m5_ohlcv", sessions[0].isoformat())["close"].to_numpy()
    expected = -np.sum(bars[1:] / bars[:-1] - 1) - 2 * COST
    per_session = world.lake.read(h.REALIZED_SESSIONS_DATASET, sessions[0].isoformat())
    prod = per_session.filter(pl.col("model_id") == "m-prod").row(0, named=True)
    assert prod["pnl"] == pytest.approx(expected, abs=1e-12) and prod["role"] == "production"
    assert world.lake.read(h.REALIZED_SIGNALS_DATASET, sessions[0].isoformat()).height == 24
    hist = h.read_recent(world.lake, h.PERFORMANCE_HISTORY_DATASET, sessions=1)
    assert hist["status"].to_list() == ["ROLLBACK"]  # the re-run at the same instant replaced its row


def test_shadow_ab_report_states_p_value_and_needed_sample(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    sessions = _seed(world)
    result = _run(world, at(world, sessions[-1], 13, 30))
    meta = _meta(result, "monitoring/shadow_ab_report")
    assert meta["method"] == "diebold_mariano" and meta["challengers"] == 1
    assert "m-chal" in meta["report"]
    report = world.lake.read(h.AB_REPORT_DATASET, sessions[-1].isoformat()).row(0, named=True)
    assert report["challenger_model_id"] == "m-chal" and report["sessions"] == 6
    assert report["significant"] and report["p_value"] < 0.05 and report["mean_diff"] > 0
    assert report["needed_sessions"] >= 2 and "outperforms" in report["verdict"]


def test_automatic_rollback_is_audited(tmp_path, sqlite_url) -> None:
    config = config_copy(tmp_path, **{"monitoring.performance.rollback_automatic": True})
    world = make_world(tmp_path, sqlite_url, config)
    sessions = _seed(world)
    result = _run(world, at(world, sessions[-1], 13, 30))
    assert _meta(result, "monitoring/realized_performance")["action"] == "rolled_back_to:m-old"
    assert world.store.models.production()["model_id"] == "m-old"
    (audit,) = world.store.audit.list(action="AUTO_ROLLBACK")
    assert audit["reviewer"] == "system:monitoring" and audit["previous_production_model_id"] == "m-prod"
    assert "automatic rollback" in audit["notes"]
    (alert,) = world.store.alerts.list(kind="rollback")
    assert alert["severity"] == "CRITICAL" and "m-prod -> m-old" in alert["message"]


def test_automatic_rollback_without_previous_model(tmp_path, sqlite_url) -> None:
    config = config_copy(tmp_path, **{"monitoring.performance.rollback_automatic": True})
    world = make_world(tmp_path, sqlite_url, config)
    rng = np.random.default_rng(1)
    register_model(world, "m-only", production=True, sharpe=2.0)
    for d in sessions_from(world, FIRST, 6):
        write_bars(world, d, list(4000.0 * np.exp(np.cumsum(rng.normal(1e-4, 2e-4, 60)))))
        add_signals(world, d, "m-only", "production", [SELL] * 12, every=5)
    result = _run(world, at(world, date(2024, 3, 11), 13, 30))
    assert result.success
    assert _meta(result, "monitoring/realized_performance")["action"] == "rollback_impossible"
    assert world.store.models.production()["model_id"] == "m-only"


def test_too_few_sessions_is_no_verdict(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    sessions = _seed(world, n_sessions=3)
    result = _run(world, at(world, sessions[-1], 13, 30))
    assert _meta(result, "monitoring/realized_performance")["status"] == "INSUFFICIENT_DATA"
    assert _check(result).passed
    ab = world.lake.read(h.AB_REPORT_DATASET, sessions[-1].isoformat()).row(0, named=True)
    assert ab["sessions"] == 3 and ab["p_value"] is not None  # 3 >= ab_test.min_sessions


def test_midsession_counts_only_bars_seen_so_far(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    sessions = _seed(world, n_sessions=2)
    result = _run(world, at(world, sessions[-1], 9, 0))  # bars 08:00..08:55 of the last session have closed
    meta = _meta(result, "monitoring/realized_performance")
    assert meta["signals"] == 12 * 2 + 3 * 2  # signals at 08:00, 08:25, 08:50 of the last session
    signals = world.lake.read(h.REALIZED_SIGNALS_DATASET, sessions[-1].isoformat())
    # the 08:50 signal has seen the 08:50 -> 08:55 return (the 08:55 bar closed at 09:00)
    assert signals.filter(pl.col("model_id") == "m-prod")["settled"].to_list() == [True, True, True]


def test_no_signals_is_skipped(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    result = _run(world, at(world, FIRST, 13, 30))
    assert result.success and _meta(result, "monitoring/realized_performance") is None
    obs = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    assert "no live signals" in obs[0].event_specific_data.asset_observation.metadata["reason"].value

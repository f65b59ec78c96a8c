"""The backtest's live rule equals a replay of the live path over the same bars (issue #17.2).

Two sessions go through the real live cycle (lake, SQL store, ONNX model, core/risk.py), with
tight risk limits so that every kind of check fires. The backtest side gets only what a backtest
has: the batch features of the same bars, the model loaded as evaluation loads it, the limits.
core.live_rule.run_live_rule must give the live path's signals (action, position recommendation,
failing check) and its risk state after every bar (position, size, equity, daily PnL, streak,
breaker) to 1e-9, and the backtest PnL of those positions is the PnL of the live positions."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from usdcop_platform.adapters.store import clear_store_cache
from usdcop_platform.bench import live_fixtures as fx
from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION
from usdcop_platform.core.features import compute_features, feature_matrix
from usdcop_platform.core.inference import InferenceEngine
from usdcop_platform.core.live_rule import live_rule_equity, run_live_rule
from usdcop_platform.core.risk import RiskState
from usdcop_platform_tests.defs.live_support import LIVE_SESSION, make_world

NEXT_SESSION = date(2024, 3, 6)

STATE_FIELDS = ("position", "position_size", "entry_price", "equity", "peak_equity", "daily_pnl", "trades_today",
                "consecutive_losses", "total_trades", "breaker_active", "breaker_reason", "cooldown_until")


@pytest.fixture
def world(tmp_path, db_url):
    w = make_world(tmp_path, db_url, production=False)
    yield w
    clear_store_cache()


# Tight limits, so that within two sessions the checks fire: (confidence threshold, losing-streak
# cooldown, trade cap) and (the daily-loss breaker, cleared by the next day's roll).
LIMITS = {
    "threshold_cooldown_cap": ({"min_confidence": 0.97, "max_daily_loss_pct": 0.2, "max_consecutive_losses": 2,
                                "cooldown_minutes": 10, "max_trades_per_day": 8},
                               {"confidence", "consecutive_losses", "max_trades"}),
    "daily_loss_breaker": ({"max_daily_loss_pct": 0.04, "max_consecutive_losses": 3, "cooldown_minutes": 10,
                            "max_trades_per_day": 8}, {"circuit_breaker"}),
}


@pytest.mark.parametrize("case", sorted(LIMITS))
def test_backtest_live_rule_equals_the_live_replay(world, case):
    # A confident model, so that approvals and rejections both occur.
    model = fx.make_model(world.root / "models", world.cfg, world.train, seed=3, scale=6.0)
    fx.register(world.store, model, stage="production")
    update, expected_checks = LIMITS[case]
    limits = world.cfg.mlops.risk.model_copy(update=update)
    cycle = world.cycle()
    cycle.limits = limits
    days = (LIVE_SESSION, NEXT_SESSION)  # two sessions: the day roll resets the daily counters and breaker
    bars = [b for d in days for b in world.session_bars(d)]
    for b in bars:
        cycle.process(b)
    signals = sorted((r for d in days for r in world.store.signals.list(session_date=d)), key=lambda r: r["bar_time"])
    assert len(signals) == len(bars) == 120
    after = [RiskState.from_dict(world.store.journal.load("live", b.time)["state_after"]) for b in bars]

    # The backtest side: batch features of the lake's bars, the model as evaluation loads it.
    lake_bars = world.lake.read_many(BARS_DATASET, world.lake.partitions(BARS_DATASET))
    macro = world.lake.read(MACRO_DATASET, MACRO_PARTITION)
    frame = compute_features(lake_bars, macro, world.cfg.features, world.calendar, world.cfg.macro)
    frame = frame.filter(pl.col("session").cast(pl.Date).is_in(list(days))).sort("time")
    assert frame.height == 120
    engine = InferenceEngine(world.store, world.cfg.features, world.cfg.mlops.ensemble,
                             models_root=world.root / "models")
    member = engine.load_member(world.store.models.get(model.model_id), 1.0)
    run = run_live_rule(
        member.policy, member.normalizer, feature_matrix(frame, world.cfg.features), frame["time"].to_numpy(),
        frame["close"].to_numpy(), limits=limits, hours=world.cfg.mlops.trading_hours, calendar=world.calendar,
        flat_at_session_end=True, position_index=world.cfg.features.names.index("position"))

    checks = run.rejections()
    assert run.states[59].trading_date == LIVE_SESSION and run.states[60].trading_date == NEXT_SESSION
    assert expected_checks <= set(checks), checks
    if case == "daily_loss_breaker":
        assert any(st.breaker_reason == "daily_loss" for st in run.states[:60]) and not run.states[60].breaker_active
    assert sum(1 for s in signals if s["risk_status"] == "APPROVED" and s["action"] != 1) >= 3
    assert [s["raw_action"] for s in signals] == run.raw_action.tolist()
    assert [s["action"] for s in signals] == run.final_action.tolist()
    assert [s["failing_check"] for s in signals] == list(run.failed_check)
    np.testing.assert_allclose([s["position_recommendation"] for s in signals], run.recommendation, rtol=0, atol=1e-9)
    np.testing.assert_allclose([s["confidence"] for s in signals], run.confidence, rtol=0, atol=1e-9)
    for i, (live, bt) in enumerate(zip(after, run.states)):
        for f in STATE_FIELDS:
            a, b = getattr(live, f), getattr(bt, f)
            if isinstance(a, float) and isinstance(b, float):
                assert abs(a - b) <= 1e-9, (i, f, a, b)
            else:
                assert a == b, (i, f, a, b)
    live_exposure = np.array([s.position * s.position_size for s in after])
    np.testing.assert_allclose(live_exposure, run.exposure, rtol=0, atol=1e-9)
    # PnL: the book (close fills, no cost, what the live checks see) and the filled PnL (next open + costs).
    np.testing.assert_allclose([s.equity for s in after], run.book_equity, rtol=0, atol=1e-9)
    o, c = frame["open"].to_numpy(), frame["close"].to_numpy()
    sess = frame["session"].cast(pl.Date).cast(pl.Int32).to_numpy()
    kw = dict(cost_bps=1.0, initial_capital=1.0, fill_delay_bars=1)
    np.testing.assert_allclose(live_rule_equity(o, c, sess, live_exposure, **kw),
                               live_rule_equity(o, c, sess, run.exposure, **kw), rtol=0, atol=1e-9)

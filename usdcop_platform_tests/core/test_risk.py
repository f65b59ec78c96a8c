"""Risk manager: the checks in REFERENCE.md order, limits from config/mlops.yaml, sizing, state."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from usdcop_platform.core.actions import BUY, HOLD, SELL
from usdcop_platform.core.risk import (
    APPROVED,
    CHECK_ORDER,
    REJECTED,
    RiskManager,
    RiskState,
    apply_decision,
    evaluate,
    position_size,
    record_trade_result,
    roll_day,
)

# 2024-03-05 (Tuesday) 09:00 Bogota = 14:00 UTC.
AT = datetime(2024, 3, 5, 14, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def limits(platform_config):
    return platform_config.mlops.risk


@pytest.fixture(scope="module")
def hours(platform_config):
    return platform_config.mlops.trading_hours


def ev(state, limits, hours, calendar, action=BUY, conf=0.9, at=AT):
    return evaluate(state, limits, hours, calendar, action, conf, at)


def test_limits_come_from_config(limits, hours):
    assert (limits.min_confidence, limits.max_daily_loss_pct, limits.max_drawdown_pct) == (0.60, 2.0, 5.0)
    assert (limits.max_consecutive_losses, limits.cooldown_minutes, limits.max_trades_per_day) == (5, 30, 50)
    assert f"{hours.start:%H:%M}-{hours.end:%H:%M}" == "08:00-12:55"
    assert CHECK_ORDER[0] == "hold" and CHECK_ORDER[-1] == "max_trades"


def test_hold_passes_whatever_the_state(limits, hours, calendar):
    worst = RiskState(trading_date=AT.date(), breaker_active=True, breaker_reason="drawdown", daily_pnl=-0.5,
                      equity=0.5, trades_today=999, consecutive_losses=99)
    saturday = datetime(2024, 3, 9, 14, 0, tzinfo=timezone.utc)
    d, _ = ev(worst, limits, hours, calendar, action=HOLD, conf=0.0, at=saturday)
    assert d.status == APPROVED and d.final_action == HOLD and d.position_size == 0.0


@pytest.mark.parametrize("at,why", [
    (datetime(2024, 3, 9, 14, 0, tzinfo=timezone.utc), "not a trading session"),   # Saturday
    (datetime(2024, 3, 25, 14, 0, tzinfo=timezone.utc), "not a trading session"),  # San José (observed)
    (datetime(2024, 3, 28, 14, 0, tzinfo=timezone.utc), "not a trading session"),  # Maundy Thursday
    (datetime(2024, 3, 5, 12, 55, tzinfo=timezone.utc), "07:55 is outside"),       # before the open
    (datetime(2024, 3, 5, 18, 0, tzinfo=timezone.utc), "13:00 is outside"),        # after the last bar
])
def test_trading_hours(limits, hours, calendar, at, why):
    d, _ = ev(RiskState(), limits, hours, calendar, at=at)
    assert d.status == REJECTED and d.failed_check == "trading_hours" and why in d.reason
    assert d.final_action == HOLD and d.target_position == 0


def test_first_and_last_bar_are_inside_hours(limits, hours, calendar):
    for at in (datetime(2024, 3, 5, 13, 0, tzinfo=timezone.utc), datetime(2024, 3, 5, 17, 55, tzinfo=timezone.utc)):
        assert ev(RiskState(), limits, hours, calendar, at=at)[0].status == APPROVED


def test_order_breaker_before_confidence(limits, hours, calendar):
    st = RiskState(trading_date=AT.date(), breaker_active=True, breaker_reason="drawdown")
    d, _ = ev(st, limits, hours, calendar, conf=0.1)
    assert d.failed_check == "circuit_breaker"


def test_confidence_threshold_inclusive(limits, hours, calendar):
    assert ev(RiskState(), limits, hours, calendar, conf=0.5999)[0].failed_check == "confidence"
    assert ev(RiskState(), limits, hours, calendar, conf=0.60)[0].status == APPROVED


def test_daily_loss_trips_breaker(limits, hours, calendar):
    st = RiskState(trading_date=AT.date(), daily_pnl=-0.02)
    d, st2 = ev(st, limits, hours, calendar)
    assert d.failed_check == "daily_loss" and st2.breaker_active and st2.breaker_reason == "daily_loss"
    d2, _ = ev(st2, limits, hours, calendar)
    assert d2.failed_check == "circuit_breaker"
    ok, _ = ev(replace(st, daily_pnl=-0.0199), limits, hours, calendar)
    assert ok.status == APPROVED


def test_drawdown_trips_breaker_and_survives_the_night(limits, hours, calendar):
    st = RiskState(trading_date=AT.date(), equity=0.95, peak_equity=1.0)
    d, st2 = ev(st, limits, hours, calendar)
    assert d.failed_check == "drawdown" and st2.breaker_reason == "drawdown"
    next_day = roll_day(st2, calendar, AT + timedelta(days=1))
    assert next_day.breaker_active  # drawdown breaker stays
    daily = roll_day(replace(st2, breaker_reason="daily_loss"), calendar, AT + timedelta(days=1))
    assert not daily.breaker_active  # the daily-loss breaker clears with the new day


def test_consecutive_losses_cooldown(limits, hours, calendar):
    st = RiskState(trading_date=AT.date(), consecutive_losses=5)
    d, st2 = ev(st, limits, hours, calendar)
    assert d.failed_check == "consecutive_losses" and st2.cooldown_until == AT + timedelta(minutes=30)
    d, st3 = ev(st2, limits, hours, calendar, at=AT + timedelta(minutes=25))
    assert d.failed_check == "consecutive_losses" and "cooldown until" in d.reason
    d, st4 = ev(st3, limits, hours, calendar, at=AT + timedelta(minutes=30))
    assert d.status == APPROVED and st4.cooldown_until is None and st4.consecutive_losses == 0
    assert ev(replace(st, consecutive_losses=4), limits, hours, calendar)[0].status == APPROVED


def test_max_trades(limits, hours, calendar):
    st = RiskState(trading_date=AT.date(), trades_today=50)
    assert ev(st, limits, hours, calendar)[0].failed_check == "max_trades"
    assert ev(replace(st, trades_today=49), limits, hours, calendar)[0].status == APPROVED


def test_new_day_resets_counters(limits, hours, calendar):
    st = RiskState(trading_date=AT.date() - timedelta(days=1), trades_today=50, daily_pnl=-0.019)
    d, st2 = ev(st, limits, hours, calendar)
    assert d.status == APPROVED and st2.trades_today == 0 and st2.daily_pnl == 0 and st2.trading_date == AT.date()


def test_position_size_formula(limits):
    # 10% x min(1, .7/.8) x max(.5, 1 - .02/.05) x max(.5, 1 - .1*2)
    assert position_size(limits, 0.7, -0.02, 2) == pytest.approx(0.10 * 0.875 * 0.6 * 0.8)
    assert position_size(limits, 0.95, 0.0, 0) == pytest.approx(0.10)
    assert position_size(limits, 0.8, -0.049, 9) == pytest.approx(0.10 * 1.0 * 0.5 * 0.5)


def test_sell_is_sized_and_signed(limits, hours, calendar):
    d, _ = ev(RiskState(), limits, hours, calendar, action=SELL, conf=0.8)
    assert d.status == APPROVED and d.target_position == -1 and d.position_size == pytest.approx(0.10)


def test_apply_decision_trades_and_pnl(limits, hours, calendar):
    st = RiskState()
    buy, st = ev(st, limits, hours, calendar, action=BUY, conf=0.8)
    st = apply_decision(st, limits, buy, 4000.0, AT)
    assert (st.position, st.trades_today, st.entry_price, st.position_size) == (1, 1, 4000.0, pytest.approx(0.1))
    t2 = AT + timedelta(minutes=5)
    sell, st = ev(st, limits, hours, calendar, action=SELL, conf=0.8, at=t2)
    st = apply_decision(st, limits, sell, 3960.0, t2)  # long closed at -1%: pnl = 0.1 x -0.01
    assert st.daily_pnl == pytest.approx(-0.001) and st.consecutive_losses == 1
    assert st.position == -1 and st.trades_today == 2 and st.last_bar == t2
    assert st.drawdown == pytest.approx(-0.001)
    t3 = t2 + timedelta(minutes=5)
    hold, st = ev(st, limits, hours, calendar, action=HOLD, at=t3)
    st = apply_decision(st, limits, hold, 3920.4, t3)  # short closed at -1% price: +0.1 x 0.01 x sized
    assert st.position == 0 and st.entry_price is None and st.consecutive_losses == 0
    assert st.trades_today == 2  # going flat is not a new trade


def test_trade_result_trips_breaker_immediately(limits):
    st = record_trade_result(RiskState(trading_date=AT.date()), limits, -0.021, AT)
    assert st.breaker_active and st.breaker_reason == "daily_loss"


class DictRepository:
    """The repository protocol over a dict that JSON-round-trips every state (as the SQL store does)."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    def load(self, key):
        return json.loads(self.rows[key]) if key in self.rows else None

    def save(self, key, state):
        self.rows[key] = json.dumps(state)

    def update(self, key, fn):
        # Atomic (nothing else runs in between); DictRepository's own load, not a subclass's.
        DictRepository.save(self, key, dict(fn(DictRepository.load(self, key))))
        return DictRepository.load(self, key)


class RacingRepository(DictRepository):
    """After race(), another process commits `other(state)` right after our next read: between
    a load() and the save() that would follow it, or, against update(), once that has committed
    (the row lock makes the other writer wait)."""

    pending = None

    def race(self, key, other) -> None:
        self.pending = (key, other)

    def _other_process(self) -> None:
        if self.pending:
            key, other = self.pending
            self.pending = None
            DictRepository.update(self, key, other)

    def load(self, key):
        out = super().load(key)
        self._other_process()
        return out

    def update(self, key, fn):
        out = super().update(key, fn)
        self._other_process()
        return out


def test_manager_state_survives_restart_and_reset(limits, hours, calendar):
    repo = DictRepository()
    rm = RiskManager(limits, hours, calendar, repo, key="k")
    d = rm.evaluate(BUY, 0.9, AT)
    rm.apply(d, 4000.0, AT)
    rm.record_trade_result(-0.03, AT + timedelta(minutes=1))
    restarted = RiskManager(limits, hours, calendar, repo, key="k")
    st = restarted.state()
    assert st.breaker_active and st.position == 1 and st.trades_today == 1 and st.entry_price == 4000.0
    assert restarted.evaluate(BUY, 0.9, AT + timedelta(minutes=5)).failed_check == "circuit_breaker"
    restarted.reset(AT + timedelta(minutes=6))
    st = rm.state()
    assert not st.breaker_active and st.daily_pnl == 0 and st.equity == 1.0 and st.position == 1
    summ = rm.summary()
    assert summ["limits"]["max_trades_per_day"] == 50 and summ["trades_remaining"] == 50


def test_manager_mutations_do_not_lose_a_concurrent_write(limits, hours, calendar):
    """A live bar committed while the API records a trade result survives it (and vice versa)."""
    def live_bar(state):
        return {**RiskState.from_dict(state).to_dict(), "last_bar": AT.isoformat(), "position": 1}

    for mutate in (lambda rm: rm.record_trade_result(-0.004, AT), lambda rm: rm.reset(AT)):
        repo = RacingRepository()
        rm = RiskManager(limits, hours, calendar, repo, key="k")
        rm.put(RiskState(trading_date=AT.date(), consecutive_losses=2, daily_pnl=-0.01))
        repo.race("k", live_bar)
        mutate(rm)
        st = rm.state()
        assert st.last_bar == AT and st.position == 1  # the other process's write
        assert st.consecutive_losses in (3, 0) and st.updated_at == AT  # ours


@pytest.mark.parametrize("with_repository", [True, False], ids=["repository", "memory"])
def test_reset_returns_the_state_it_replaced(limits, hours, calendar, with_repository):
    rm = RiskManager(limits, hours, calendar, DictRepository() if with_repository else None, key="k")
    rm.record_trade_result(-0.03, AT)
    before, after = rm.reset_returning_previous(AT + timedelta(minutes=1))
    assert before.breaker_active and before.daily_pnl == pytest.approx(-0.03)
    assert not after.breaker_active and after.daily_pnl == 0 and rm.state() == after


def test_state_dict_round_trip():
    st = RiskState(trading_date=AT.date(), daily_pnl=-0.001, cooldown_until=AT, last_bar=AT, position=-1)
    assert RiskState.from_dict(json.loads(json.dumps(st.to_dict()))) == st
    assert RiskState.from_dict(None) == RiskState()


def test_invalid_action_refused(limits, hours, calendar):
    with pytest.raises(ValueError, match="action must be"):
        ev(RiskState(), limits, hours, calendar, action=3)

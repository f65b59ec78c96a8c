"""Live risk manager (REFERENCE.md "Risk manager"): ordered checks, sizing, persisted state.

Checks, in this order; the first failure rejects the signal and names the check, and a rejected
signal becomes HOLD (flat):

    1. hold                HOLD always passes (it only ever reduces risk)
    2. trading_hours       the bar lies in a session (not a weekend/holiday) within mlops.trading_hours
    3. circuit_breaker     the breaker is not active
    4. confidence          confidence >= min_confidence
    5. daily_loss          daily PnL > -max_daily_loss_pct %        (else trip the breaker)
    6. drawdown            drawdown  > -max_drawdown_pct %          (else trip the breaker)
    7. consecutive_losses  consecutive losses < max_consecutive_losses (else a cooldown of
                           cooldown_minutes; while it runs, this check fails)
    8. max_trades          trades today < max_trades_per_day

Position size recommendation (fraction of capital) for an approved BUY/SELL:

    size = base · min(1, conf / conf_full) · max(½, 1 − |dd| / max_dd) · max(½, 1 − 0.1 · losses)

PnL is tracked as fractions of capital: equity starts at 1, a closed trade of side s, size q,
entry price E and exit price X adds s · q · (X / E − 1) to the day's PnL and multiplies equity
by (1 + that). Drawdown dd = equity / peak − 1 ≤ 0. Counters reset at the first bar of a new
session; a breaker tripped by the daily loss clears with the new day, one tripped by drawdown
stays until an explicit reset (the drawdown it measured does not go away overnight).

Everything here is a pure function of (state, inputs); `RiskManager` wraps them with a lock
and a repository (anything with load(key) and an atomic update(key, fn)) so the state survives
restarts and another process's writes (the live path) are never lost to a read-modify-write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final, Literal, Protocol

from usdcop_platform.contracts.mlops import RiskLimits, TradingHours
from usdcop_platform.core.actions import ACTION_NAMES, HOLD, position_of
from usdcop_platform.core.calendar import TradingCalendar

# The fixed shape of REFERENCE.md's sizing formula (the tunable limits live in config/mlops.yaml).
SIZE_FLOOR: Final = 0.5  # neither the drawdown nor the losing-streak factor cuts size below half
SIZE_CUT_PER_LOSS: Final = 0.1  # each consecutive loss removes 10 % of the size

CHECK_ORDER: Final[tuple[str, ...]] = (
    "hold",
    "trading_hours",
    "circuit_breaker",
    "confidence",
    "daily_loss",
    "drawdown",
    "consecutive_losses",
    "max_trades",
)

# The key of the live path's state in the risk store (the live job writes it, the API reads it).
LIVE_RISK_KEY: Final = "live"

APPROVED: Final = "APPROVED"
REJECTED: Final = "REJECTED"
RiskStatus = Literal["APPROVED", "REJECTED"]


class RiskStateRepository(Protocol):
    """Where the state lives between processes (the SQL store's `risk` repository)."""

    def load(self, key: str) -> dict[str, Any] | None: ...

    def update(self, key: str, fn: Callable[[dict[str, Any] | None], Mapping[str, Any]]) -> Any:
        """Store fn(current state or None) under `key`, reading and writing in one transaction
        that excludes every other writer of the key (other processes included)."""
        ...


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    out = datetime.fromisoformat(value)
    return out if out.tzinfo else out.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class RiskState:
    """Everything the checks depend on. Immutable: every update returns a new state."""

    trading_date: date | None = None
    daily_pnl: float = 0.0  # fraction of capital, realized today
    equity: float = 1.0  # relative to the starting capital
    peak_equity: float = 1.0
    trades_today: int = 0
    consecutive_losses: int = 0
    total_trades: int = 0
    breaker_active: bool = False
    breaker_reason: str | None = None
    breaker_tripped_at: datetime | None = None
    cooldown_until: datetime | None = None
    position: int = 0  # current target position -1/0/+1 (the observation's `position`)
    position_size: float = 0.0  # fraction of capital of the open position
    entry_price: float | None = None
    last_bar: datetime | None = None  # newest bar this state has been advanced through
    updated_at: datetime | None = None

    @property
    def drawdown(self) -> float:
        """equity / peak − 1 (≤ 0)."""
        return self.equity / self.peak_equity - 1.0 if self.peak_equity > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, plus the derived percentages the store keeps as columns."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}  # flat fields: no deep copy needed
        for k in ("trading_date", "breaker_tripped_at", "cooldown_until", "last_bar", "updated_at"):
            out[k] = _iso(out[k])
        out["daily_pnl_pct"] = self.daily_pnl * 100.0
        out["drawdown_pct"] = self.drawdown * 100.0
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RiskState":
        if not data:
            return cls()
        # Derived values (daily_pnl_pct, drawdown_pct) and store bookkeeping (key) are ignored.
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if known.get("trading_date") is not None and not isinstance(known["trading_date"], date):
            known["trading_date"] = date.fromisoformat(str(known["trading_date"]))
        for k in ("breaker_tripped_at", "cooldown_until", "last_bar", "updated_at"):
            if k in known:
                known[k] = _dt(known[k])
        return cls(**known)


@dataclass(frozen=True)
class RiskDecision:
    status: RiskStatus
    failed_check: str | None
    reason: str
    requested_action: int
    final_action: int  # HOLD when rejected
    target_position: int  # position of final_action
    position_size: float  # recommended fraction of capital (0 when flat)

    @property
    def approved(self) -> bool:
        return self.status == APPROVED

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}  # flat fields: no deep copy needed


# ---- pure functions ------------------------------------------------------------------------


def roll_day(state: RiskState, calendar: TradingCalendar, at: datetime) -> RiskState:
    """Start a new trading day's counters when `at` belongs to a later session than the state."""
    day = calendar.session_of(at)
    if state.trading_date == day:
        return state
    if state.trading_date is not None and day < state.trading_date:
        return state  # an older instant never rewinds the day
    breaker = state.breaker_active and state.breaker_reason != "daily_loss"
    return replace(
        state,
        trading_date=day,
        daily_pnl=0.0,
        trades_today=0,
        breaker_active=breaker,
        breaker_reason=state.breaker_reason if breaker else None,
        breaker_tripped_at=state.breaker_tripped_at if breaker else None,
    )


def in_trading_hours(calendar: TradingCalendar, hours: TradingHours, at: datetime) -> bool:
    """A session day and hours.start <= local bar time <= hours.end (Bogota)."""
    local = at.astimezone(calendar.tz)
    return calendar.is_session(local.date()) and hours.start <= local.time().replace(tzinfo=None) <= hours.end


def position_size(limits: RiskLimits, confidence: float, drawdown: float, consecutive_losses: int) -> float:
    """REFERENCE.md sizing: base · min(1, c/c_full) · max(½, 1 − |dd|/dd_max) · max(½, 1 − 0.1·L)."""
    max_dd = limits.max_drawdown_pct / 100.0
    conf_factor = min(1.0, confidence / limits.confidence_full_size)
    dd_factor = max(SIZE_FLOOR, 1.0 - abs(drawdown) / max_dd)
    loss_factor = max(SIZE_FLOOR, 1.0 - SIZE_CUT_PER_LOSS * consecutive_losses)
    return limits.base_position_size * conf_factor * dd_factor * loss_factor


def _trip(state: RiskState, reason: str, at: datetime) -> RiskState:
    if state.breaker_active:
        return state
    return replace(state, breaker_active=True, breaker_reason=reason, breaker_tripped_at=at)


def _limits_breached(state: RiskState, limits: RiskLimits, at: datetime) -> RiskState:
    """Trip the breaker as soon as a loss limit is crossed (not only at the next signal)."""
    if state.daily_pnl <= -limits.max_daily_loss_pct / 100.0:
        return _trip(state, "daily_loss", at)
    if state.drawdown <= -limits.max_drawdown_pct / 100.0:
        return _trip(state, "drawdown", at)
    return state


def evaluate(
    state: RiskState,
    limits: RiskLimits,
    hours: TradingHours,
    calendar: TradingCalendar,
    action: int,
    confidence: float,
    at: datetime,
) -> tuple[RiskDecision, RiskState]:
    """Run the checks in order; return the decision and the state (breaker/cooldown may change)."""
    position_of(action)  # validates the action index
    state = roll_day(state, calendar, at)

    def reject(check: str, reason: str, st: RiskState) -> tuple[RiskDecision, RiskState]:
        return RiskDecision(REJECTED, check, reason, action, HOLD, 0, 0.0), st

    if action == HOLD:
        return RiskDecision(APPROVED, None, "HOLD passes", action, HOLD, 0, 0.0), state
    name = ACTION_NAMES[action]
    if not in_trading_hours(calendar, hours, at):
        local = at.astimezone(calendar.tz)
        why = "not a trading session" if not calendar.is_session(local.date()) else (
            f"{local:%H:%M} is outside {hours.start:%H:%M}-{hours.end:%H:%M}")
        return reject("trading_hours", f"{name} refused: {why}", state)
    if state.breaker_active:
        return reject("circuit_breaker", f"circuit breaker active ({state.breaker_reason})", state)
    if confidence < limits.min_confidence:
        return reject("confidence", f"confidence {confidence:.4f} < {limits.min_confidence}", state)
    if state.daily_pnl <= -limits.max_daily_loss_pct / 100.0:
        return reject("daily_loss", f"daily PnL {state.daily_pnl:.4%} breaches -{limits.max_daily_loss_pct}%; "
                      "circuit breaker tripped", _trip(state, "daily_loss", at))
    if state.drawdown <= -limits.max_drawdown_pct / 100.0:
        return reject("drawdown", f"drawdown {state.drawdown:.4%} breaches -{limits.max_drawdown_pct}%; "
                      "circuit breaker tripped", _trip(state, "drawdown", at))
    if state.cooldown_until is not None:
        if at < state.cooldown_until:
            return reject("consecutive_losses", f"cooldown until {state.cooldown_until.isoformat()}", state)
        state = replace(state, cooldown_until=None, consecutive_losses=0)  # cooldown served
    if state.consecutive_losses >= limits.max_consecutive_losses:
        until = at + timedelta(minutes=limits.cooldown_minutes)
        return reject("consecutive_losses", f"{state.consecutive_losses} consecutive losses; cooldown until "
                      f"{until.isoformat()}", replace(state, cooldown_until=until))
    if state.trades_today >= limits.max_trades_per_day:
        return reject("max_trades", f"{state.trades_today} trades today (max {limits.max_trades_per_day})", state)
    size = position_size(limits, confidence, state.drawdown, state.consecutive_losses)
    return RiskDecision(APPROVED, None, "all checks passed", action, action, position_of(action), size), state


def record_trade_result(state: RiskState, limits: RiskLimits, pnl: float, at: datetime) -> RiskState:
    """A closed trade's PnL (fraction of capital): daily PnL, equity/peak, losing streak, breaker."""
    equity = state.equity * (1.0 + pnl)
    st = replace(
        state,
        daily_pnl=state.daily_pnl + pnl,
        equity=equity,
        peak_equity=max(state.peak_equity, equity),
        consecutive_losses=state.consecutive_losses + 1 if pnl < 0 else 0,
        updated_at=at,
    )
    return _limits_breached(st, limits, at)


def apply_decision(
    state: RiskState, limits: RiskLimits, decision: RiskDecision, price: float, at: datetime
) -> RiskState:
    """Move to the decision's target position at `price`: close the open trade (its PnL is
    recorded), open the new one (a trade is an entry into a non-zero position or a flip)."""
    st = state
    target = decision.target_position
    if target != st.position:
        if st.position != 0 and st.entry_price:
            pnl = st.position * st.position_size * (price / st.entry_price - 1.0)
            st = record_trade_result(st, limits, pnl, at)
        if target != 0:
            st = replace(st, position=target, position_size=decision.position_size, entry_price=price,
                         trades_today=st.trades_today + 1, total_trades=st.total_trades + 1)
        else:
            st = replace(st, position=0, position_size=0.0, entry_price=None)
    return replace(st, last_bar=at, updated_at=at)


def reset_state(state: RiskState, at: datetime, keep_position: bool = True) -> RiskState:
    """Admin reset: clear breaker, cooldown, streak, daily counters and the drawdown reference."""
    fresh = RiskState(trading_date=state.trading_date, updated_at=at, last_bar=state.last_bar)
    if keep_position:
        fresh = replace(fresh, position=state.position, position_size=state.position_size,
                        entry_price=state.entry_price)
    return fresh


def summary(state: RiskState, limits: RiskLimits) -> dict[str, Any]:
    """The state plus derived figures, JSON-ready (the /v1/risk/summary payload)."""
    return {
        **state.to_dict(),
        "drawdown": state.drawdown,
        "limits": limits.model_dump(),
        "trades_remaining": max(0, limits.max_trades_per_day - state.trades_today),
        "check_order": list(CHECK_ORDER),
    }


# ---- stateful wrapper ----------------------------------------------------------------------


class RiskManager:
    """Thread-safe risk manager whose state lives in a repository (or memory when none is given).

    Every mutation is one atomic read → pure update → write: the lock serializes this process,
    repository.update() the other processes, so the process never holds a state the repository
    does not have (a restart resumes exactly where it stopped) and never overwrites a write
    made between its read and its write.
    """

    def __init__(
        self,
        limits: RiskLimits,
        hours: TradingHours,
        calendar: TradingCalendar,
        repository: RiskStateRepository | None = None,
        key: str = "live",
    ) -> None:
        self.limits, self.hours, self.calendar = limits, hours, calendar
        self.repository, self.key = repository, key
        self._memory = RiskState()
        self._lock = threading.RLock()

    def state(self) -> RiskState:
        with self._lock:
            if self.repository is None:
                return self._memory
            return RiskState.from_dict(self.repository.load(self.key))

    def _update(self, fn: Callable[[RiskState], RiskState]) -> tuple[RiskState, RiskState]:
        """Atomically replace the state by fn(state); returns (before, after). `fn` must be pure:
        the repository may run it again when it retries the transaction."""
        with self._lock:
            if self.repository is None:
                before, self._memory = self._memory, fn(self._memory)
                return before, self._memory
            seen: list[tuple[RiskState, RiskState]] = []

            def step(current: dict[str, Any] | None) -> dict[str, Any]:
                before = RiskState.from_dict(current)
                seen.append((before, fn(before)))
                return seen[-1][1].to_dict()

            self.repository.update(self.key, step)
            return seen[-1]  # the attempt that committed is the last one

    def evaluate(self, action: int, confidence: float, at: datetime) -> RiskDecision:
        with self._lock:
            before = self.state()
            decision, after = evaluate(before, self.limits, self.hours, self.calendar, action, confidence, at)
            if after == before:
                return decision  # read-only: nothing to write
            # The state changes (day roll, breaker, cooldown): decide again on the locked state.
            decisions: list[RiskDecision] = []

            def step(st: RiskState) -> RiskState:
                d, new = evaluate(st, self.limits, self.hours, self.calendar, action, confidence, at)
                decisions.append(d)
                return new

            self._update(step)
            return decisions[-1]

    def apply(self, decision: RiskDecision, price: float, at: datetime) -> RiskState:
        return self._update(lambda st: apply_decision(st, self.limits, decision, price, at))[1]

    def record_trade_result(self, pnl: float, at: datetime) -> RiskState:
        return self._update(
            lambda st: record_trade_result(roll_day(st, self.calendar, at), self.limits, pnl, at))[1]

    def reset(self, at: datetime) -> RiskState:
        return self.reset_returning_previous(at)[1]

    def reset_returning_previous(self, at: datetime) -> tuple[RiskState, RiskState]:
        """Reset; returns (before, after) of the same transaction (what an audit must record)."""
        return self._update(lambda st: reset_state(st, at))

    def put(self, state: RiskState) -> RiskState:
        """Replace the state (used to restore it from a persisted signal's lineage)."""
        return self._update(lambda _: state)[1]

    def summary(self) -> dict[str, Any]:
        return summary(self.state(), self.limits)

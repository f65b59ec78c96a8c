"""Feature engine for the observation contract (REFERENCE.md, "The observation").

One implementation serves training, backtests and live inference:

* ``compute_features`` — batch, over any bar history (training, the features asset, the CLI);
* ``IncrementalFeatureEngine`` — live, O(1) per bar, carrying the Wilder state bar to bar.

Both run the *same* compiled Wilder step (``_wilder_step``), the same log-return arithmetic
(differences of ``np.log`` closes), the same bar-index → ``time_norm`` rule and the same macro
session table, so train/serve parity holds by construction and is proven by tests to 1e-9.

Market features, over the continuous series of session bars (overnight gaps are not bars):

    log_ret_k  = ln(C_t / C_{t-k}) = ln C_t − ln C_{t-k},  k = horizon / bar length (1, 12, 48)
    rsi_9      = 100 · G_t / (G_t + L_t)          (0 when G_t + L_t = 0, as TA-Lib)
                 G_n = mean of the first n gains, G_t = (G_{t-1}(n−1) + gain_t) / n   (Wilder)
    atr_pct    = ATR_t / C_t, ATR Wilder-smoothed true range, seeded by the mean of TR_1..TR_n
                 TR_t = max(H_t − L_t, |H_t − C_{t-1}|, |L_t − C_{t-1}|)
    adx_14     = Wilder ADX (TA-Lib ADX): +DM/−DM/TR Wilder sums S_t = S_{t-1} − S_{t-1}/n + x_t
                 seeded with the sum of the first n−1 values; DI± = 100·DM±/TR;
                 DX = 100·|DI+ − DI−| / (DI+ + DI−); ADX = mean of the first n DX, then
                 ADX_t = (ADX_{t-1}(n−1) + DX_t) / n. A DX that is undefined (TR or DI sum
                 exactly 0) leaves ADX unchanged.

The Wilder recursions are inherently sequential, so they run as one compiled loop (numba) over
the bars; a single pass costs about what TA-Lib's C costs (see ``usdcop bench features``).
Everything else is vectorized numpy/polars.

Warm-up: a Wilder state seeded W bars earlier differs from the full-history state by a factor
(1 − 1/n)^W (times a polynomial factor for ADX's double smoothing); the contract's W makes that
< 1e-9, so features from any window holding ≥ W earlier bars equal the full-history features.
Rows with fewer than W earlier bars are dropped, never zero-filled.

Macro features (anti-leakage), on the daily frame of business days:
    1. flagged values are removed (treated as missing);
    2. each variable is forward-filled at most ``max_ffill_business_days`` rows;
    3. derived series by observation date g: z-score over the trailing
       ``macro_zscore_window`` rows (≥ ``macro_zscore_min_periods`` values, sample std),
       day-over-day change x_g / x_{g-1} − 1 (a fraction), spread x_a − x_b;
    4. a value observed on g becomes usable on g + publication delay (≥ 1 day);
    5. every bar of session D gets the latest value usable on D: from g ≤ D − delay < D.
A macro value dated D therefore never reaches a bar of session D; a value missing beyond the
forward-fill limit stays missing (NaN), which the features asset reports as a failed check.

State features: ``position`` (given by the caller), ``time_norm`` = bar index within the
session / (bars_per_session − 1), from the calendar grid (identical in training and serving).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numba
import numpy as np
import polars as pl

from usdcop_platform.contracts.features import (  # noqa: F401 - the specs are part of this module's API
    FEATURE_SPECS,
    FeatureContract,
    FeatureSpec,
    LogReturn,
    Macro,
    State,
    Wilder,
)
from usdcop_platform.contracts.macro import MacroSSOT
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.schema import UTC_TIME

# Feature definitions (what each contract name means) live in contracts.features: FEATURE_SPECS.

BAR_COLUMNS = ("time", "session", "open", "high", "low", "close")
VALID_POSITIONS = (-1.0, 0.0, 1.0)


class FeatureError(ValueError):
    """Input or contract problem the feature engine refuses to paper over."""


class InsufficientHistoryError(FeatureError):
    """Fewer bars than the contract's warm-up W."""


# ---------------------------------------------------------------------------------------------
# Contract resolution
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """The contract resolved against the feature definitions and the calendar."""

    names: tuple[str, ...]
    warmup: int
    lags: dict[str, int]  # log-return name -> lag in bars
    wilder: dict[str, Wilder]
    macro: dict[str, Macro]
    rsi_period: int
    atr_period: int
    adx_period: int

    @property
    def max_lag(self) -> int:
        return max(self.lags.values(), default=1)

    @property
    def lookback(self) -> int:
        """Bars of history the slowest definition needs before its first value."""
        return max(self.max_lag, self.rsi_period, self.atr_period, 2 * self.adx_period - 1)


def _plan(contract: FeatureContract, calendar: TradingCalendar) -> _Plan:
    unknown = [n for n in contract.names if n not in FEATURE_SPECS]
    if unknown:
        raise FeatureError(f"unknown feature(s) in contract {contract.version}: {unknown}")
    bar_minutes = calendar.instrument.bar_minutes
    lags: dict[str, int] = {}
    wilder: dict[str, Wilder] = {}
    macro: dict[str, Macro] = {}
    for name in contract.names:
        spec = FEATURE_SPECS[name]
        if isinstance(spec, LogReturn):
            if spec.minutes % bar_minutes:
                raise FeatureError(f"{name}: horizon {spec.minutes} min is not a multiple of {bar_minutes}-min bars")
            lags[name] = spec.minutes // bar_minutes
        elif isinstance(spec, Wilder):
            wilder[name] = spec
        elif isinstance(spec, Macro):
            macro[name] = spec
    periods = {s.indicator: s.period for s in FEATURE_SPECS.values() if isinstance(s, Wilder)}
    plan = _Plan(
        names=tuple(contract.names),
        warmup=contract.warmup_bars,
        lags=lags,
        wilder=wilder,
        macro=macro,
        rsi_period=periods["rsi"],
        atr_period=periods["atr_pct"],
        adx_period=periods["adx"],
    )
    if plan.warmup < plan.lookback:
        raise FeatureError(f"warmup_bars W={plan.warmup} is shorter than the longest lookback ({plan.lookback} bars)")
    return plan


# ---------------------------------------------------------------------------------------------
# The Wilder kernel: one compiled step, shared by the batch loop and the live path.
# ---------------------------------------------------------------------------------------------

# The Wilder state, carried between calls as a float64 array in this order and inside the loop as
# a tuple of scalars (kept in registers: the step is a pure function of the state and the bar).
WILDER_STATE_FIELDS = (
    "bars_seen", "prev_high", "prev_low", "prev_close", "rsi_avg_gain", "rsi_avg_loss", "atr",
    "adx_plus_dm", "adx_minus_dm", "adx_tr", "adx_dx_sum", "adx",
)
WILDER_STATE_SIZE = len(WILDER_STATE_FIELDS)
_RSI, _ATR_OUT, _ADX_OUT = 0, 1, 2  # rows of the kernel output (3, n)


@numba.njit(cache=True, inline="always")
def _wilder_step(st, h, l, c, n_rsi, n_atr, n_adx):  # noqa: E741 - OHLC naming
    """One bar: (new state, RSI, ATR, ADX), NaN before each lookback.

    Mirrors TA-Lib's RSI/ATR/ADX loops: same seeds, same operation order, exact zero tests."""
    count, ph, pl_, pc, gain, loss, atr, pdm, mdm, trs, sumdx, adx = st
    k = int(count)
    nan = np.nan
    if k == 0:
        return (1.0, h, l, c, gain, loss, atr, pdm, mdm, trs, sumdx, adx), nan, nan, nan

    # RSI on closes: seed = mean of the first n gains/losses, then Wilder smoothing.
    d = c - pc
    if k <= n_rsi:
        if d < 0.0:
            loss -= d
        else:
            gain += d
        if k == n_rsi:
            loss /= n_rsi
            gain /= n_rsi
    else:
        loss *= n_rsi - 1
        gain *= n_rsi - 1
        if d < 0.0:
            loss -= d
        else:
            gain += d
        loss /= n_rsi
        gain /= n_rsi
    rsi = nan
    if k >= n_rsi:
        tot = gain + loss
        rsi = 100.0 * (gain / tot) if tot > 0.0 else 0.0

    # True range (TA-Lib TRUE_RANGE macro order).
    tr = h - l
    t2 = abs(h - pc)
    if t2 > tr:
        tr = t2
    t2 = abs(l - pc)
    if t2 > tr:
        tr = t2

    # ATR: seed = mean of TR_1..TR_n, then (ATR·(n−1) + TR) / n.
    if k <= n_atr:
        atr += tr
        if k == n_atr:
            atr /= n_atr
    else:
        atr = (atr * (n_atr - 1) + tr) / n_atr
    atr_out = atr if k >= n_atr else nan

    # ADX: directional movement, Wilder sums, DX, then ADX (an undefined DX leaves ADX unchanged).
    dp = h - ph
    dm = pl_ - l
    plus = 0.0
    minus = 0.0
    if dm > 0.0 and dp < dm:
        minus = dm
    elif dp > 0.0 and dp > dm:
        plus = dp
    adx_out = nan
    if k < n_adx:
        pdm += plus
        mdm += minus
        trs += tr
    else:
        mdm -= mdm / n_adx
        pdm -= pdm / n_adx
        mdm += minus
        pdm += plus
        trs = trs - (trs / n_adx) + tr
        valid = False
        dx = 0.0
        if trs > 0.0:
            mdi = 100.0 * (mdm / trs)
            pdi = 100.0 * (pdm / trs)
            tot = mdi + pdi
            if tot > 0.0:
                dx = 100.0 * (abs(mdi - pdi) / tot)
                valid = True
        if k < 2 * n_adx - 1:
            if valid:
                sumdx += dx
        elif k == 2 * n_adx - 1:
            if valid:
                sumdx += dx
            adx = sumdx / n_adx
            adx_out = adx
        else:
            if valid:
                adx = (adx * (n_adx - 1) + dx) / n_adx
            adx_out = adx
    return (k + 1.0, h, l, c, gain, loss, atr, pdm, mdm, trs, sumdx, adx), rsi, atr_out, adx_out


@numba.njit(cache=True)
def _wilder_run(high, low, close, n_rsi, n_atr, n_adx, state, out):
    """Run the step over arrays, continuing from `state` (updated in place); out has shape (3, n)."""
    st = (state[0], state[1], state[2], state[3], state[4], state[5],
          state[6], state[7], state[8], state[9], state[10], state[11])
    for j in range(close.shape[0]):
        st, r, a, d = _wilder_step(st, high[j], low[j], close[j], n_rsi, n_atr, n_adx)
        out[_RSI, j] = r
        out[_ATR_OUT, j] = a
        out[_ADX_OUT, j] = d
    for i in range(WILDER_STATE_SIZE):
        state[i] = st[i]


def new_wilder_state() -> np.ndarray:
    return np.zeros(WILDER_STATE_SIZE, dtype=np.float64)


def wilder_indicators(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    *,
    rsi_period: int,
    atr_period: int,
    adx_period: int,
    state: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """RSI, ATR and ADX rows (3, n) of a bar series, and the final Wilder state.

    Passing the state returned by a previous call continues the series exactly."""
    h = np.ascontiguousarray(high, dtype=np.float64)
    lo = np.ascontiguousarray(low, dtype=np.float64)
    c = np.ascontiguousarray(close, dtype=np.float64)
    st = new_wilder_state() if state is None else state
    out = np.empty((3, c.shape[0]), dtype=np.float64)
    _wilder_run(h, lo, c, rsi_period, atr_period, adx_period, st, out)
    return out, st


# ---------------------------------------------------------------------------------------------
# Bars: validation, session and time_norm
# ---------------------------------------------------------------------------------------------


def _prepare_bars(bars: pl.DataFrame, calendar: TradingCalendar) -> pl.DataFrame:
    """Validate a bar frame; return time (UTC), session, open/high/low/close, bar_index."""
    missing = [c for c in ("time", "open", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise FeatureError(f"bars are missing column(s) {missing}")
    dtype = bars.schema["time"]
    if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
        raise FeatureError(f"bars.time must be a tz-aware datetime (UTC), got {dtype}")
    df = bars.select(
        pl.col("time").dt.convert_time_zone("UTC").cast(UTC_TIME),
        *(pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close")),
    )
    if df.height == 0:
        return df.with_columns(session=pl.lit(None, pl.Date), bar_index=pl.lit(None, pl.Int32))
    prices = df.select("open", "high", "low", "close").to_numpy()
    if not (np.isfinite(prices).all() and (prices > 0).all()):
        raise FeatureError("bars carry null, non-finite or non-positive prices")
    if (df["high"] < df["low"]).any():
        raise FeatureError("bars carry high < low")
    diffs = df["time"].diff().drop_nulls()
    if (diffs <= timedelta(0)).any():
        raise FeatureError("bars must be sorted by time with unique timestamps")
    df = df.with_columns(session=calendar.session_expr(), bar_index=calendar.grid_index_expr())
    off_grid = df.filter(pl.col("bar_index").is_null())
    if off_grid.height:
        raise FeatureError(f"{off_grid.height} bar(s) off the session grid, first at {off_grid['time'][0]}")
    bad_sessions = [d for d in df["session"].unique().to_list() if not calendar.is_session(d)]
    if bad_sessions:
        raise FeatureError(f"bars on non-session days: {sorted(bad_sessions)[:5]}")
    return df


def time_norm_of_index(bar_index: Any, bars_per_session: int) -> Any:
    """time_norm = bar index within the session / (bars_per_session − 1)."""
    return bar_index / (bars_per_session - 1)


# ---------------------------------------------------------------------------------------------
# Macro: daily frame → per-session values (anti-leakage)
# ---------------------------------------------------------------------------------------------


def _macro_variables(plan: _Plan) -> list[str]:
    return sorted({v for spec in plan.macro.values() for v in spec.inputs})


def _macro_wide(macro_long: pl.DataFrame, variables: list[str]) -> pl.DataFrame:
    """date + one column per variable; flagged, null and non-finite values removed."""
    for col in ("date", "variable", "value"):
        if col not in macro_long.columns:
            raise FeatureError(f"macro frame is missing column {col!r}")
    lf = macro_long.lazy().filter(pl.col("variable").is_in(variables))
    if "flagged" in macro_long.columns:
        lf = lf.filter(~pl.col("flagged").fill_null(False))  # flagged values count as missing
    long = (
        lf.select(pl.col("date").cast(pl.Date), "variable", pl.col("value").cast(pl.Float64))
        .filter(pl.col("value").is_not_null() & pl.col("value").is_finite())
        .collect()
    )
    dups = long.group_by("date", "variable").len().filter(pl.col("len") > 1)
    if dups.height:
        raise FeatureError(f"macro frame has {dups.height} duplicate (date, variable) values")
    if long.height == 0:
        return pl.DataFrame(schema={"date": pl.Date, **{v: pl.Float64 for v in variables}})
    wide = long.pivot(on="variable", index="date", values="value").sort("date")
    return wide.with_columns(pl.lit(None, pl.Float64).alias(v) for v in variables if v not in wide.columns)


def macro_daily_frame(
    macro_long: pl.DataFrame,
    contract: FeatureContract,
    calendar: TradingCalendar,
    macro_ssot: MacroSSOT,
    end: date,
) -> pl.DataFrame:
    """The daily frame: one row per business day up to `end` with the contract's macro features
    by observation date (null where unknown). Steps 1–3 of the module docstring."""
    plan = _plan(contract, calendar)
    variables = _macro_variables(plan)
    missing = [v for v in variables if v not in macro_ssot.variables]
    if missing:
        raise FeatureError(f"macro variables {missing} are not in the macro SSOT")
    wide = _macro_wide(macro_long, variables)
    if wide.height == 0:
        start = end
    else:
        start = min(wide["date"].min(), end)  # type: ignore[type-var]
        end = max(end, wide["date"].max())  # type: ignore[type-var]
    days = pl.date_range(start, end, "1d", eager=True).alias("date")
    grid = pl.DataFrame(days).filter(pl.col("date").dt.weekday() <= 5)
    daily = (
        pl.concat([grid, wide.select("date")]).unique().sort("date").join(wide, on="date", how="left")
    ).with_columns(
        pl.col(v).fill_null(strategy="forward", limit=macro_ssot.variables[v].max_ffill_business_days)
        for v in variables
    )
    window, min_periods = contract.macro_zscore_window, contract.macro_zscore_min_periods
    exprs = []
    for name, spec in plan.macro.items():
        x = pl.col(spec.inputs[0])
        if spec.transform == "zscore":
            mean = x.rolling_mean(window, min_samples=min_periods)
            std = x.rolling_std(window, min_samples=min_periods, ddof=1)
            expr = (x - mean) / std
        elif spec.transform == "change_1d":
            expr = x / x.shift(1) - 1.0
        else:
            expr = x - pl.col(spec.inputs[1])
        exprs.append(expr.alias(name))
    out = daily.select("date", *exprs)
    # a zero rolling std would give ±inf/NaN: keep it missing rather than publish a non-number
    return out.with_columns(
        pl.when(pl.col(n).is_finite()).then(pl.col(n)).otherwise(None).alias(n) for n in plan.macro
    )


def macro_session_features(
    macro_long: pl.DataFrame | None,
    sessions: Sequence[date],
    contract: FeatureContract,
    calendar: TradingCalendar,
    macro_ssot: MacroSSOT,
) -> pl.DataFrame:
    """session + the contract's macro features known before each session opened (steps 4–5)."""
    plan = _plan(contract, calendar)
    sess = pl.DataFrame({"session": sorted(set(sessions))}, schema={"session": pl.Date})
    if not plan.macro:
        return sess
    if macro_long is None:
        raise FeatureError(f"the contract needs macro features {list(plan.macro)} but no macro frame was given")
    if sess.height == 0:
        return sess.with_columns(pl.lit(None, pl.Float64).alias(n) for n in plan.macro)
    daily = macro_daily_frame(macro_long, contract, calendar, macro_ssot, sess["session"].max())  # type: ignore[arg-type]
    by_delay: dict[int, list[str]] = {}
    for name, spec in plan.macro.items():
        delay = max(macro_ssot.variables[v].publication_delay_days for v in spec.inputs)
        by_delay.setdefault(delay, []).append(name)
    out = sess
    for delay, names in sorted(by_delay.items()):
        keyed = sess.with_columns(_usable=pl.col("session") - pl.duration(days=delay))
        joined = keyed.join_asof(
            daily.select("date", *names), left_on="_usable", right_on="date", strategy="backward"
        ).select("session", *names)
        out = out.join(joined, on="session", how="left")
    return out.select("session", *plan.macro)


# ---------------------------------------------------------------------------------------------
# Batch
# ---------------------------------------------------------------------------------------------


def _check_position(position: float) -> float:
    if float(position) not in VALID_POSITIONS:
        raise FeatureError(f"position must be one of {VALID_POSITIONS}, got {position!r}")
    return float(position)


def _lagged_log_return(logc: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(logc.shape[0])
    out[:k] = np.nan
    if logc.shape[0] > k:
        np.subtract(logc[k:], logc[:-k], out=out[k:])
    return out


def bar_feature_columns(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, contract: FeatureContract, calendar: TradingCalendar
) -> dict[str, np.ndarray]:
    """The bar-derived market features (log returns, RSI, ATR %, ADX) of a bar series, full length
    (NaN where a definition has not enough history yet). The hot path of the batch engine."""
    plan = _plan(contract, calendar)
    c = np.ascontiguousarray(close, dtype=np.float64)
    logc = np.log(c)
    cols = {name: _lagged_log_return(logc, k) for name, k in plan.lags.items()}
    if plan.wilder:
        ind, _ = wilder_indicators(
            high, low, c, rsi_period=plan.rsi_period, atr_period=plan.atr_period, adx_period=plan.adx_period
        )
        for name, spec in plan.wilder.items():
            if spec.indicator == "rsi":
                cols[name] = ind[_RSI]
            elif spec.indicator == "atr_pct":
                cols[name] = ind[_ATR_OUT] / c
            else:
                cols[name] = ind[_ADX_OUT]
    return cols


def compute_features(
    bars: pl.DataFrame,
    macro_long: pl.DataFrame | None,
    contract: FeatureContract,
    calendar: TradingCalendar,
    macro_ssot: MacroSSOT,
    *,
    position: float = 0.0,
) -> pl.DataFrame:
    """One row per bar that has ≥ W earlier bars: time, session, open, high, low, close and the
    contract's features in contract order (Float64; NaN where a macro value is unknown)."""
    plan = _plan(contract, calendar)
    pos = _check_position(position)
    df = _prepare_bars(bars, calendar)
    if df.height <= plan.warmup:
        raise InsufficientHistoryError(
            f"{df.height} bar(s) given; the feature contract {contract.version} needs more than "
            f"warmup_bars W={plan.warmup} bars (W earlier bars for the first published row)"
        )
    cols = bar_feature_columns(df["high"].to_numpy(), df["low"].to_numpy(), df["close"].to_numpy(), contract, calendar)
    tn = time_norm_of_index(df["bar_index"].to_numpy().astype(np.float64), calendar.bars_per_session)
    full = df.with_columns(
        *(pl.Series(name, values) for name, values in cols.items()),
        pl.lit(pos, pl.Float64).alias("position"),
        pl.Series("time_norm", tn),
    )
    full = full.slice(plan.warmup)
    if plan.macro:
        table = macro_session_features(macro_long, full["session"].unique().to_list(), contract, calendar, macro_ssot)
        full = full.join(table, on="session", how="left", maintain_order="left")
    # polars keeps NaN from numpy; macro nulls become NaN so every feature column is a plain float
    return full.select(*BAR_COLUMNS, *(pl.col(n).fill_null(np.nan).alias(n) for n in plan.names))


def feature_matrix(df: pl.DataFrame, contract: FeatureContract) -> np.ndarray:
    """(n, n_features) float64 matrix of a compute_features frame, columns in contract order."""
    missing = [n for n in contract.names if n not in df.columns]
    if missing:
        raise FeatureError(f"frame is missing feature column(s) {missing}")
    return np.ascontiguousarray(df.select(contract.names).to_numpy().astype(np.float64, copy=False))


def non_finite_rows(df: pl.DataFrame, contract: FeatureContract) -> pl.DataFrame:
    """Rows carrying a NaN/±inf feature, with the names of the offending features (for checks)."""
    names = list(contract.names)
    bad = pl.concat_list(
        pl.when(~pl.col(n).is_finite() | pl.col(n).is_null()).then(pl.lit(n)).otherwise(None) for n in names
    ).list.drop_nulls()
    return df.select("time", "session", bad.alias("features")).filter(pl.col("features").list.len() > 0)


# ---------------------------------------------------------------------------------------------
# Incremental (live)
# ---------------------------------------------------------------------------------------------


def _bar_fields(bar: Any) -> tuple[datetime, float, float, float, float]:
    if isinstance(bar, pl.DataFrame):
        if bar.height != 1:
            raise FeatureError(f"update() takes one bar, got a frame of {bar.height} rows")
        bar = bar.row(0, named=True)
    if not isinstance(bar, Mapping):
        bar = bar._asdict() if hasattr(bar, "_asdict") else dict(bar)
    try:
        t = bar["time"]
        o, h, lo, c = (float(bar[k]) for k in ("open", "high", "low", "close"))
    except KeyError as exc:
        raise FeatureError(f"bar is missing field {exc.args[0]!r}") from None
    if isinstance(t, np.datetime64):
        t = datetime.fromtimestamp(t.astype("datetime64[us]").astype(np.int64) / 1e6, tz=timezone.utc)
    if not isinstance(t, datetime) or t.tzinfo is None:
        raise FeatureError(f"bar time must be a tz-aware datetime, got {t!r}")
    if not all(math.isfinite(x) and x > 0 for x in (o, h, lo, c)):
        raise FeatureError(f"bar at {t} carries a non-finite or non-positive price")
    if h < lo:
        raise FeatureError(f"bar at {t} has high < low")
    return t.astimezone(timezone.utc), o, h, lo, c


class IncrementalFeatureEngine:
    """Live features: warm up once from ≥ W bars, then O(1) work per new bar.

    The Wilder state (12 floats), the last `max lag` log closes and the session's macro values
    are carried bar to bar; ``update`` runs the same compiled step as the batch engine, so its
    output equals ``compute_features`` on the same history to rounding (≤ 1e-9 proven by tests),
    and equals it from any ≥ W-bar window by the warm-up convergence bound.
    """

    def __init__(self, contract: FeatureContract, calendar: TradingCalendar, macro_ssot: MacroSSOT) -> None:
        self.contract = contract
        self.calendar = calendar
        self.macro_ssot = macro_ssot
        self._plan = _plan(contract, calendar)
        self._state: np.ndarray | None = None
        self._logc: list[float] = []
        self._last_time: datetime | None = None
        self._bars_seen = 0
        self._macro_long: pl.DataFrame | None = None
        self._macro_table: dict[date, np.ndarray] = {}
        self._out = np.empty((3, 1), dtype=np.float64)
        self._idx = {n: i for i, n in enumerate(self._plan.names)}
        self._macro_names = list(self._plan.macro)
        self._bars_per_session = calendar.bars_per_session
        self._checked_session: date | None = None  # last session confirmed to be a trading session

    # ---- lifecycle -----------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._state is not None

    @property
    def last_time(self) -> datetime | None:
        return self._last_time

    @property
    def bars_seen(self) -> int:
        return self._bars_seen

    def warm_up(self, history_bars: pl.DataFrame, macro_long: pl.DataFrame | None) -> None:
        """Seed the state from the last ≥ W bars (all of `history_bars` are consumed)."""
        df = _prepare_bars(history_bars, self.calendar)
        if df.height < self._plan.warmup:
            raise InsufficientHistoryError(
                f"warm-up needs at least warmup_bars W={self._plan.warmup} bars, got {df.height}"
            )
        p = self._plan
        _, state = wilder_indicators(
            df["high"].to_numpy(), df["low"].to_numpy(), df["close"].to_numpy(),
            rsi_period=p.rsi_period, atr_period=p.atr_period, adx_period=p.adx_period,
        )
        self._state = state
        self._logc = [float(x) for x in np.log(df["close"].to_numpy()[-p.max_lag :])]
        self._last_time = df["time"][-1]
        self._bars_seen = df.height
        self.set_macro(macro_long, first_session=df["session"][-1])

    def set_macro(self, macro_long: pl.DataFrame | None, *, first_session: date | None = None) -> None:
        """(Re)load the daily macro frame; per-session values are precomputed for the sessions it
        can inform and computed on demand beyond that."""
        if self._plan.macro and macro_long is None:
            raise FeatureError(f"the contract needs macro features {self._macro_names} but no macro frame was given")
        self._macro_long = macro_long
        self._macro_table = {}
        if not self._plan.macro or macro_long is None:
            return
        start = first_session or (self.calendar.session_of(self._last_time) if self._last_time else None)
        dates = macro_long["date"].cast(pl.Date).drop_nulls()
        if start is None or dates.len() == 0:
            return
        # precompute through the session after the newest macro date (live: today's session);
        # later sessions are computed on demand, once, by the same function
        last: date = max(dates.max(), start)  # type: ignore[type-var, assignment]
        self._fill_macro_table(self.calendar.sessions(start, self.calendar.next_session(last)))

    def _macro_for(self, session: date) -> np.ndarray:
        row = self._macro_table.get(session)
        if row is None:
            self._fill_macro_table([session])
            row = self._macro_table[session]
        return row

    def _fill_macro_table(self, sessions: list[date]) -> None:
        if not sessions:
            return
        if self._macro_long is None:
            raise FeatureError(f"the contract needs macro features {self._macro_names}: call set_macro() first")
        table = macro_session_features(self._macro_long, sessions, self.contract, self.calendar, self.macro_ssot)
        values = table.select(pl.col(n).fill_null(np.nan) for n in self._macro_names).to_numpy()
        for d, row in zip(table["session"].to_list(), values):
            self._macro_table[d] = row.astype(np.float64)

    # ---- per bar -------------------------------------------------------------------------
    def update(self, bar: Any, position: float = 0.0) -> np.ndarray:
        """Consume the newest bar; return its feature vector (n_features,) in contract order."""
        if self._state is None:
            raise FeatureError("warm_up() must be called before update()")
        pos = _check_position(position)
        t, _o, h, lo, c = _bar_fields(bar)
        if self._last_time is not None and t <= self._last_time:
            raise FeatureError(f"bar at {t} is not after the last bar {self._last_time}")
        idx = self.calendar.bar_index(t)
        session = self.calendar.session_of(t)
        if idx is None or (session != self._checked_session and not self.calendar.is_session(session)):
            raise FeatureError(f"bar at {t} is off the session grid")
        self._checked_session = session
        macro_row = self._macro_for(session) if self._macro_names else None  # may fail: before any state change
        p = self._plan
        out = self._out
        _wilder_run(
            np.array((h,)), np.array((lo,)), np.array((c,)),
            p.rsi_period, p.atr_period, p.adx_period, self._state, out,
        )
        logc = float(np.log(c))
        hist = self._logc
        vec = np.empty(len(p.names), dtype=np.float64)
        ix = self._idx
        for name, k in p.lags.items():
            vec[ix[name]] = logc - hist[-k] if len(hist) >= k else np.nan
        for name, spec in p.wilder.items():
            if spec.indicator == "rsi":
                vec[ix[name]] = out[_RSI, 0]
            elif spec.indicator == "atr_pct":
                vec[ix[name]] = out[_ATR_OUT, 0] / c
            else:
                vec[ix[name]] = out[_ADX_OUT, 0]
        if macro_row is not None:
            for i, name in enumerate(self._macro_names):
                vec[ix[name]] = macro_row[i]
        if "position" in ix:
            vec[ix["position"]] = pos
        if "time_norm" in ix:
            vec[ix["time_norm"]] = time_norm_of_index(float(idx), self._bars_per_session)
        hist.append(logc)
        if len(hist) > p.max_lag:
            del hist[0]
        self._last_time = t
        self._bars_seen += 1
        return vec

    # ---- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state (the macro frame itself is reloaded with set_macro/from_state)."""
        if self._state is None:
            raise FeatureError("engine is not warmed up")
        return {
            "contract_version": self.contract.version,
            "feature_order_hash": self.contract.feature_order_hash,
            "wilder": [float(x) for x in self._state],
            "log_closes": list(self._logc),
            "last_time": self._last_time.isoformat() if self._last_time else None,
            "bars_seen": self._bars_seen,
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        contract: FeatureContract,
        calendar: TradingCalendar,
        macro_ssot: MacroSSOT,
        macro_long: pl.DataFrame | None = None,
    ) -> "IncrementalFeatureEngine":
        if state.get("feature_order_hash") != contract.feature_order_hash:
            raise FeatureError("saved engine state was made for a different feature order (feature_order_hash mismatch)")
        wilder = np.asarray(state["wilder"], dtype=np.float64)
        if wilder.shape != (WILDER_STATE_SIZE,):
            raise FeatureError(f"saved Wilder state has shape {wilder.shape}, expected ({WILDER_STATE_SIZE},)")
        eng = cls(contract, calendar, macro_ssot)
        eng._state = wilder.copy()
        eng._logc = [float(x) for x in state["log_closes"]][-eng._plan.max_lag :]
        eng._last_time = datetime.fromisoformat(state["last_time"]) if state.get("last_time") else None
        eng._bars_seen = int(state["bars_seen"])
        if eng._plan.macro and macro_long is not None:
            eng.set_macro(macro_long)
        else:
            eng._macro_long = macro_long
        return eng


def warmup_sessions(contract: FeatureContract, calendar: TradingCalendar) -> int:
    """Whole sessions that hold W bars when every bar is present: ceil(W / bars_per_session)."""
    return -(-contract.warmup_bars // calendar.bars_per_session)


# ---------------------------------------------------------------------------------------------
# Helpers for the quality gates
# ---------------------------------------------------------------------------------------------


def max_abs_difference(a: pl.DataFrame, b: pl.DataFrame, names: Sequence[str]) -> float:
    """Largest |a − b| over the named columns of two aligned frames; inf when the rows or the NaN
    positions differ (a NaN must be matched by a NaN)."""
    if a.height != b.height or (a.height and not a["time"].equals(b["time"])):
        return math.inf
    if a.height == 0:
        return 0.0
    x = a.select(names).to_numpy().astype(np.float64)
    y = b.select(names).to_numpy().astype(np.float64)
    nx, ny = np.isnan(x), np.isnan(y)
    if (nx != ny).any():
        return math.inf
    d = np.abs(np.where(nx, 0.0, x) - np.where(ny, 0.0, y))
    return float(d.max()) if d.size else 0.0


def history_gaps(times: pl.Series | None, calendar: TradingCalendar) -> dict[str, Any]:
    """Missing grid bars and whole missing sessions between the first and last bar of `times`."""
    if times is None or times.len() == 0:
        return {"missing_bars": 0, "missing_sessions": 0, "sessions_with_gaps": []}
    sessions = times.to_frame("time").select(calendar.session_expr()).to_series()
    vc = sessions.value_counts()
    counts = dict(zip(vc[sessions.name].to_list(), vc["count"].to_list()))
    first, last = sessions.min(), sessions.max()
    expected = calendar.sessions(first, last)  # type: ignore[arg-type]
    local_first = times.min().astimezone(calendar.tz)  # type: ignore[union-attr]
    local_last = times.max().astimezone(calendar.tz)  # type: ignore[union-attr]
    head = calendar.bar_index(local_first) or 0  # bars before the window's first bar are not history
    tail = calendar.bars_per_session - 1 - (calendar.bar_index(local_last) or 0)
    missing = 0
    with_gaps: list[str] = []
    for d in expected:
        n_exp = calendar.bars_per_session - (head if d == first else 0) - (tail if d == last else 0)
        short = n_exp - counts.get(d, 0)
        if short > 0:
            missing += short
            with_gaps.append(d.isoformat())
    return {
        "missing_bars": missing,
        "missing_sessions": sum(1 for d in expected if d not in counts),
        "sessions_with_gaps": with_gaps,
    }

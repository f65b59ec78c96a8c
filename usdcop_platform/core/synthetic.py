"""Deterministic synthetic USD/COP bars and macro series, calibrated on the real 2020-2024 exports.

Bars. Sessions come from the trading calendar, from a fixed anchor (instrument.calendar_start), so
the bars of a session never depend on the requested range. Per session d:

    h_d = phi * h_{d-1} + sqrt(1 - phi^2) * s * eta_d            (log-vol AR(1): volatility clustering)
    sigma_d = bar_vol * exp(h_d - s^2)                             (E[sigma_d^2] = bar_vol^2)
    x_open_d = x_close_{d-1} - kappa (x_close_{d-1} - ln level) + overnight_vol * g_d
    x_{d,i} = x_open_d + sum_{j<=i} sigma_d * t_j / sqrt(nu / (nu - 2)),   i = 0..N-1

with eta, g ~ N(0, 1), t ~ Student-t(nu) (fat tails), and kappa = v / (2 level_sd^2) where
v = overnight_vol^2 + N bar_vol^2 is the per-session variance, so the log price is stationary
around ln(level) with sd level_sd. With a `PlantedEdge` of strength s > 0 every
5-minute log return also carries a latent drift mu (see `planted_drift`): a known, persistent edge
that trailing returns reveal, for the learnability benchmark and the demo. On top of the path the generator reproduces the export's
quirks: close-only bars (O=H=L=C), blocks of missing bars, whole missing sessions, stale runs of
unchanged closes, indicative flat bars on Colombian holidays, and backfill rows stamped in Bogota
wall-clock time but labelled UTC (some duplicating true-UTC bars, some filling their gaps).

Every random component has its own stream (numpy SeedSequence.spawn) and draws one row per
session in calendar order, so the result is a pure function of (seed, calibration, calendar).

Macro. Weekday series per SSOT variable: an Ornstein-Uhlenbeck process in log space,
x_t = x_{t-1} - k (x_{t-1} - ln level) + daily_vol * e_t with k = daily_vol^2 / (2 level_sd^2),
so both the daily log-change sd and the sd of ln(value) match the real 2020-2024 series; ~8.7%
missing weekdays; clipped inside the variable's expected range. Each variable's streams are keyed
by (seed, variable id), so adding a variable to the SSOT does not change the others.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache

import numpy as np
import polars as pl

from usdcop_platform.contracts.macro import MacroSSOT
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.schema import UTC_TIME

SOURCE_LABEL = "synthetic"
MAD_TO_SD = 1.4826  # sd = 1.4826 x median absolute deviation for a normal distribution
LOG_FLOOR = 1e-7  # added before taking logs of |returns| of stale sessions (median |r| = 0)
BACKFILL_LABEL = "synthetic_backfill"


@dataclass(frozen=True)
class BarCalibration:
    """Facts measured on usdcop_m5_ohlcv_2020_2024 (see the test that re-measures them)."""

    level: float = 4_100.0  # long-run level; real yearly means 3,696..4,334
    level_sd: float = 0.06  # stationary sd of ln(price) around ln(level)
    bar_vol: float = 0.0011  # scale of 5-min log returns (measured sd of the output ~ real 0.00103)
    tail_dof: float = 2.5  # Student-t dof: robust (MAD) vol / sd ~ 0.49 as in the data
    overnight_vol: float = 0.00446  # sd of ln(first bar / previous session's last bar)
    vol_persistence: float = 0.97  # AR(1) of session log-vol (real rank autocorr 0.61 lag 1, 0.27 lag 20)
    vol_of_vol: float = 0.35  # stationary sd of session log-vol
    close_only_share: float = 0.954  # bars with O = H = L = C
    candle_range: float = 0.00033  # median (H - L) / C of full candles
    incomplete_session_share: float = 0.19  # sessions missing some bars
    missing_block_median: float = 4.0  # missing bars in an incomplete session: median 4, mean ~13
    missing_block_log_sd: float = 1.5
    missing_session_share: float = 0.0033  # sessions with no bar at all (4 of 1,225)
    stale_session_share: float = 0.057  # sessions holding a run of >= 12 unchanged closes
    stale_run_min: int = 12
    stale_run_mean_extra: float = 10.0
    holiday_bar_share: float = 0.84  # weekday holidays carrying indicative flat bars
    holiday_range: float = 0.0001  # their tiny (H - L) / C
    backfill_session_share: float = 0.042  # sessions with mislabelled backfill rows (52 of 1,225)
    backfill_fill_share: float = 0.5  # of those, sessions whose true-UTC copies are missing


@dataclass(frozen=True)
class PlantedEdge:
    """A persistent latent drift added to every 5-minute log return: an edge of known strength.

        mu_t = a mu_{t-1} + sqrt(1 - a^2) * strength * bar_vol * z_t,   a = 2^(-1 / half_life_bars)

    over the continuous series of grid bars (sessions chained), so sd(mu) = strength * bar_vol: the
    per-bar signal-to-noise ratio is `strength`, and the drift persists for about `half_life_bars`.
    Trailing returns (log_ret_1h, log_ret_4h of the observation) estimate it; nothing observes it.
    strength 0 is the zero-edge market (the bars are then exactly those without an edge).
    """

    strength: float = 0.0
    half_life_bars: float = 24.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength) and self.strength >= 0):
            raise ValueError(f"planted edge strength must be a finite number >= 0; got {self.strength!r}")
        if not (math.isfinite(self.half_life_bars) and self.half_life_bars > 0):
            raise ValueError(f"planted edge half_life_bars must be > 0; got {self.half_life_bars!r}")

    @property
    def persistence(self) -> float:
        return 2.0 ** (-1.0 / self.half_life_bars)


NO_EDGE = PlantedEdge()


@dataclass(frozen=True)
class MacroSeriesCalibration:
    level: float  # geometric mean
    daily_vol: float  # sd of the daily log change
    level_sd: float  # sd of ln(value): the OU process's stationary sd


# Real 2020-2024 geometric mean, daily log-change sd and sd of ln(value) of each SSOT variable.
REAL_MACRO_CALIBRATION: dict[str, MacroSeriesCalibration] = {
    "dxy": MacroSeriesCalibration(99.82, 0.0046, 0.058),
    "vix": MacroSeriesCalibration(20.24, 0.0802, 0.323),
    "embi_col": MacroSeriesCalibration(308.9, 0.0252, 0.233),
    "brent": MacroSeriesCalibration(71.67, 0.0290, 0.323),
    "ust10y": MacroSeriesCalibration(2.239, 0.0390, 0.657),
    # ust2y's real sd of ln(value) is 1.46 (zero rates in 2020-21, then 5%): a regime change an OU
    # process cannot reproduce without sitting at the range cap; use ust10y's 0.657.
    "ust2y": MacroSeriesCalibration(1.243, 0.0617, 0.657),
    "usdmxn": MacroSeriesCalibration(19.51, 0.0086, 0.088),
}


@dataclass(frozen=True)
class MacroCalibration:
    series: dict[str, MacroSeriesCalibration] = field(default_factory=lambda: dict(REAL_MACRO_CALIBRATION))
    missing_weekday_share: float = 0.087  # real: 8.5-8.9% per market series
    range_margin: float = 0.01  # keep values this fraction of the range inside expected_range

    def for_variable(self, vid: str, lo: float, hi: float, max_jump_pct: float) -> MacroSeriesCalibration:
        """Measured calibration, or for a variable the data never had: the middle of its range, a
        daily vol a tenth of its jump limit (synthetic values are never flagged as jumps) and a
        level sd of a quarter of the range's half-width relative to the middle."""
        if vid in self.series:
            return self.series[vid]
        mid = (lo + hi) / 2.0
        return MacroSeriesCalibration(mid, max_jump_pct / 100.0 / 10.0, (hi - lo) / 2.0 / mid / 4.0)


# ---- bars ----------------------------------------------------------------------------------------
def _stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator per random array, keyed by (seed, name): every array is drawn with
    one row per session in calendar order, so session d's draws never depend on the range's end."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(name.encode())]))


def _grid_offsets(calendar: TradingCalendar) -> np.ndarray:
    n = calendar.bars_per_session
    step = np.timedelta64(calendar.instrument.bar_minutes * 60_000_000, "us")
    return np.arange(n) * step


def _utc_us(dt: datetime) -> np.datetime64:
    return np.datetime64(dt.astimezone(timezone.utc).replace(tzinfo=None), "us")


def synthetic_bars(
    calendar: TradingCalendar,
    start: date,
    end: date,
    seed: int,
    calibration: BarCalibration | None = None,
    *,
    quirks: bool = True,
    edge: PlantedEdge = NO_EDGE,
) -> pl.DataFrame:
    """Raw synthetic bars with labelled UTC dates in [start, end]: time (UTC), OHLC, volume (0),
    source. With quirks=False only clean on-grid session bars (no gaps, holidays or backfill).
    `edge` plants a latent drift in the returns (PlantedEdge); the quirks are applied on top."""
    cal = calibration or BarCalibration()
    full = _generate(calendar, end, seed, cal, quirks, edge)
    lo = datetime.combine(start, datetime.min.time(), tzinfo=timezone.utc)
    hi = datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
    return full.filter((pl.col("time") >= lo) & (pl.col("time") < hi))


def planted_drift(
    calendar: TradingCalendar, end: date, seed: int, edge: PlantedEdge, calibration: BarCalibration | None = None
) -> pl.DataFrame:
    """The latent drift of every grid bar from the calendar anchor to `end`: time (UTC), drift
    (log return per bar). What the generator adds to the returns; the latent optimum reads it."""
    cal = calibration or BarCalibration()
    sessions = calendar.sessions(calendar.instrument.calendar_start, end)
    mu = _drift(seed, cal, edge, len(sessions), calendar.bars_per_session)
    opens_utc = np.array([_utc_us(calendar.session_open_utc(d)) for d in sessions], dtype="datetime64[us]")
    times = (opens_utc[:, None] + _grid_offsets(calendar)[None, :]).ravel()
    return pl.DataFrame(
        {"time": pl.Series(times.astype("datetime64[us]")).dt.replace_time_zone("UTC"), "drift": mu.ravel()}
    )


def _drift(seed: int, cal: BarCalibration, edge: PlantedEdge, n_s: int, n_b: int) -> np.ndarray:
    """(n_s, n_b) AR(1) drift of PlantedEdge, started from its stationary distribution."""
    if edge.strength == 0 or n_s == 0:
        return np.zeros((n_s, n_b))
    from scipy.signal import lfilter  # scipy loads where it is used (code-location import cost)

    a = edge.persistence
    z = _stream(seed, "edge").standard_normal(n_s * n_b) * (edge.strength * cal.bar_vol)
    z[1:] *= math.sqrt(1.0 - a * a)  # z[0] is the stationary draw
    return lfilter([1.0], [1.0, -a], z).reshape(n_s, n_b)


@lru_cache(maxsize=8)
def _generate(
    calendar: TradingCalendar, end: date, seed: int, cal: BarCalibration, quirks: bool, edge: PlantedEdge = NO_EDGE
) -> pl.DataFrame:
    anchor = calendar.instrument.calendar_start
    sessions = calendar.sessions(anchor, end)
    n_s, n_b = len(sessions), calendar.bars_per_session
    if n_s == 0:
        return _empty_raw()

    # volatility clustering: AR(1) log-vol per session
    eta = _stream(seed, "vol").standard_normal(n_s)
    phi, s = cal.vol_persistence, cal.vol_of_vol
    h = np.empty(n_s)
    h[0] = s * eta[0]
    for d in range(1, n_s):
        h[d] = phi * h[d - 1] + math.sqrt(1 - phi * phi) * s * eta[d]
    sigma = cal.bar_vol * np.exp(h - s * s)

    # fat-tailed unit-variance innovations
    t = _stream(seed, "ret").standard_t(cal.tail_dof, size=(n_s, n_b)) / math.sqrt(cal.tail_dof / (cal.tail_dof - 2))
    r = sigma[:, None] * t + _drift(seed, cal, edge, n_s, n_b)
    gaps = cal.overnight_vol * _stream(seed, "gap").standard_normal(n_s)

    # mean-reverting session opens around ln(level)
    m = math.log(cal.level)
    kappa = (cal.overnight_vol**2 + n_b * cal.bar_vol**2) / (2 * cal.level_sd**2)
    session_sum = r.sum(axis=1)
    x_open = np.empty(n_s)
    x_close_prev = m
    for d in range(n_s):
        x_open[d] = x_close_prev - kappa * (x_close_prev - m) + gaps[d]
        x_close_prev = x_open[d] + session_sum[d]
    x = x_open[:, None] + np.cumsum(r, axis=1)
    close = np.exp(x)
    open_ = np.concatenate([np.exp(x_open)[:, None], close[:, :-1]], axis=1)

    # candles: most bars close-only, the rest with a small range around open/close
    u_co = _stream(seed, "candle").random((n_s, n_b))
    wick = np.abs(_stream(seed, "wick").standard_normal((n_s, n_b, 2))) * cal.candle_range / 2
    close_only = u_co < cal.close_only_share
    open_ = np.where(close_only, close, open_)
    high = np.where(close_only, close, np.maximum(open_, close) * np.exp(wick[..., 0]))
    low = np.where(close_only, close, np.minimum(open_, close) * np.exp(-wick[..., 1]))

    keep = np.ones((n_s, n_b), dtype=bool)
    backfill_rows: list[tuple[int, int, int]] = []  # (session, first bar, last bar + 1)
    if quirks:
        _stale_runs(seed, cal, open_, high, low, close)
        _missing(seed, cal, keep)
        backfill_rows = _backfill(seed, cal, keep)

    opens_utc = np.array([_utc_us(calendar.session_open_utc(d)) for d in sessions])
    times = opens_utc[:, None] + _grid_offsets(calendar)[None, :]
    frames = [_raw_frame(times[keep], open_[keep], high[keep], low[keep], close[keep], SOURCE_LABEL)]
    if backfill_rows:
        # Bogota wall-clock time labelled as UTC: the UTC instant minus the UTC offset (-5 h -> -5 h).
        offset = calendar.session_open_utc(sessions[0]).astimezone(calendar.tz).utcoffset()
        shift = np.timedelta64(int(offset.total_seconds() * 1_000_000), "us") if offset else np.timedelta64(0, "us")
        idx = np.zeros((n_s, n_b), dtype=bool)
        for d, a, b in backfill_rows:
            idx[d, a:b] = True
        frames.append(_raw_frame(times[idx] + shift, open_[idx], high[idx], low[idx], close[idx], BACKFILL_LABEL))
    if quirks:
        frames.append(_holiday_bars(seed, calendar, cal, anchor, end, sessions, close))
    return pl.concat(frames, how="vertical").sort("time", "source")


def _stale_runs(seed: int, cal: BarCalibration, *prices: np.ndarray) -> None:
    n_s, n_b = prices[0].shape
    hit = _stream(seed, "stale_hit").random(n_s) < cal.stale_session_share
    extra = _stream(seed, "stale_len").geometric(1.0 / (1.0 + cal.stale_run_mean_extra), n_s) - 1
    length = np.minimum(n_b, cal.stale_run_min + extra)
    start = (_stream(seed, "stale_start").random(n_s) * (n_b - length + 1)).astype(int)
    for d in np.nonzero(hit)[0]:
        a, b = start[d], start[d] + length[d]
        frozen = prices[-1][d, a]  # the close at the start of the run: the feed stopped updating
        for p in prices:
            p[d, a:b] = frozen


def _missing(seed: int, cal: BarCalibration, keep: np.ndarray) -> None:
    n_s, n_b = keep.shape
    u_sess = _stream(seed, "missing_session").random(n_s)
    u_inc = _stream(seed, "missing_block").random(n_s)
    z = _stream(seed, "missing_size").standard_normal(n_s)
    size = np.clip(np.ceil(cal.missing_block_median * np.exp(cal.missing_block_log_sd * z)), 1, n_b - 1)
    start = (_stream(seed, "missing_start").random(n_s) * (n_b - size + 1)).astype(int)
    for d in range(n_s):
        if u_sess[d] < cal.missing_session_share:
            keep[d, :] = False
        elif u_inc[d] < cal.incomplete_session_share:
            keep[d, start[d] : start[d] + int(size[d])] = False


def _backfill(seed: int, cal: BarCalibration, keep: np.ndarray) -> list[tuple[int, int, int]]:
    n_s, n_b = keep.shape
    hit = _stream(seed, "backfill_hit").random(n_s)
    fill = _stream(seed, "backfill_fill").random(n_s)
    length = 1 + (_stream(seed, "backfill_len").random(n_s) * n_b).astype(int)
    start = (_stream(seed, "backfill_start").random(n_s) * (n_b - length + 1)).astype(int)
    out = []
    for d in np.nonzero(hit < cal.backfill_session_share)[0]:
        if not keep[d].any():
            continue
        a, b = int(start[d]), int(start[d] + length[d])
        if fill[d] < cal.backfill_fill_share:
            keep[d, a:b] = False  # only the mislabelled copies exist: the repair fills the gap
        out.append((int(d), a, b))
    return out


def _holiday_bars(
    seed: int, calendar: TradingCalendar, cal: BarCalibration, anchor: date, end: date,
    sessions: list[date], close: np.ndarray,
) -> pl.DataFrame:
    holidays = calendar.excluded_dates(anchor, end)
    if not holidays:
        return _empty_raw()
    u = _stream(seed, "holiday_hit").random(len(holidays))
    noise = _stream(seed, "holiday_noise").standard_normal((len(holidays), calendar.bars_per_session))
    sess = np.array(sessions, dtype="datetime64[D]")
    frames = []
    for i, hday in enumerate(holidays):
        if u[i] >= cal.holiday_bar_share:
            continue
        prev = int(np.searchsorted(sess, np.datetime64(hday, "D"))) - 1
        level = close[max(prev, 0), -1]
        c = level * np.exp(noise[i] * cal.holiday_range / 4)
        times = _utc_us(calendar.session_open_utc(hday)) + _grid_offsets(calendar)
        frames.append(_raw_frame(times, c, c * np.exp(cal.holiday_range / 2), c * np.exp(-cal.holiday_range / 2), c, SOURCE_LABEL))
    return pl.concat(frames, how="vertical") if frames else _empty_raw()


def _raw_frame(times: np.ndarray, o: np.ndarray, h: np.ndarray, l: np.ndarray, c: np.ndarray, source: str) -> pl.DataFrame:  # noqa: E741
    return pl.DataFrame(
        {
            "time": pl.Series(times.astype("datetime64[us]")).dt.replace_time_zone("UTC"),
            "open": o.astype(np.float64),
            "high": h.astype(np.float64),
            "low": l.astype(np.float64),
            "close": c.astype(np.float64),
            "volume": np.zeros(len(times)),
            "source": [source] * len(times),
        }
    )


def _empty_raw() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"time": UTC_TIME, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
                "close": pl.Float64, "volume": pl.Float64, "source": pl.Utf8}
    )


# ---- macro ---------------------------------------------------------------------------------------
def synthetic_macro(
    ssot: MacroSSOT,
    anchor: date,
    start: date,
    end: date,
    seed: int,
    calibration: MacroCalibration | None = None,
) -> pl.DataFrame:
    """Wide daily frame (date + each SSOT variable's source column) for weekdays in [start, end].

    Series start at `anchor` (fixed by the caller) so a date's values never depend on the range.
    """
    cal = calibration or MacroCalibration()
    days = np.arange(np.datetime64(anchor, "D"), np.datetime64(end, "D") + 1)
    days = days[np.is_busday(days)]
    cols: dict[str, np.ndarray] = {}
    for vid, var in ssot.variables.items():
        lo, hi = var.expected_range
        c = cal.for_variable(vid, lo, hi, var.max_daily_jump_pct)
        eps = _stream(seed, f"macro:{vid}").standard_normal(days.size)
        missing = _stream(seed, f"macro_missing:{vid}").random(days.size) < cal.missing_weekday_share
        m = math.log(c.level)
        k = c.daily_vol**2 / (2 * c.level_sd**2)  # OU: stationary sd = daily_vol / sqrt(2k)
        x = np.empty(days.size)
        prev = m
        for i in range(days.size):
            prev = prev - k * (prev - m) + c.daily_vol * eps[i]
            x[i] = prev
        margin = cal.range_margin * (hi - lo)
        vals = np.clip(np.exp(x), lo + margin, hi - margin)
        vals[missing] = np.nan
        cols[var.column] = vals
    frame = pl.DataFrame({"date": days.astype("datetime64[D]"), **cols}).with_columns(pl.col("date").cast(pl.Date))
    frame = frame.with_columns([pl.col(c).fill_nan(None) for c in cols])
    return frame.filter((pl.col("date") >= start) & (pl.col("date") <= end))


# ---- calibration statistics (the same function measures real and synthetic data) ---------------
def calibration_stats(bars: pl.DataFrame, calendar: TradingCalendar) -> dict[str, float]:
    """Facts of published bars (BAR_SCHEMA): median close, per-bar sd and robust vol of
    within-session log returns, overnight gap sd, share of incomplete sessions, share of close-only
    bars, and volatility clustering = rank autocorrelation (lag 1 and 20) of session log median |r|."""
    df = bars.sort("time").with_columns(calendar.session_expr().alias("_d"))
    df = df.with_columns((pl.col("close").log() - pl.col("close").log().shift(1)).over("_d").alias("_r"))
    r = df["_r"].drop_nulls().to_numpy()
    per = df.group_by("_d").agg(
        pl.len().alias("n"),
        pl.col("close").first().alias("c0"),
        pl.col("close").last().alias("c1"),
        pl.col("_r").abs().median().alias("mv"),
    ).sort("_d")
    gaps = np.log(per["c0"].to_numpy()[1:] / per["c1"].to_numpy()[:-1])
    mv = per.filter(pl.col("n") >= calendar.bars_per_session // 2)["mv"].to_numpy()
    lmv = np.log(mv + LOG_FLOOR)

    def rank_ac(x: np.ndarray, lag: int) -> float:
        ranks = np.argsort(np.argsort(x)).astype(float)
        return float(np.corrcoef(ranks[lag:], ranks[:-lag])[0, 1])

    close_only = (
        (df["open"] == df["high"]) & (df["high"] == df["low"]) & (df["low"] == df["close"])
    ).mean()
    return {
        "median_close": float(df["close"].median()),  # type: ignore[arg-type]
        "bar_vol": float(r.std()),
        "robust_bar_vol": float(MAD_TO_SD * np.median(np.abs(r - np.median(r)))),
        "overnight_vol": float(gaps.std()),
        "incomplete_share": float((per["n"] < calendar.bars_per_session).mean()),
        "close_only_share": float(close_only),  # type: ignore[arg-type]
        "vol_cluster_ac1": rank_ac(lmv, 1),
        "vol_cluster_ac20": rank_ac(lmv, 20),
    }

"""Pure data-quality rules: row-level rules (quarantine), per-session and per-variable metrics.

This is the fast, dependency-free implementation used everywhere, including the live path. The
Great Expectations suites in adapters/expectations.py assert the same properties on the
batch path, reading the derived columns built here (`bar_gate_frame`, `macro_gate_frame`).

Bars (thresholds from config/quality.yaml, `BarQuality`):
- missing_price       any of open/high/low/close is null or NaN
- non_positive_price  any price <= 0
- high_below_low      high < low
- ohlc_inconsistent   not (low <= min(open, close) and max(open, close) <= high)
- price_out_of_band   any price outside `price_band`
- spike               a one-bar close move that reverts (see `spike_mask`)

Macro (thresholds from config/macro_variables_ssot.yaml, `MacroVariable` and `MacroRules`; see
`flag_series`):
- out_of_range        value outside the variable's `expected_range`
- out_of_band         value outside its historical (rolling quantile) band: a slow slide
- jump                a move vs the last accepted value beyond the volatility-aware limit (a bad print)
- level_break         a later value of a run of jumps that agree with each other; the run's
                      `level_confirm_values`-th value re-accepts the new level.
Flagged macro values stay in the frame (flagged=True, flag_reason) and out of features.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import polars as pl

from usdcop_platform.contracts.macro import MacroRules, MacroSSOT, MacroVariable
from usdcop_platform.contracts.quality import BarQuality
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.schema import QUARANTINE_SCHEMA

PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

BAR_RULES: tuple[str, ...] = (
    "missing_price",
    "non_positive_price",
    "high_below_low",
    "ohlc_inconsistent",
    "price_out_of_band",
    "spike",
)
# Rules applied by clean_bars before the row rules; listed so every quarantine reason has one home.
CONFLICTING_DUPLICATE = "conflicting_duplicate"
MACRO_RULES: tuple[str, ...] = ("out_of_range", "out_of_band", "jump", "level_break")
# Per-value columns flag_macro adds besides flagged/flag_reason (kept in MacroResult.detail for the gates).
MACRO_FLAG_COLUMNS: tuple[str, ...] = ("jump_pct", "jump_limit_pct", "band_lo", "band_hi")

# Column names of the derived (gate) frames.
SESSION_COL = "session"
GRID_INDEX_COL = "grid_index"
SESSION_DAY_COL = "is_session_day"
MOVE_COL = "move_pct"
SPIKE_COL = "spike_pct"


# ---- the session grid, vectorized: TradingCalendar.grid_index_expr / session_expr -----------------------
def session_dates(calendar: TradingCalendar, dates: pl.Series) -> list[date]:
    """Sessions between the smallest and largest date of `dates` (for vectorized membership)."""
    d = dates.drop_nulls()
    if d.is_empty():
        return []
    return calendar.sessions(d.min(), d.max())  # type: ignore[arg-type]


# ---- quarantine rows ---------------------------------------------------------------------------
def quarantine_frame(
    rows: pl.DataFrame,
    *,
    dataset: str,
    partition: pl.Expr,
    rule: pl.Expr | str,
    field: pl.Expr | str,
    value: pl.Expr,
    row_columns: Sequence[str],
    detected_at: datetime | None = None,
) -> pl.DataFrame:
    """Rows in QUARANTINE_SCHEMA: the rule, the offending field and value, and the row as JSON."""
    if rows.is_empty():
        return pl.DataFrame(schema=QUARANTINE_SCHEMA)
    rows = rows.rechunk()  # polars 2.1 string kernels can panic on multi-chunk filtered columns
    when = detected_at or datetime.now(timezone.utc)

    def as_text(c: str) -> pl.Expr:
        dtype = rows.schema[c]
        if isinstance(dtype, pl.Datetime):
            return pl.col(c).dt.to_string("%Y-%m-%dT%H:%M:%S%z").alias(c)
        if isinstance(dtype, pl.Date):
            return pl.col(c).dt.to_string("%Y-%m-%d").alias(c)
        return pl.col(c)

    out = rows.with_columns(
        pl.lit(dataset).alias("dataset"),
        partition.cast(pl.Utf8).alias("partition"),
        (pl.lit(rule) if isinstance(rule, str) else rule).cast(pl.Utf8).alias("rule"),
        (pl.lit(field) if isinstance(field, str) else field).cast(pl.Utf8).alias("field"),
        value.cast(pl.Utf8).alias("value"),
        pl.struct([as_text(c) for c in row_columns]).struct.json_encode().alias("row"),
        pl.lit(when).cast(QUARANTINE_SCHEMA["detected_at"]).alias("detected_at"),
    )
    return out.select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()])


def text(*parts: str | pl.Expr) -> pl.Expr:
    """Concatenate literals and columns into one string (null-safe: nulls print as 'null')."""
    return pl.concat_str(
        [pl.lit(p) if isinstance(p, str) else p.cast(pl.Utf8).fill_null("null") for p in parts]
    )


# ---- bar row rules -----------------------------------------------------------------------------
# The row-local rules in priority order (a row is reported under the first that fails); `spike`,
# the one rule that looks at other rows, is spike_mask's.
STATIC_BAR_RULES: tuple[str, ...] = BAR_RULES[:5]
_PRICE_RULES = frozenset({"missing_price", "non_positive_price", "price_out_of_band"})  # field: the first such price


@dataclass(frozen=True)
class _Ops:
    """The elementary operations the row rules are written in: numpy's over a frame's columns,
    Python's over one bar's four floats (numpy's per-scalar dispatch cost ~40 us a bar, Python's
    ~3 us). min/max differ from numpy's on NaN, but a NaN price is missing_price, the first rule."""

    isnan: Any
    minimum: Any
    maximum: Any
    any_of: Any  # OR over a list of masks


_ARRAY_OPS = _Ops(np.isnan, np.minimum, np.maximum, np.logical_or.reduce)
_SCALAR_OPS = _Ops(math.isnan, min, max, any)


def _rule_masks(prices: list[Any], lo: float, hi: float, ops: _Ops) -> tuple[list[Any], dict[str, list[Any]]]:
    """The row rules, written once: per rule of STATIC_BAR_RULES whether a row fails it, and for
    the rules about any one price, per price column."""
    o, h, low, c = prices
    per_price = {  # per price column, for the rules about any one price
        "missing_price": [ops.isnan(x) for x in prices],
        "non_positive_price": [x <= 0 for x in prices],
        "price_out_of_band": [(x < lo) | (x > hi) for x in prices],
    }
    per_row = {"high_below_low": h < low, "ohlc_inconsistent": (low > ops.minimum(o, c)) | (h < ops.maximum(o, c))}
    return [ops.any_of(per_price[r]) if r in per_price else per_row[r] for r in STATIC_BAR_RULES], per_price


def static_rule_codes(bars: pl.DataFrame | Mapping[str, Any], quality: BarQuality) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the index in STATIC_BAR_RULES of the first rule that fails (-1: none), and for the
    price rules the index in PRICE_COLUMNS of the first price that fails it (-1 otherwise).
    `bars`: a frame, or one bar as a mapping (the live path's bar; no frame is built for it).

    One set of rules (_rule_masks) for a whole export (numpy over the four price columns; null
    reads as NaN: both are missing) and for the one bar of the live path (Python floats), where
    a polars query's planning alone cost ~0.4 ms a bar."""
    lo, hi = (float(x) for x in quality.price_band)
    if not isinstance(bars, pl.DataFrame):
        prices = [math.nan if bars[c] is None else float(bars[c]) for c in PRICE_COLUMNS]
        failing, per_price = _rule_masks(prices, lo, hi, _SCALAR_OPS)
        code = next((i for i, f in enumerate(failing) if f), -1)
        rule = STATIC_BAR_RULES[code] if code >= 0 else None
        column = next((i for i, f in enumerate(per_price[rule]) if f), -1) if rule in per_price else -1
        return np.array([code], dtype=np.int64), np.array([column], dtype=np.int64)
    prices = [bars[c].to_numpy() for c in PRICE_COLUMNS]
    with np.errstate(invalid="ignore"):
        failing, per_price = _rule_masks(prices, lo, hi, _ARRAY_OPS)
    column = np.full(np.shape(prices[0]), -1, dtype=np.int64)
    if not any(f.any() for f in failing):
        return column.copy(), column
    codes = np.select(failing, range(len(STATIC_BAR_RULES)), -1)
    for rule, hits in per_price.items():
        rows = codes == STATIC_BAR_RULES.index(rule)
        column[rows] = np.select(hits, range(len(PRICE_COLUMNS)), -1)[rows]
    return codes, column


def any_static_violation(bars: pl.DataFrame | Mapping[str, Any], quality: BarQuality) -> bool:
    """Whether some row of `bars` fails a row-local rule."""
    return bool((static_rule_codes(bars, quality)[0] >= 0).any())


def bar_static_violations(bars: pl.DataFrame, quality: BarQuality) -> pl.DataFrame:
    """`bars` plus `_rule`, `_field`, `_value`: the first failing row-local rule (null when clean).
    The texts (polars' own number formatting, as every quarantine row has it) are built only when
    some row fails."""
    codes, column = static_rule_codes(bars, quality)
    if not (codes >= 0).any():
        return bars.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c) for c in ("_rule", "_field", "_value"))
    code, col = pl.col("_code"), pl.col("_column")
    first_price_name: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    first_price_value: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    for i, c in enumerate(PRICE_COLUMNS):
        first_price_name = pl.when(col == i).then(pl.lit(c)).otherwise(first_price_name)
        # as Float64, the type the price rules have always printed their value in (float32 prints shorter)
        first_price_value = pl.when(col == i).then(text(pl.col(c).cast(pl.Float64))).otherwise(first_price_value)
    o, h, low, c = (pl.col(x) for x in PRICE_COLUMNS)
    special = {  # the rules whose field and value are not "the first failing price"
        "high_below_low": (pl.lit("high"), text("high=", h, " low=", low)),
        "ohlc_inconsistent": (pl.lit("open/close"), text("o=", o, " h=", h, " l=", low, " c=", c)),
    }
    rule: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    field: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    value: pl.Expr = pl.lit(None, dtype=pl.Utf8)
    for i, name in enumerate(STATIC_BAR_RULES):
        f, v = (first_price_name, first_price_value) if name in _PRICE_RULES else special[name]
        rule = pl.when(code == i).then(pl.lit(name)).otherwise(rule)
        field = pl.when(code == i).then(f).otherwise(field)
        value = pl.when(code == i).then(v).otherwise(value)
    return (bars.with_columns(pl.Series("_code", codes, dtype=pl.Int8), pl.Series("_column", column, dtype=pl.Int8))
            .with_columns(rule.alias("_rule"), field.alias("_field"), value.alias("_value"))
            .drop("_code", "_column"))


def spike_mask(closes: np.ndarray, groups: np.ndarray, max_move_pct: float) -> np.ndarray:
    """True where a bar is a one-bar spike, walking each group (session) in time order.

    With a = the last accepted close of the session and r = |ln(C_t / a)|, bar t is a spike when
    r > L = ln(1 + max_move_pct/100) and the move is not confirmed: there is no next bar, or the
    next close returns within L of a (|ln(C_{t+1} / a)| <= L). A confirmed move (the next bar stays
    at the new level, e.g. a stale opening print followed by the real level) is accepted and
    becomes the new reference. Moves across sessions (overnight gaps) are never tested.
    Only sessions with a raw candidate move are walked, so the cost is ~O(n) vectorized.
    """
    n = closes.shape[0]
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    limit = math.log1p(max_move_pct / 100.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.abs(np.diff(np.log(closes)))
    same = groups[1:] == groups[:-1]
    candidates = np.nonzero(same & (raw > limit))[0] + 1
    if candidates.size == 0:
        return out
    starts = np.r_[0, np.nonzero(~same)[0] + 1]
    ends = np.r_[starts[1:], n]
    for seg in np.unique(np.searchsorted(starts, candidates, side="right") - 1):
        s, e = int(starts[seg]), int(ends[seg])
        ref = closes[s]
        for t in range(s + 1, e):
            if abs(math.log(closes[t] / ref)) <= limit:
                ref = closes[t]
            elif t + 1 < e and abs(math.log(closes[t + 1] / ref)) > limit:
                ref = closes[t]  # confirmed: the next bar stays at the new level
            else:
                out[t] = True
    return out


@dataclass(frozen=True)
class RuleResult:
    """Rows that pass, and the rows that failed with `_rule`, `_field`, `_value` columns."""

    kept: pl.DataFrame
    failed: pl.DataFrame


def apply_bar_rules(bars: pl.DataFrame, calendar: TradingCalendar, quality: BarQuality) -> RuleResult:
    """Apply every bar rule to time-sorted, de-duplicated bars (`time` UTC, OHLC Float64)."""
    flagged = bar_static_violations(bars, quality)
    static_bad = flagged.filter(pl.col("_rule").is_not_null())
    ok = flagged.filter(pl.col("_rule").is_null()).sort("time")
    groups = ok.select(calendar.session_expr().dt.epoch("d")).to_series().to_numpy()
    spikes = spike_mask(ok["close"].to_numpy(), groups, quality.max_one_bar_move_pct)
    ok = ok.with_columns(
        pl.Series("_spike", spikes),
    ).with_columns(
        pl.when(pl.col("_spike")).then(pl.lit("spike")).otherwise(pl.col("_rule")).alias("_rule"),
        pl.when(pl.col("_spike")).then(pl.lit("close")).otherwise(pl.col("_field")).alias("_field"),
        pl.when(pl.col("_spike")).then(pl.col("close").cast(pl.Utf8)).otherwise(pl.col("_value")).alias("_value"),
    ).drop("_spike")
    failed = pl.concat([static_bad, ok.filter(pl.col("_rule").is_not_null())], how="vertical")
    kept = ok.filter(pl.col("_rule").is_null()).drop("_rule", "_field", "_value")
    return RuleResult(kept=kept, failed=failed)


# ---- per-bar derived columns for the gates -----------------------------------------------------
def bar_gate_frame(bars: pl.DataFrame, calendar: TradingCalendar, quality: BarQuality) -> pl.DataFrame:
    """Bars (any order) plus the derived columns the blocking gates assert on:

    session (YYYY-MM-DD), grid_index (null off-grid), is_session_day, move_pct = 100*|ln(C_t/C_{t-1})|
    within the session (0 for the first bar) and spike_pct = move_pct where the bar is a spike per
    `spike_mask`, else 0. The gate expects spike_pct <= max_one_bar_move_pct.
    """
    df = bars.sort("time").with_columns(
        calendar.session_expr().alias("_d"),
        calendar.grid_index_expr().alias(GRID_INDEX_COL),
    )
    sessions = session_dates(calendar, df["_d"])
    df = df.with_columns(
        pl.col("_d").dt.to_string("%Y-%m-%d").alias(SESSION_COL),
        pl.col("_d").is_in(sessions).alias(SESSION_DAY_COL),
        ((pl.col("close").log() - pl.col("close").log().shift(1)).over("_d").abs() * 100.0)
        .fill_null(0.0)
        .alias(MOVE_COL),
    )
    groups = df["_d"].dt.epoch("d").to_numpy()
    closes = df["close"].to_numpy()
    # Spike detection compares with the last accepted close; report the move from the previous bar.
    mask = spike_mask(closes, groups, quality.max_one_bar_move_pct) if df.height else np.zeros(0, bool)
    return df.with_columns(
        pl.when(pl.Series(mask)).then(pl.col(MOVE_COL)).otherwise(0.0).alias(SPIKE_COL)
    ).drop("_d")


# ---- per-session metrics (warn-level checks) ---------------------------------------------------
def session_metrics(bars: pl.DataFrame, calendar: TradingCalendar, quality: BarQuality) -> pl.DataFrame:
    """One row per session present in `bars`:

    bars, completeness = bars / bars_per_session, missing_bars = bars_per_session - bars,
    gaps = number of runs of missing grid slots between the first and last bar plus the missing
    head/tail, max_stale_run = longest run of equal consecutive closes, large_moves = bars with a
    within-session close move > max_one_bar_move_pct (confirmed level moves, not spikes),
    first_bar / last_bar.
    """
    n_grid = calendar.bars_per_session
    limit = math.log1p(quality.max_one_bar_move_pct / 100.0)
    df = bars.sort("time").with_columns(
        calendar.session_expr().alias("_d"),
        calendar.grid_index_expr().alias("_k"),
    )
    df = df.with_columns(
        (pl.col("close") != pl.col("close").shift(1)).over("_d").fill_null(True).cum_sum().alias("_run"),
        ((pl.col("close").log() - pl.col("close").log().shift(1)).over("_d").abs() > limit)
        .fill_null(False)
        .alias("_big"),
        (pl.col("_k") - pl.col("_k").shift(1).over("_d") - 1).fill_null(0).alias("_hole"),
    )
    runs = df.group_by("_d", "_run").agg(pl.len().alias("_len")).group_by("_d").agg(
        pl.col("_len").max().alias("max_stale_run")
    )
    per = df.group_by("_d").agg(
        pl.len().alias("bars"),
        (pl.col("_hole") > 0).sum().alias("_inner_gaps"),
        pl.col("_k").min().alias("_kmin"),
        pl.col("_k").max().alias("_kmax"),
        pl.col("_big").sum().alias("large_moves"),
        pl.col("time").min().alias("first_bar"),
        pl.col("time").max().alias("last_bar"),
    )
    out = per.join(runs, on="_d", how="left").with_columns(
        pl.col("_d").dt.to_string("%Y-%m-%d").alias(SESSION_COL),
        (pl.col("bars") / n_grid).alias("completeness"),
        (n_grid - pl.col("bars")).cast(pl.Int64).alias("missing_bars"),
        (
            pl.col("_inner_gaps")
            + (pl.col("_kmin") > 0).cast(pl.UInt32)
            + (pl.col("_kmax") < n_grid - 1).cast(pl.UInt32)
        ).cast(pl.Int64).alias("gaps"),
    )
    return out.sort("_d").select(
        SESSION_COL, pl.col("bars").cast(pl.Int64), "completeness", "missing_bars", "gaps",
        pl.col("max_stale_run").cast(pl.Int64), pl.col("large_moves").cast(pl.Int64), "first_bar", "last_bar",
    )


# ---- macro flags -------------------------------------------------------------------------------
def _pct(v: float, ref: float) -> float:
    """|v / ref - 1| in percent (inf for a move away from 0)."""
    if ref == 0:
        return 0.0 if v == 0 else math.inf
    return abs(v / ref - 1) * 100


class _Band:
    """The historical band of one variable's accepted values, in log space (levels move in
    proportion: a spread doubling in a crisis is as plausible at 200 as at 600), so only for
    positive series: [q_lo * e^(-m*w), q_hi * e^(m*w)], w = ln(q_hi / q_lo), over the last
    `band_window` accepted values (quantiles q, 1-q), unbounded until `band_min_history` are known.

    Built from accepted values only, so a slide cannot drag the band along with it. A slide that
    lasts `band_confirm_values` values is a new regime: its last value is accepted and the band's
    history restarts from it (an operator can accept it sooner), so the band never blinds forever."""

    def __init__(self, rules: MacroRules, margin: float, enabled: bool) -> None:
        self.rules, self.margin, self.enabled = rules, margin, enabled
        self.window: deque[float] = deque()
        self.sorted: list[float] = []

    def _q(self, q: float) -> float:
        pos = q * (len(self.sorted) - 1)
        k = int(pos)
        nxt = self.sorted[min(k + 1, len(self.sorted) - 1)]
        return self.sorted[k] + (pos - k) * (nxt - self.sorted[k])

    def limits(self) -> tuple[float, float]:
        if not self.enabled or len(self.sorted) < self.rules.band_min_history:
            return -math.inf, math.inf
        q_lo, q_hi = self._q(self.rules.band_quantile), self._q(1 - self.rules.band_quantile)
        width = q_hi - q_lo
        return math.exp(q_lo - self.margin * width), math.exp(q_hi + self.margin * width)

    def accept(self, v: float) -> None:
        if not self.enabled or v <= 0:
            return
        x = math.log(v)
        self.window.append(x)
        bisect.insort(self.sorted, x)
        if len(self.window) > self.rules.band_window:
            old = self.window.popleft()
            del self.sorted[bisect.bisect_left(self.sorted, old)]

    def restart(self, v: float) -> None:
        self.window.clear()
        self.sorted.clear()
        self.accept(v)


@dataclass(frozen=True)
class MacroFlags:
    """Per value of one variable (date order): the reason (None = accepted), the move (%) vs the
    value it was judged against, the jump limit (%) in force, and the historical band."""

    reasons: list[str | None]
    jump_pct: np.ndarray
    jump_limit_pct: np.ndarray
    band_lo: np.ndarray
    band_hi: np.ndarray


def flag_series(
    values: np.ndarray, var: MacroVariable, rules: MacroRules, accepted: np.ndarray | None = None,
) -> MacroFlags:
    """The macro rules on one variable's values in date order. Causal: a value's flag depends only on
    itself and earlier values, so batch (whole history) and live (one more value) flag alike.

    - out_of_range: outside the variable's hard `expected_range`.
    - out_of_band:  outside the historical band of accepted values (`_Band`): a slow slide that no
                    single jump shows. Only for series whose expected_range is positive. The
                    `band_confirm_values`-th consecutive out-of-band value is accepted (new regime).
    - jump:         |v / a - 1| > limit, a = the last accepted value, limit = max(max_daily_jump_pct,
                    jump_vol_k * std of the last jump_vol_window accepted % moves): a crisis move
                    within k sigmas of recent volatility is kept.
    - level_break:  a later value of a run of rejected jumps, each within the limit of the one before
                    (the series moved and stays). At the `level_confirm_values`-th value of the run
                    the new level is confirmed: that value is accepted and becomes the reference.

    `accepted` (bool per value): values an operator accepted (an audited API call). One inside the
    hard range is accepted whatever the jump or band says, becomes the reference, and when it was
    outside the band restarts the band from it.
    """
    n = values.shape[0]
    lo, hi = var.expected_range
    band = _Band(rules, rules.band_margin if var.band_margin is None else var.band_margin, enabled=lo > 0)
    reasons: list[str | None] = [None] * n
    jumps = np.zeros(n)
    limits = np.full(n, var.max_daily_jump_pct)
    band_lo = np.full(n, -np.inf)
    band_hi = np.full(n, np.inf)
    moves: deque[float] = deque(maxlen=rules.jump_vol_window)  # signed % moves between accepted values
    last_ok: float | None = None
    run: list[float] = []  # consecutive rejected jumps near each other: a candidate new level
    outside = 0  # consecutive out-of-band values: a candidate new regime
    for i, v in enumerate(values.tolist()):
        if len(moves) == rules.jump_vol_window:
            limits[i] = max(var.max_daily_jump_pct, rules.jump_vol_k * float(np.std(moves)))
        limit = limits[i]
        band_lo[i], band_hi[i] = band.limits()
        reason: str | None = None
        ref = last_ok
        if not lo <= v <= hi:
            reason, run = "out_of_range", []
        elif accepted is not None and accepted[i]:
            if not band_lo[i] <= v <= band_hi[i]:
                band.restart(v)
                last_ok, run, outside = v, [], 0
                continue
        elif not band_lo[i] <= v <= band_hi[i]:
            outside, run = outside + 1, []
            if outside < rules.band_confirm_values:
                reason = "out_of_band"
            else:  # a lasting regime: accepted, the band restarts from it
                band.restart(v)
                last_ok, outside = v, 0
                continue
        elif last_ok is not None and (jump := _pct(v, last_ok)) > limit:
            jumps[i] = jump
            run = run + [v] if run and _pct(v, run[-1]) <= limit else [v]
            if len(run) < rules.level_confirm_values:
                reason = "jump" if len(run) == 1 else "level_break"
            else:  # confirmed: judged against the run's previous value, the new level's reference
                ref = run[-2]
        reasons[i] = reason
        if reason is None:
            if ref is not None:
                jumps[i] = _pct(v, ref)
                moves.append((v / ref - 1) * 100 if ref else 0.0)
            band.accept(v)
            last_ok, run, outside = v, [], 0
    return MacroFlags(reasons, jumps, limits, band_lo, band_hi)


def flag_macro(long: pl.DataFrame, ssot: MacroSSOT, accepted: pl.DataFrame | None = None) -> pl.DataFrame:
    """Add `flagged`, `flag_reason`, `jump_pct` (the move vs the value it was judged against),
    `jump_limit_pct` (the limit in force) and `band_lo`/`band_hi` (the historical band) to a long
    macro frame (date, variable, value, available_date). Variables not in the SSOT are rejected.
    `accepted` (variable, date): values an operator re-accepted (see flag_series)."""
    unknown = set(long["variable"].unique().to_list()) - set(ssot.variables)
    if unknown:
        raise ValueError(f"macro variables not in the SSOT: {sorted(unknown)}")
    long = long.sort("variable", "date")
    if accepted is None or accepted.is_empty():
        is_ok = np.zeros(long.height, dtype=bool)
    else:
        keys = accepted.select("variable", pl.col("date").cast(pl.Date)).to_struct().implode()
        is_ok = long.select(pl.struct("variable", "date").is_in(keys)).to_series().to_numpy()
    reasons: list[str | None] = []
    parts: list[MacroFlags] = []
    for vid in long["variable"].unique(maintain_order=True).to_list():
        mask = (long["variable"] == vid).to_numpy()
        vals = long["value"].to_numpy()[mask]
        flags = flag_series(vals, ssot.variables[vid], ssot.rules, is_ok[mask])
        reasons.extend(flags.reasons)
        parts.append(flags)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0)

    return long.with_columns(
        pl.Series("flag_reason", reasons, dtype=pl.Utf8),
        *[pl.Series(c, cat(c), dtype=pl.Float64) for c in MACRO_FLAG_COLUMNS],
    ).with_columns(pl.col("flag_reason").is_not_null().alias("flagged"))


def macro_gate_frame(flagged: pl.DataFrame, ssot: MacroSSOT) -> pl.DataFrame:
    """The flagged long frame plus each row's limits (range_lo, range_hi, and max_jump_pct = the jump
    limit in force for that value), so the gates can assert 'unflagged values are in range, in their
    band and within the jump limit' as column-pair expectations."""
    limits = pl.DataFrame(
        {
            "variable": list(ssot.variables),
            "range_lo": [v.expected_range[0] for v in ssot.variables.values()],
            "range_hi": [v.expected_range[1] for v in ssot.variables.values()],
        }
    )
    return flagged.join(limits, on="variable", how="left").with_columns(
        pl.col("jump_limit_pct").alias("max_jump_pct")
    )


def macro_staleness(long: pl.DataFrame, ssot: MacroSSOT, as_of: date | None = None) -> pl.DataFrame:
    """Per SSOT variable: observations, first/last date, the longest gap between consecutive
    (accepted) observations in business days (Mon-Fri) and the business days from the last one
    to `as_of`. A gap longer than `max_ffill_business_days` cannot be closed by the forward fill."""
    rows = []
    ok = long.filter(~pl.col("flagged")) if "flagged" in long.columns else long
    for vid, var in ssot.variables.items():
        d = ok.filter(pl.col("variable") == vid)["date"].sort().to_numpy().astype("datetime64[D]")
        if d.size == 0:
            rows.append((vid, 0, None, None, None, None, var.max_ffill_business_days))
            continue
        gaps = np.busday_count(d[:-1], d[1:]) - 1 if d.size > 1 else np.zeros(0, dtype=np.int64)
        max_gap = int(gaps.max()) if gaps.size else 0
        since = int(np.busday_count(d[-1], np.datetime64(as_of, "D"))) if as_of else None
        rows.append((vid, int(d.size), d[0].item(), d[-1].item(), max_gap, since, var.max_ffill_business_days))
    return pl.DataFrame(
        rows,
        schema={
            "variable": pl.Utf8,
            "observations": pl.Int64,
            "first_date": pl.Date,
            "last_date": pl.Date,
            "max_gap_business_days": pl.Int64,
            "business_days_since_last": pl.Int64,
            "max_ffill_business_days": pl.Int64,
        },
        orient="row",
    )

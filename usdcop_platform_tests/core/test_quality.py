"""core.quality: the vectorized grid, spike detection, session metrics, macro flags and staleness."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from usdcop_platform.core.quality import (
    PRICE_COLUMNS,
    any_static_violation,
    bar_gate_frame,
    bar_static_violations,
    flag_macro,
    macro_staleness,
    session_metrics,
    spike_mask,
    static_rule_codes,
    text,
)
from usdcop_platform_tests.core.test_cleaning import bars_frame, session_bars

UTC = timezone.utc


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2026, 12, 31)),
       st.sampled_from([0, 30, 60 * 5, 60 * 7]))
def test_grid_index_matches_the_calendar(calendar, naive, jitter_s):
    t = (naive.replace(second=0, microsecond=0) + timedelta(seconds=jitter_s)).replace(tzinfo=UTC)
    got = pl.DataFrame({"time": [t]}, schema={"time": pl.Datetime("us", "UTC")}).select(
        calendar.grid_index_expr()
    ).item()
    assert got == calendar.bar_index(t)


def test_grid_index_of_a_whole_session(calendar):
    df = pl.DataFrame({"time": calendar.session_grid_utc(date(2024, 3, 5))},
                      schema={"time": pl.Datetime("us", "UTC")})
    assert df.select(calendar.grid_index_expr()).to_series().to_list() == list(range(60))


def _mask(closes, groups=None, pct=3.0):
    c = np.asarray(closes, dtype=float)
    g = np.zeros(len(c), dtype=np.int64) if groups is None else np.asarray(groups)
    return spike_mask(c, g, pct).tolist()


def test_spike_mask_cases():
    assert _mask([100, 120, 100, 100]) == [False, True, False, False]  # reverting spike
    assert _mask([100, 120, 121, 121]) == [False, False, False, False]  # confirmed level move
    assert _mask([100, 100, 100, 120]) == [False, False, False, True]  # unconfirmed last bar
    assert _mask([100, 102, 104, 106]) == [False] * 4  # steady 2% moves
    assert _mask([100, 80, 100, 100]) == [False, True, False, False]  # downward spike
    assert _mask([100, 120, 100], groups=[0, 1, 1]) == [False, False, True]  # never across sessions
    assert _mask([100, 100.5, 100], pct=0.1) == [False, True, False]


def test_session_metrics_stale_runs_gaps_and_large_moves(calendar, platform_config):
    q = platform_config.quality.bars
    d = date(2024, 3, 5)
    times = calendar.session_grid_utc(d)
    closes = [3900.0 + i for i in range(60)]
    closes[10:25] = [closes[10]] * 15  # a stale run of 15 unchanged closes
    closes[40:] = [c * 1.05 for c in closes[40:]]  # a confirmed 5% move at bar 40
    keep = [i for i in range(60) if i not in (3, 4, 50)]  # two gaps
    df = bars_frame([times[i] for i in keep], [closes[i] for i in keep])
    m = session_metrics(df, calendar, q).row(0, named=True)
    assert m["session"] == "2024-03-05" and m["bars"] == 57
    assert m["max_stale_run"] == 15 and m["gaps"] == 2 and m["missing_bars"] == 3 and m["large_moves"] == 1
    assert m["first_bar"] == times[0] and m["last_bar"] == times[59]


def test_gate_frame_columns(calendar, platform_config):
    q = platform_config.quality.bars
    g = bar_gate_frame(session_bars(calendar), calendar, q)
    assert g["grid_index"].to_list() == list(range(60))
    assert g["is_session_day"].all() and set(g["session"]) == {"2024-03-05"}
    assert g["move_pct"][0] == 0.0 and g["spike_pct"].max() == 0.0


def _long(values: list[float | None], variable: str = "dxy") -> pl.DataFrame:
    d0 = date(2024, 1, 1)
    rows = [(d0 + timedelta(days=i), variable, v, d0 + timedelta(days=i + 1)) for i, v in enumerate(values) if v is not None]
    return pl.DataFrame(rows, schema={"date": pl.Date, "variable": pl.Utf8, "value": pl.Float64,
                                       "available_date": pl.Date}, orient="row")


def test_flag_macro_reasons(platform_config):
    ssot = platform_config.macro  # dxy: range [70, 130], max jump 3%, a new level confirmed by 3 values
    f = flag_macro(_long([100, 101, 150, 101, 110, 110.5, 110.2, 100.5]), ssot)
    # 110.2 is the 3rd value at the new level: accepted; 100.5 is then a jump from it
    assert f["flag_reason"].to_list() == [None, None, "out_of_range", None, "jump", "level_break", None, "jump"]
    assert f["flagged"].sum() == 4


def test_flag_macro_rejects_unknown_variables(platform_config):
    import pytest

    with pytest.raises(ValueError, match="not in the SSOT"):
        flag_macro(_long([1.0], variable="mystery"), platform_config.macro)


def test_macro_staleness(platform_config):
    ssot = platform_config.macro
    # dxy observed on Mon 1st, then not until Thu 11th: 7 business days missing in between
    df = _long([100, None, None, None, None, None, None, None, None, None, 100.5])
    flagged = flag_macro(df, ssot)
    s = macro_staleness(flagged, ssot, as_of=date(2024, 1, 15))
    row = s.filter(pl.col("variable") == "dxy").row(0, named=True)
    assert row["observations"] == 2 and row["max_gap_business_days"] == 7 and row["business_days_since_last"] == 2
    vix = s.filter(pl.col("variable") == "vix").row(0, named=True)
    assert vix["observations"] == 0 and vix["last_date"] is None


def _reference_static_violations(bars: pl.DataFrame, lo: float, hi: float) -> pl.DataFrame:
    """The row rules as polars expressions, written straight from their definitions (the module
    docstring): the oracle of the numpy implementation."""
    def first_price(pred):
        cond = pl.any_horizontal([pred(pl.col(c)) for c in PRICE_COLUMNS])
        name, val = pl.lit(None, dtype=pl.Utf8), pl.lit(None, dtype=pl.Float64)
        for c in reversed(PRICE_COLUMNS):
            name = pl.when(pred(pl.col(c))).then(pl.lit(c)).otherwise(name)
            val = pl.when(pred(pl.col(c))).then(pl.col(c)).otherwise(val)
        return cond, name, val

    o, h, low, c = (pl.col(x) for x in PRICE_COLUMNS)
    conditions = [
        ("missing_price", *first_price(lambda x: x.is_null() | x.is_nan())),
        ("non_positive_price", *first_price(lambda x: x <= 0)),
        ("high_below_low", h < low, pl.lit("high"), text("high=", h, " low=", low)),
        ("ohlc_inconsistent", (low > pl.min_horizontal(o, c)) | (h < pl.max_horizontal(o, c)), pl.lit("open/close"),
         text("o=", o, " h=", h, " l=", low, " c=", c)),
        ("price_out_of_band", *first_price(lambda x: (x < lo) | (x > hi))),
    ]
    rule = field = value = pl.lit(None, dtype=pl.Utf8)
    for name, cond, fld, val in reversed(conditions):
        rule = pl.when(cond).then(pl.lit(name)).otherwise(rule)
        field = pl.when(cond).then(fld).otherwise(field)
        value = pl.when(cond).then(val.cast(pl.Utf8).fill_null("null")).otherwise(value)
    return bars.with_columns(rule.alias("_rule"), field.alias("_field"), value.alias("_value"))


PRICES = st.one_of(st.none(), st.just(float("nan")), st.sampled_from([0.0, -1.0, 1e-9]),
                   st.floats(1000.0, 8000.0), st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(PRICES, PRICES, PRICES, PRICES), min_size=0, max_size=12), st.booleans())
def test_static_rules_equal_their_polars_definition(platform_config, rows, float32):
    """The numpy rules (rule, field and value text of the first failing rule) equal the rules
    written as polars expressions, on any prices: nulls, NaN, zero, negatives, the band's edges,
    inconsistent candles; Float64 and Float32 columns."""
    q = platform_config.quality.bars
    lo, hi = (float(x) for x in q.price_band)
    dtype = pl.Float32 if float32 else pl.Float64
    df = pl.DataFrame([{"time": datetime(2024, 3, 5, 13, 0, tzinfo=UTC) + timedelta(minutes=5 * i),
                        **dict(zip(PRICE_COLUMNS, r))} for i, r in enumerate(rows)],
                      schema={"time": pl.Datetime("us", "UTC"), **{c: dtype for c in PRICE_COLUMNS}})
    got = bar_static_violations(df, q)
    assert got.equals(_reference_static_violations(df, lo, hi), null_equal=True)
    assert any_static_violation(df, q) == (got["_rule"].null_count() < df.height)
    codes, columns = static_rule_codes(df, q)
    for i, row in enumerate(df.iter_rows(named=True)):  # one bar as a mapping: the live path's form
        if not float32:
            assert tuple(x[0] for x in static_rule_codes(row, q)) == (codes[i], columns[i])


def test_static_rules_at_the_band_edges(platform_config):
    q = platform_config.quality.bars
    lo, hi = (float(x) for x in q.price_band)
    df = pl.DataFrame({"open": [lo, hi, lo], "high": [hi, hi, hi], "low": [lo, lo, lo], "close": [lo, hi, hi + 1e-6]})
    got = bar_static_violations(df, q)
    assert got["_rule"].to_list() == [None, None, "ohlc_inconsistent"]  # close above high comes first
    assert _reference_static_violations(df, lo, hi).equals(got, null_equal=True)

"""core.cleaning: timezone repair, calendar drops, de-duplication, row rules, counts; macro flags."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from usdcop_platform.core.cleaning import (
    MACRO_FLAGGED_SCHEMA,
    CleaningError,
    clean_bars,
    clean_macro,
    merge_macro,
)
from usdcop_platform.core.quality import BAR_RULES, MACRO_RULES
from usdcop_platform.core.schema import BAR_SCHEMA, QUARANTINE_SCHEMA

UTC = timezone.utc
SESSION = date(2024, 3, 5)  # a Tuesday
HOLIDAY = date(2024, 3, 25)  # Colombian holiday (San José, moved to Monday)
BASE = 3_900.0


def grid(calendar, d: date) -> list[datetime]:
    return calendar.session_grid_utc(d)


def bars_frame(times: list[datetime], closes: list[float], *, ohlc: list[tuple[float, float, float]] | None = None,
               source: str = "vendor") -> pl.DataFrame:
    """Raw bars: close-only unless `ohlc` gives (open, high, low) per row."""
    o = [x[0] for x in ohlc] if ohlc else closes
    h = [x[1] for x in ohlc] if ohlc else closes
    low = [x[2] for x in ohlc] if ohlc else closes
    return pl.DataFrame(
        {"time": times, "open": o, "high": h, "low": low, "close": closes, "volume": [0.0] * len(times),
         "source": [source] * len(times)},
        schema={"time": pl.Datetime("us", "UTC"), "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
                "close": pl.Float64, "volume": pl.Float64, "source": pl.Utf8},
    )


def session_bars(calendar, d: date = SESSION, level: float = BASE, step: float = 0.5) -> pl.DataFrame:
    times = grid(calendar, d)
    return bars_frame(times, [level + step * i for i in range(len(times))])


def mislabel(df: pl.DataFrame, calendar) -> pl.DataFrame:
    """Bogota wall-clock labelled as UTC: the instant shifted by the UTC offset (-5 h)."""
    offset = calendar.session_open_utc(SESSION).astimezone(calendar.tz).utcoffset()
    return df.with_columns((pl.col("time") + offset).alias("time"), pl.lit("backfill").alias("source"))


def clean(raw, calendar, platform_config, **kw):
    return clean_bars(raw, calendar, platform_config.quality.bars, **kw)


def buckets_add_up(r) -> bool:
    rep = r.report
    return rep.raw_rows == (rep.bars_published + rep.off_session_dropped + rep.holiday_bars_dropped
                            + rep.duplicates_dropped + rep.quarantined)


# ---- bars: the happy path -------------------------------------------------------------------------
def test_clean_session_is_published_unchanged(calendar, platform_config):
    raw = session_bars(calendar)
    r = clean(raw, calendar, platform_config, expected_sessions=[SESSION])
    assert dict(r.bars.schema) == BAR_SCHEMA
    assert r.bars.height == 60 and r.report.sessions == 1 and r.report.incomplete_sessions == 0
    assert r.bars["close"].to_list() == raw["close"].to_list()
    assert r.report.first_bar == datetime(2024, 3, 5, 13, 0, tzinfo=UTC)
    assert r.report.last_bar == datetime(2024, 3, 5, 17, 55, tzinfo=UTC)
    assert r.report.sessions_missing == 0
    assert buckets_add_up(r)


def test_rows_are_sorted_and_other_columns_ignored(calendar, platform_config):
    raw = session_bars(calendar).reverse().with_columns(pl.lit("x").alias("extra"))
    r = clean(raw, calendar, platform_config)
    assert r.bars["time"].is_sorted() and r.bars.columns == list(BAR_SCHEMA)


def test_volume_defaults_to_zero_and_other_timezones_are_converted(calendar, platform_config):
    raw = session_bars(calendar).drop("volume").with_columns(pl.col("time").dt.convert_time_zone("America/Bogota"))
    r = clean(raw, calendar, platform_config)
    assert r.bars.height == 60 and r.bars["volume"].sum() == 0.0
    assert r.bars.schema["time"] == pl.Datetime("us", "UTC")


# ---- timezone repair ------------------------------------------------------------------------------
def test_mislabelled_bars_are_shifted_to_utc(calendar, platform_config):
    true = session_bars(calendar)
    raw = mislabel(true.slice(0, 20), calendar)  # only the backfill copy exists for these 20 bars
    raw = pl.concat([raw, true.slice(20)])
    r = clean(raw, calendar, platform_config)
    assert r.report.timezone_repaired == 20
    assert r.report.duplicates_dropped == 0
    assert r.bars.height == 60
    assert r.bars["time"].to_list() == grid(calendar, SESSION)
    assert r.repaired_by_session == {SESSION.isoformat(): 20}


def test_repaired_duplicates_of_true_utc_bars_are_dropped_keeping_the_true_row(calendar, platform_config):
    true = session_bars(calendar)
    # the backfill carries full candles with the same close; the live feed stored close-only ticks
    backfill = mislabel(true.slice(10, 15), calendar).with_columns(
        (pl.col("close") - 1).alias("open"), (pl.col("close") + 2).alias("high"), (pl.col("close") - 3).alias("low")
    )
    r = clean(pl.concat([backfill, true]), calendar, platform_config)
    assert r.report.timezone_repaired == 15
    assert r.report.duplicates_dropped == 15
    assert r.report.quarantined == 0
    assert r.bars.equals(true.select(list(BAR_SCHEMA)))  # the true-UTC rows won
    assert buckets_add_up(r)


def test_repaired_row_with_a_different_close_is_quarantined_not_kept(calendar, platform_config):
    true = session_bars(calendar)
    backfill = mislabel(true.slice(5, 1), calendar).with_columns((pl.col("close") * 1.01).alias("close"))
    r = clean(pl.concat([backfill, true]), calendar, platform_config)
    assert r.bars.equals(true.select(list(BAR_SCHEMA)))
    assert r.report.quarantine_by_rule == {"conflicting_duplicate": 1}
    assert buckets_add_up(r)


def test_repair_can_be_disabled(calendar, platform_config):
    raw = mislabel(session_bars(calendar).slice(0, 3), calendar)
    r = clean(raw, calendar, platform_config, repair_timezone=False)
    assert r.report.timezone_repaired == 0 and r.report.off_session_dropped == 3 and r.bars.height == 0


# ---- calendar -------------------------------------------------------------------------------------
def test_bar_at_0300_is_dropped_as_off_session(calendar, platform_config):
    good = session_bars(calendar)
    night = bars_frame([datetime(2024, 3, 5, 3, 0, tzinfo=UTC), datetime(2024, 3, 5, 8, 2, tzinfo=UTC)], [BASE, BASE])
    r = clean(pl.concat([good, night]), calendar, platform_config)
    assert r.report.off_session_dropped == 2
    assert r.bars.equals(good.select(list(BAR_SCHEMA)))


def test_holiday_and_weekend_bars_are_dropped_and_counted(calendar, platform_config):
    assert calendar.is_holiday(HOLIDAY)
    good = session_bars(calendar)
    holiday = session_bars(calendar, HOLIDAY)
    saturday = session_bars(calendar, date(2024, 3, 9)).slice(0, 4)
    r = clean(pl.concat([good, holiday, saturday]), calendar, platform_config)
    assert r.report.holiday_bars_dropped == 60
    assert r.report.off_session_dropped == 4
    assert r.bars.equals(good.select(list(BAR_SCHEMA)))
    assert buckets_add_up(r)


def test_misaligned_minute_is_off_session(calendar, platform_config):
    raw = bars_frame([datetime(2024, 3, 5, 13, 2, tzinfo=UTC), datetime(2024, 3, 5, 13, 5, 30, tzinfo=UTC)], [BASE, BASE])
    assert clean(raw, calendar, platform_config).report.off_session_dropped == 2


# ---- duplicates -----------------------------------------------------------------------------------
def test_identical_duplicates_collapse(calendar, platform_config):
    good = session_bars(calendar)
    r = clean(pl.concat([good, good.slice(0, 7)]), calendar, platform_config)
    assert r.report.duplicates_dropped == 7 and r.bars.height == 60 and r.report.quarantined == 0


def test_duplicate_timestamps_with_different_prices_are_all_quarantined(calendar, platform_config):
    good = session_bars(calendar)
    conflict = good.slice(30, 1).with_columns((pl.col("close") + 25).alias("close"),
                                               (pl.col("close") + 25).alias("high"),
                                               (pl.col("close") + 25).alias("open"),
                                               (pl.col("close") + 25).alias("low"))
    r = clean(pl.concat([good, conflict]), calendar, platform_config)
    assert r.report.quarantine_by_rule == {"conflicting_duplicate": 2}
    assert r.bars.height == 59
    assert grid(calendar, SESSION)[30] not in r.bars["time"].to_list()
    # good data untouched
    assert r.bars.equals(good.filter(pl.col("time") != grid(calendar, SESSION)[30]).select(list(BAR_SCHEMA)))
    q = r.quarantined
    assert dict(q.schema) == QUARANTINE_SCHEMA
    assert set(q["partition"]) == {SESSION.isoformat()} and set(q["rule"]) == {"conflicting_duplicate"}


# ---- row rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("patch", "rule"),
    [
        ({"close": 0.0, "open": 0.0, "high": 0.0, "low": 0.0}, "non_positive_price"),
        ({"low": -5.0}, "non_positive_price"),
        ({"high": BASE - 10, "low": BASE + 10}, "high_below_low"),
        ({"open": BASE + 50}, "ohlc_inconsistent"),
        ({"close": 9_000.0, "high": 9_000.0, "open": 9_000.0}, "price_out_of_band"),
        ({"close": float("nan")}, "missing_price"),
        ({"close": None}, "missing_price"),
    ],
)
def test_row_rule_failures_are_quarantined_and_good_rows_untouched(calendar, platform_config, patch, rule):
    good = session_bars(calendar, step=0.0)
    i = 17
    bad = good.with_row_index("_i").with_columns(
        [pl.when(pl.col("_i") == i).then(pl.lit(v, dtype=pl.Float64)).otherwise(pl.col(c)).alias(c) for c, v in patch.items()]
    ).drop("_i")
    r = clean(bad, calendar, platform_config)
    assert r.report.quarantine_by_rule == {rule: 1}
    assert r.bars.equals(good.filter(pl.int_range(pl.len()) != i).select(list(BAR_SCHEMA)))
    assert rule in BAR_RULES
    row = r.quarantined.row(0, named=True)
    assert row["rule"] == rule and row["partition"] == SESSION.isoformat() and row["value"]
    assert '"time":"2024-03-05T14:25:00+0000"' in row["row"]
    assert buckets_add_up(r)


def test_a_20pct_one_bar_spike_is_quarantined(calendar, platform_config):
    good = session_bars(calendar, step=0.0)
    spiked = good.with_columns(
        pl.when(pl.int_range(pl.len()) == 40).then(pl.col("close") * 1.2).otherwise(pl.col("close")).alias("close")
    ).with_columns(pl.col("close").alias("open"), pl.col("close").alias("high"), pl.col("close").alias("low"))
    r = clean(spiked, calendar, platform_config)
    assert r.report.quarantine_by_rule == {"spike": 1}
    assert r.bars.height == 59 and r.bars["close"].max() == BASE


def test_a_confirmed_level_move_is_kept(calendar, platform_config):
    """A stale opening print followed by the real level (the real 2020-03-09 session): not a spike."""
    closes = [BASE] + [BASE * 1.067] * 59
    raw = bars_frame(grid(calendar, SESSION), closes)
    r = clean(raw, calendar, platform_config)
    assert r.report.quarantined == 0 and r.bars.height == 60
    assert r.sessions["large_moves"].to_list() == [1]


def test_overnight_gap_is_not_a_spike(calendar, platform_config):
    day1 = session_bars(calendar, SESSION, step=0.0)
    day2 = session_bars(calendar, date(2024, 3, 6), level=BASE * 1.1, step=0.0)
    r = clean(pl.concat([day1, day2]), calendar, platform_config)
    assert r.report.quarantined == 0 and r.bars.height == 120


# ---- input errors ---------------------------------------------------------------------------------
def test_naive_timestamps_are_refused(calendar, platform_config):
    raw = session_bars(calendar).with_columns(pl.col("time").dt.replace_time_zone(None))
    with pytest.raises(CleaningError, match="naive"):
        clean(raw, calendar, platform_config)


def test_missing_columns_are_refused(calendar, platform_config):
    with pytest.raises(CleaningError, match="close"):
        clean(session_bars(calendar).drop("close"), calendar, platform_config)


def test_non_numeric_prices_are_refused(calendar, platform_config):
    raw = session_bars(calendar).with_columns(pl.col("open").cast(pl.Utf8))
    with pytest.raises(CleaningError, match="numeric"):
        clean(raw, calendar, platform_config)


def test_cleaning_is_deterministic(calendar, platform_config):
    raw = pl.concat([mislabel(session_bars(calendar).slice(0, 9), calendar), session_bars(calendar)])
    at = datetime(2024, 3, 6, tzinfo=UTC)
    a, b = clean(raw, calendar, platform_config, detected_at=at), clean(raw.reverse(), calendar, platform_config, detected_at=at)
    assert a.bars.equals(b.bars) and a.report == b.report


def test_incomplete_and_missing_sessions_are_counted(calendar, platform_config):
    partial = session_bars(calendar).slice(0, 45)
    r = clean(partial, calendar, platform_config, expected_sessions=[SESSION, date(2024, 3, 6)])
    assert r.report.incomplete_sessions == 1 and r.report.sessions_missing == 1 and r.report.sessions_expected == 2
    m = r.sessions.row(0, named=True)
    assert m["bars"] == 45 and m["missing_bars"] == 15 and m["gaps"] == 1 and m["completeness"] == 0.75


# ---- macro ----------------------------------------------------------------------------------------
def macro_wide(ssot, days: int = 20, overrides: dict[str, dict[int, float]] | None = None) -> pl.DataFrame:
    dates = [date(2024, 1, 1) + timedelta(days=i) for i in range(days)]
    levels = {"dxy": 103.0, "vix": 14.0, "embi_col": 300.0, "brent": 80.0, "ust10y": 4.0, "ust2y": 4.3, "usdmxn": 17.0}
    cols = {}
    for vid, v in ssot.variables.items():
        vals = [levels.get(vid, sum(v.expected_range) / 2) * (1 + 0.001 * (i % 3)) for i in range(days)]
        for i, x in (overrides or {}).get(vid, {}).items():
            vals[i] = x
        cols[v.column] = vals
    return pl.DataFrame({"date": dates, **cols})


def test_macro_long_frame_with_availability_dates(platform_config):
    ssot = platform_config.macro
    r = clean_macro(macro_wide(ssot), ssot)
    assert dict(r.frame.schema) == MACRO_FLAGGED_SCHEMA
    assert r.report.values == 20 * len(ssot.variables) and r.report.flagged == 0
    delays = {vid: v.publication_delay_days for vid, v in ssot.variables.items()}
    for row in r.frame.iter_rows(named=True):
        assert row["available_date"] == row["date"] + timedelta(days=delays[row["variable"]])
        assert row["available_date"] > row["date"]


def test_macro_out_of_range_value_is_flagged_and_others_untouched(platform_config):
    ssot = platform_config.macro
    clean_ref = clean_macro(macro_wide(ssot), ssot).frame
    r = clean_macro(macro_wide(ssot, overrides={"vix": {7: 250.0}}), ssot)
    bad = r.frame.filter(pl.col("flagged"))
    assert bad.select("variable", "flag_reason").rows() == [("vix", "out_of_range")]
    assert r.quarantined.height == 1 and r.quarantined["rule"][0] == "out_of_range"
    others = r.frame.filter(~pl.col("flagged"))
    assert others.equals(clean_ref.filter(~((pl.col("variable") == "vix") & (pl.col("date") == date(2024, 1, 8)))))


def test_macro_bad_print_is_a_jump_and_the_series_resumes(platform_config):
    ssot = platform_config.macro
    r = clean_macro(macro_wide(ssot, overrides={"dxy": {5: 103.0 * 1.2}}), ssot)
    flagged = r.frame.filter(pl.col("flagged"))
    assert flagged.select("variable", "date", "flag_reason").rows() == [("dxy", date(2024, 1, 6), "jump")]


def test_macro_level_break_is_flagged_until_confirmed(platform_config):
    ssot = platform_config.macro
    broken = {i: 4.0 * 100 for i in range(10, 20)}  # % -> bps: in range? no: caught as out_of_range
    r = clean_macro(macro_wide(ssot, overrides={"ust10y": broken}), ssot)
    assert set(r.frame.filter(pl.col("flagged"))["flag_reason"]) == {"out_of_range"}
    shifted = {i: 103.0 * 1.05 for i in range(10, 20)}  # a 5% level break in DXY (limit 3%)
    r = clean_macro(macro_wide(ssot, overrides={"dxy": shifted}), ssot)
    f = r.frame.filter(pl.col("variable") == "dxy").sort("date")["flag_reason"].to_list()
    # the 3rd value at the new level confirms it (level_confirm_values: 3): accepted from there on
    assert f[:10] == [None] * 10 and f[10:13] == ["jump", "level_break", None] and set(f[13:]) == {None}
    assert r.report.flagged_by_reason == {"jump": 1, "level_break": 1}
    assert set(r.report.flagged_by_reason) <= set(MACRO_RULES)


def test_macro_missing_columns_are_reported_or_refused(platform_config):
    ssot = platform_config.macro
    wide = macro_wide(ssot).drop(ssot.variables["dxy"].column)
    assert clean_macro(wide, ssot).report.variables_missing == ["dxy"]
    with pytest.raises(CleaningError, match="none of the SSOT columns"):
        clean_macro(pl.DataFrame({"date": [date(2024, 1, 1)], "other": [1.0]}), ssot)
    with pytest.raises(CleaningError, match="date"):
        clean_macro(macro_wide(ssot).rename({"date": "fecha"}), ssot)


def test_macro_merge_is_keyed_and_new_values_win(platform_config):
    ssot = platform_config.macro
    first = clean_macro(macro_wide(ssot, days=10), ssot).frame
    again = clean_macro(macro_wide(ssot, days=12, overrides={"dxy": {0: 104.0}}), ssot).frame
    merged = merge_macro(first, again)
    assert merged.height == 12 * len(ssot.variables)
    assert merged.filter((pl.col("variable") == "dxy") & (pl.col("date") == date(2024, 1, 1)))["value"][0] == 104.0


# ---- the real export (pure path) ------------------------------------------------------------------
def test_real_file_cleaning_numbers(real_bars_path, calendar, platform_config):
    """data/README.md: 75,460 rows; 73,997 true UTC; 1,463 mislabelled backfill rows on 52 days."""
    from usdcop_platform.adapters.sources.file import read_bars_file

    raw = read_bars_file(real_bars_path)
    assert raw.height == 75_460
    assert raw.filter(pl.col("source") == "twelvedata_backfill")["time"].dt.date().n_unique() == 52
    sessions = calendar.sessions(date(2020, 1, 1), date(2024, 12, 31))
    r = clean(raw, calendar, platform_config, expected_sessions=sessions)
    rep = r.report
    assert rep.timezone_repaired == 1_463
    assert rep.duplicates_dropped == 404  # + 187 repaired copies of holiday bars, dropped as holiday bars
    assert rep.holiday_bars_dropped == 4_055
    assert rep.off_session_dropped == 0
    assert rep.quarantined == 0
    assert rep.bars_published == 71_001
    assert (rep.sessions, rep.sessions_expected, rep.sessions_missing) == (1_221, 1_225, 4)
    assert rep.incomplete_sessions == 221
    assert buckets_add_up(r)
    b = r.bars
    local = b["time"].dt.convert_time_zone("America/Bogota")
    assert set(local.dt.hour().unique().to_list()) == set(range(8, 13))
    assert b["time"].dt.hour().min() == 13 and b["time"].dt.hour().max() == 17
    assert all(calendar.is_session(d) for d in local.dt.date().unique().to_list())
    assert b.filter(pl.col("high") < pl.col("low")).height == 0
    assert b["time"].is_unique().all() and b["time"].is_sorted()

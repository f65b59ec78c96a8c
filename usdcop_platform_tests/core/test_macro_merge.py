"""Re-ingesting a bad macro file never overwrites accepted lake values (issue 19)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.core.cleaning import MACRO_DATASET, MACRO_PARTITION, clean_macro, clean_macro_long, macro_long, merge_macro
from usdcop_platform_tests.core.test_cleaning import macro_wide

DAY = 14  # 2024-01-15 in macro_wide's calendar (index into its days)


def _dxy(frame: pl.DataFrame, d: date) -> tuple[float, bool]:
    row = frame.filter((pl.col("variable") == "dxy") & (pl.col("date") == d)).row(0, named=True)
    return row["value"], row["flagged"]


def _reingest(ssot, lake_frame: pl.DataFrame, wide: pl.DataFrame):
    new_long, _ = macro_long(wide, ssot)
    return clean_macro_long(merge_macro(lake_frame, new_long), ssot)


def test_flagged_newcomer_never_replaces_an_accepted_value(platform_config):
    ssot = platform_config.macro
    good = clean_macro(macro_wide(ssot), ssot)
    day = good.frame.filter(pl.col("variable") == "dxy").sort("date")["date"][DAY]
    accepted, flagged = _dxy(good.frame, day)
    assert not flagged

    bad_wide = macro_wide(ssot, overrides={"dxy": {DAY: accepted * 1000}})
    r = _reingest(ssot, good.frame, bad_wide)
    assert _dxy(r.frame, day) == (accepted, False)  # the good value stays, unflagged
    assert r.report.overwrites_refused == 1 and r.report.flagged == 0
    q = r.quarantined.row(0, named=True)
    assert r.quarantined.height == 1 and q["rule"] == "out_of_range" and q["field"] == "dxy"
    assert "outside [" in q["value"] and "jump" not in q["value"]
    assert f"kept the accepted value {accepted}" in q["value"]


def test_a_whole_bad_month_keeps_every_good_value(platform_config):
    ssot = platform_config.macro
    good = clean_macro(macro_wide(ssot), ssot)
    base = good.frame.filter(pl.col("variable") == "dxy").sort("date")
    month = {i: base["value"][i] * 1000 for i in range(20)}
    r = _reingest(ssot, good.frame, macro_wide(ssot, overrides={"dxy": month}))
    after = r.frame.filter(pl.col("variable") == "dxy").sort("date")
    assert after["value"].head(20).to_list() == base["value"].head(20).to_list()
    assert not after["flagged"].any() and r.report.overwrites_refused == 20


def test_unflagged_revision_still_wins_and_new_dates_are_flagged_normally(platform_config):
    ssot = platform_config.macro
    good = clean_macro(macro_wide(ssot), ssot)
    base = good.frame.filter(pl.col("variable") == "dxy").sort("date")
    revised = base["value"][DAY] * 1.001  # a vendor revision within the jump limit
    r = _reingest(ssot, good.frame, macro_wide(ssot, overrides={"dxy": {DAY: revised}}))
    assert _dxy(r.frame, base["date"][DAY]) == (revised, False) and r.report.overwrites_refused == 0
    # out-of-range with no accepted value to protect: flagged and quarantined as before, noted by range
    fresh = clean_macro(macro_wide(ssot, overrides={"dxy": {DAY: 1e6}}), ssot)
    note = fresh.quarantined.filter(pl.col("field") == "dxy")["value"][0]
    assert "outside [" in note and "(jump 0.0%)" not in note


def test_jump_notes_name_the_move_and_the_limit(platform_config):
    ssot = platform_config.macro
    r = clean_macro(macro_wide(ssot, overrides={"dxy": {DAY: 103.0 * 1.05}}), ssot)
    note = r.quarantined.filter(pl.col("field") == "dxy")["value"][0]
    assert "(jump " in note and "% > " in note


def test_publish_keeps_the_lake_value(tmp_path, platform_config):
    from usdcop_platform.app.ingest import publish_macro

    ssot = platform_config.macro
    lake = ParquetLake(tmp_path / "lake")
    wide = macro_wide(ssot)
    when = datetime(2024, 3, 1, tzinfo=timezone.utc)
    first = publish_macro(wide, lake=lake, ssot=ssot, quality=platform_config.quality.macro, as_of=date(2024, 2, 1),
                          detected_at=when)
    assert first.published
    before = lake.read(MACRO_DATASET, MACRO_PARTITION)
    day = before.filter(pl.col("variable") == "dxy").sort("date")["date"][DAY]
    value, _ = _dxy(before, day)
    publish_macro(macro_wide(ssot, overrides={"dxy": {DAY: value * 1000}}), lake=lake, ssot=ssot,
                  quality=platform_config.quality.macro, as_of=date(2024, 2, 1), detected_at=when)
    assert _dxy(lake.read(MACRO_DATASET, MACRO_PARTITION), day) == (value, False)

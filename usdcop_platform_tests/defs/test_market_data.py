"""The raw assets through Dagster: in-asset gates, refusal to publish, quarantine, idempotent
re-runs, the after-close schedule, the macro automation, `ingest()` and the CLI."""

from __future__ import annotations

import json
import warnings
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from typer.testing import CliRunner

from usdcop_platform.core.cleaning import BARS_DATASET, MACRO_DATASET, MACRO_PARTITION
from usdcop_platform.core.schema import BAR_SCHEMA

warnings.filterwarnings("ignore", category=dg.BetaWarning)

from usdcop_platform.defs.market_data.assets import (  # noqa: E402
    RAW_BARS_KEY,
    RAW_MACRO_KEY,
    raw_macro_daily,
    raw_usdcop_m5_ohlcv,
)
from usdcop_platform.defs.market_data.resources import MacroSourceResource, MarketSourceResource  # noqa: E402
from usdcop_platform.defs.resources import PlatformResource  # noqa: E402

UTC = timezone.utc
SESSION = date(2024, 3, 5)
NEXT = date(2024, 3, 6)
BLOCKING = {"bars_schema", "bars_ohlc_consistent", "bars_price_band", "bars_unique_on_grid", "bars_no_spike"}
BARS_NODE = raw_usdcop_m5_ohlcv.op.name
MACRO_NODE = raw_macro_daily.op.name


@pytest.fixture
def env(isolated_settings, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return isolated_settings


@pytest.fixture
def platform(env) -> PlatformResource:
    return PlatformResource.from_settings(env)


def resources(platform, *, source="synthetic", bars=None, macro=None, seed=7):
    return {
        "platform": platform,
        "market_source": MarketSourceResource(kind=source, bars_file=str(bars) if bars else None, seed=seed),
        "macro_source": MacroSourceResource(kind=source, macro_file=str(macro) if macro else None, seed=seed),
    }


def run_bars(res, first: str, last: str | None = None, instance=None):
    tags = ({"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
            if last else None)
    return dg.materialize([raw_usdcop_m5_ohlcv], resources=res, instance=instance or dg.DagsterInstance.ephemeral(),
                          partition_key=None if last else first, tags=tags, raise_on_error=False)


def checks_of(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def meta_of(result, node=BARS_NODE) -> dict:
    """The run's totals: a bars run shares them with every partition as the `run_summary` JSON."""
    meta = {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}
    if node == BARS_NODE:
        return json.loads(meta["run_summary"])
    return meta


def partition_meta(result, node=BARS_NODE) -> dict[str, dict]:
    """Each partition's own materialization metadata, by partition key."""
    return {m.partition: {k: v.value for k, v in m.metadata.items()}
            for m in result.asset_materializations_for_node(node)}


def read(platform, session: date) -> pl.DataFrame | None:
    return platform.lake.read(BARS_DATASET, session.isoformat())


# ---- a bars export with every kind of bad row --------------------------------------------------------
HEADER = "time,symbol,open,high,low,close,volume,source\n"


def csv_row(t: datetime, o: float, h: float, low: float, c: float, source: str = "twelvedata") -> str:
    return f"{t:%Y-%m-%d %H:%M:%S}+00:00,USD/COP,{o},{h},{low},{c},0,{source}\n"


def bad_export(tmp_path: Path, calendar) -> tuple[Path, dict[str, int]]:
    """Two sessions of good bars plus: high < low, zero price, a 20% spike, a conflicting duplicate,
    a bar at 03:00, a holiday bar, and a Bogota-time-labelled-UTC backfill copy."""
    rows = []
    good = {}
    for d, level in ((SESSION, 3900.0), (NEXT, 3910.0)):
        for i, t in enumerate(calendar.session_grid_utc(d)):
            c = level + 0.5 * i
            if d == SESSION and i == 10:
                rows.append(csv_row(t, c, c - 5, c + 5, c))  # high < low
                continue
            if d == SESSION and i == 20:
                rows.append(csv_row(t, 0.0, 0.0, 0.0, 0.0))  # zero price
                continue
            if d == SESSION and i == 30:
                rows.append(csv_row(t, c * 1.2, c * 1.2, c * 1.2, c * 1.2))  # a 20% one-bar spike
                continue
            if d == NEXT and i == 5:
                rows.append(csv_row(t, c, c, c, c))
                rows.append(csv_row(t, c + 9, c + 9, c + 9, c + 9))  # same instant, different price
                continue
            rows.append(csv_row(t, c, c, c, c))
            good[t] = c
    offset = timedelta(hours=5)
    for t in calendar.session_grid_utc(NEXT)[40:45]:  # backfill copies labelled in Bogota wall-clock time
        c = good[t]
        rows.append(csv_row(t - offset, c - 1, c + 1, c - 2, c, "twelvedata_backfill"))
    rows.append(csv_row(datetime(2024, 3, 5, 3, 0), 3900, 3900, 3900, 3900))  # a bar at 03:00
    # 2024-03-07 is a session; put the holiday test on a real holiday's grid instead
    holiday = date(2024, 3, 25)
    rows.append(csv_row(calendar.session_grid_utc(holiday)[0], 3950, 3950, 3950, 3950))
    p = tmp_path / "bars.csv"
    p.write_text(HEADER + "".join(rows))
    return p, {"good": len(good)}


def test_bad_rows_are_quarantined_and_good_data_published(env, platform, calendar, tmp_path):
    path, facts = bad_export(tmp_path, calendar)
    res = resources(platform, source="file", bars=path)
    result = run_bars(res, SESSION.isoformat(), NEXT.isoformat())
    assert result.success
    checks = checks_of(result)
    assert all(checks[c] for c in BLOCKING)
    assert checks["bars_quarantine"] is False  # warn: rows were quarantined
    meta = meta_of(result)
    assert meta["quarantined"] == 5  # high<low, zero, spike, 2 x conflicting duplicate
    assert meta["quarantine_by_rule"] == {"conflicting_duplicate": 2, "high_below_low": 1,
                                          "non_positive_price": 1, "spike": 1}
    assert meta["timezone_repaired"] == 5 and meta["duplicates_dropped"] == 5
    assert meta["off_session_dropped"] == 1 and meta["holiday_bars_dropped"] == 0  # 03-25 is outside the slice
    published = pl.concat([read(platform, SESSION), read(platform, NEXT)])
    assert dict(published.schema) == BAR_SCHEMA
    assert published.height == facts["good"] == meta["bars_published"]
    assert published["close"].max() < 3910 + 30 and published.filter(pl.col("high") < pl.col("low")).height == 0
    # the quarantine is listed by the CLI, with rule and value
    from usdcop_platform.cli import app

    out = CliRunner().invoke(app, ["quarantine", "list", "--json"])
    assert out.exit_code == 0, out.output
    listed = json.loads(out.output)
    assert listed["count"] == 5
    assert {r["rule"] for r in listed["rows"]} == {"conflicting_duplicate", "high_below_low", "non_positive_price", "spike"}
    out = CliRunner().invoke(app, ["quarantine", "list", "--rule", "spike"])
    assert out.exit_code == 0 and "spike" in out.output and "quarantined rows (1)" in out.output


def test_holiday_bars_are_dropped_by_the_session_before(env, platform, calendar, tmp_path):
    path, _ = bad_export(tmp_path, calendar)
    result = run_bars(resources(platform, source="file", bars=path), "2024-03-22")  # Friday before the holiday
    assert result.success and meta_of(result)["holiday_bars_dropped"] == 1


def test_rerunning_a_partition_is_idempotent(env, platform, calendar):
    res = resources(platform)
    instance = dg.DagsterInstance.ephemeral()
    first = run_bars(res, SESSION.isoformat(), instance=instance)
    a = read(platform, SESSION)
    second = run_bars(res, SESSION.isoformat(), instance=instance)
    b = read(platform, SESSION)
    assert first.success and second.success
    assert a is not None and a.equals(b)
    assert b["time"].is_unique().all() and b["time"].is_sorted()
    assert set(b["time"].to_list()) <= set(calendar.session_grid_utc(SESSION))
    assert instance.get_materialized_partitions(RAW_BARS_KEY) == {SESSION.isoformat()}


def test_range_run_writes_one_partition_per_session(env, platform, calendar):
    result = run_bars(resources(platform, seed=1), "2024-03-20", "2024-04-02")  # Holy Week inside
    assert result.success
    sessions = calendar.sessions(date(2024, 3, 20), date(2024, 4, 2))
    meta = meta_of(result)
    assert meta["sessions_requested"] == len(sessions) == 7
    assert sorted(platform.lake.partitions(BARS_DATASET)) == sorted(
        d.isoformat() for d in sessions if read(platform, d) is not None
    )
    assert meta["holiday_bars_dropped"] > 0  # the synthetic source quotes on most holidays
    assert len(result.asset_materializations_for_node(BARS_NODE)) == len(sessions)
    assert meta["bars_published"] == sum(read(platform, d).height for d in sessions if read(platform, d) is not None)
    assert set(checks_of(result)) == BLOCKING | {"bars_completeness", "bars_stale_runs", "bars_gaps",
                                                 "bars_large_moves", "bars_quarantine"}
    # each partition carries its own session's numbers, not the batch's
    per = partition_meta(result)
    assert set(per) == {d.isoformat() for d in sessions}
    for d in sessions:
        own = read(platform, d)
        m = per[d.isoformat()]
        assert m["dagster/row_count"] == (own.height if own is not None else 0) == m["bars"]
        assert m["published"] is (own is not None)
        if own is not None:
            assert m["first_bar"] == own["time"].min().isoformat() and m["last_bar"] == own["time"].max().isoformat()


def test_an_empty_session_is_not_published_and_fails_completeness_by_name(env, platform, calendar, tmp_path):
    """A session of the range without any bar: 0 rows, not published, bars_completeness fails naming it."""
    rows = [csv_row(t, 3900.0, 3900.0, 3900.0, 3900.0) for t in calendar.session_grid_utc(SESSION)]
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + "".join(rows))  # nothing on NEXT
    result = run_bars(resources(platform, source="file", bars=path), SESSION.isoformat(), NEXT.isoformat())
    assert result.success
    per = partition_meta(result)
    assert per[SESSION.isoformat()]["dagster/row_count"] == 60 and per[SESSION.isoformat()]["published"] is True
    empty = per[NEXT.isoformat()]
    assert empty["dagster/row_count"] == 0 and empty["published"] is False
    assert empty["checks"]["bars_completeness"] == "FAIL" and "bars_completeness" in empty["failed_checks"]
    completeness = next(e for e in result.get_asset_check_evaluations() if e.check_name == "bars_completeness")
    assert not completeness.passed
    failing = json.loads(completeness.metadata["failing"].value)
    assert any(s.startswith(NEXT.isoformat()) for f in failing for s in f["samples"])  # the sample names its session
    assert read(platform, NEXT) is None and meta_of(result)["sessions"] == 1


def test_a_failed_blocking_gate_refuses_to_publish_that_session_only(env, platform, calendar, tmp_path, monkeypatch):
    """Simulate a bug in the row rules: the high<low row reaches the Great Expectations gate."""
    import usdcop_platform.core.cleaning as cleaning
    from usdcop_platform.core.quality import RuleResult

    monkeypatch.setattr(cleaning, "apply_bar_rules",
                        lambda bars, calendar, quality: RuleResult(kept=bars, failed=bars.head(0).with_columns(
                            pl.lit(None, pl.Utf8).alias("_rule"), pl.lit(None, pl.Utf8).alias("_field"),
                            pl.lit(None, pl.Utf8).alias("_value"))))
    rows = []
    for d in (SESSION, NEXT):
        for i, t in enumerate(calendar.session_grid_utc(d)):
            c = 3900.0 + i
            rows.append(csv_row(t, c, c - 5, c + 5, c) if (d == SESSION and i == 3) else csv_row(t, c, c, c, c))
    path = tmp_path / "bars.csv"
    path.write_text(HEADER + "".join(rows))
    instance = dg.DagsterInstance.ephemeral()
    result = run_bars(resources(platform, source="file", bars=path), SESSION.isoformat(), NEXT.isoformat(), instance)
    assert not result.success
    evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evals["bars_ohlc_consistent"].passed is False
    assert evals["bars_ohlc_consistent"].metadata["sessions_failing"].value == [SESSION.isoformat()]
    assert read(platform, SESSION) is None  # refused
    assert read(platform, NEXT).height == 60  # the good session is published ...
    assert instance.get_materialized_partitions(RAW_BARS_KEY) == {NEXT.isoformat()}  # ... and recorded
    q = platform.lake.read("quarantine/usdcop_m5_ohlcv", SESSION.isoformat())
    assert q is not None and q["rule"].to_list() == ["gate:bars_ohlc_consistent"]
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "refused to publish 1 session" in failure.step_failure_data.user_failure_data.description
    # the CLI reports the refusal in its summary and exits non-zero
    from usdcop_platform.cli import app

    out = CliRunner().invoke(app, ["ingest", "--source", "file", "--bars", str(path), "--json"])
    assert out.exit_code == 1
    summary = json.loads(next(ln for ln in out.output.splitlines() if ln.startswith("{")))
    assert summary["sessions_refused"] == 1 and summary["refused_sessions"] == [SESSION.isoformat()]
    assert summary["sessions"] == 1 and summary["bars_published"] == 60


# ---- macro -----------------------------------------------------------------------------------------
def test_macro_asset_publishes_the_flagged_long_frame(env, platform, platform_config):
    result = dg.materialize([raw_macro_daily], resources=resources(platform), instance=dg.DagsterInstance.ephemeral(),
                            run_config={"ops": {MACRO_NODE: {"config": {"start": "2023-01-02", "end": "2024-03-28"}}}})
    assert result.success and all(checks_of(result).values())
    frame = platform.lake.read(MACRO_DATASET, MACRO_PARTITION)
    assert frame.columns == ["date", "variable", "value", "available_date", "flagged", "flag_reason"]
    assert set(frame["variable"]) == set(platform_config.macro.variables)
    assert frame["date"].min() == date(2023, 1, 2) and frame["date"].max() <= date(2024, 3, 28)
    assert (frame["available_date"] > frame["date"]).all() and not frame["flagged"].any()
    # a second, overlapping run merges: no duplicate (date, variable)
    again = dg.materialize([raw_macro_daily], resources=resources(platform), instance=dg.DagsterInstance.ephemeral(),
                           run_config={"ops": {MACRO_NODE: {"config": {"start": "2024-01-02", "end": "2024-04-30"}}}})
    merged = platform.lake.read(MACRO_DATASET, MACRO_PARTITION)
    assert again.success and merged.select("date", "variable").is_unique().all()
    assert merged["date"].min() == date(2023, 1, 2) and merged["date"].max() == date(2024, 4, 30)


def macro_export(tmp_path: Path, platform_config, overrides: dict[str, dict[int, float]]) -> Path:
    ssot = platform_config.macro
    levels = {"dxy": 103.0, "vix": 14.0, "embi_col": 300.0, "brent": 80.0, "ust10y": 4.0, "ust2y": 4.3, "usdmxn": 17.0}
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(40)]
    days = [d for d in days if d.weekday() < 5]
    cols = {v.column: [levels[k] * (1 + 0.001 * (i % 3)) for i in range(len(days))] for k, v in ssot.variables.items()}
    for vid, patch in overrides.items():
        for i, x in patch.items():
            cols[ssot.variables[vid].column][i] = x
    p = tmp_path / "macro.csv"
    pl.DataFrame({"fecha": [d.isoformat() for d in days], **cols, "created_at": ["x"] * len(days)}).write_csv(p)
    return p


def test_out_of_range_and_level_break_are_flagged_not_published_as_good(env, platform, platform_config, tmp_path):
    path = macro_export(tmp_path, platform_config, {"vix": {3: 500.0}, "dxy": {i: 103.0 * 1.08 for i in range(20, 28)}})
    result = dg.materialize([raw_macro_daily], resources=resources(platform, source="file", macro=path),
                            instance=dg.DagsterInstance.ephemeral(),
                            run_config={"ops": {MACRO_NODE: {"config": {"start": "2024-01-01", "end": "2024-02-09"}}}})
    assert result.success
    checks = checks_of(result)
    assert checks["macro_flagged"] is False  # warn
    assert all(checks[c] for c in ("macro_schema", "macro_unique", "macro_availability", "macro_unflagged_in_limits"))
    frame = platform.lake.read(MACRO_DATASET, MACRO_PARTITION)
    flagged = frame.filter(pl.col("flagged"))
    assert flagged.filter(pl.col("variable") == "vix")["flag_reason"].to_list() == ["out_of_range"]
    # an 8% DXY shift held for 8 days: re-accepted at its 3rd value; the return is confirmed the same way
    assert flagged.filter(pl.col("variable") == "dxy")["flag_reason"].to_list() == ["jump", "level_break"] * 2
    assert meta_of(result, MACRO_NODE)["macro_values_flagged"] == 5
    good = frame.filter(~pl.col("flagged"))
    assert good.height == frame.height - 5 and good["value"].max() < 400
    q = platform.lake.read("quarantine/macro_daily", MACRO_PARTITION)
    assert q.height == 5 and set(q["rule"]) == {"out_of_range", "jump", "level_break"}


def test_macro_blocking_gate_refuses_to_publish(env, platform, platform_config, tmp_path, monkeypatch):
    """Simulate a flagging bug: an out-of-range value left unflagged must not be published."""
    import usdcop_platform.core.cleaning as cleaning
    from usdcop_platform.core import quality

    monkeypatch.setattr(cleaning, "flag_macro",
                        lambda long, ssot, accepted=None: quality.flag_macro(long, ssot, accepted).with_columns(
                            pl.lit(None, pl.Utf8).alias("flag_reason"), pl.lit(False).alias("flagged"),
                            pl.lit(0.0).alias("jump_pct")))
    path = macro_export(tmp_path, platform_config, {"vix": {3: 500.0}})
    result = dg.materialize([raw_macro_daily], resources=resources(platform, source="file", macro=path),
                            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                            run_config={"ops": {MACRO_NODE: {"config": {"start": "2024-01-01", "end": "2024-02-09"}}}})
    assert not result.success
    assert checks_of(result)["macro_unflagged_in_limits"] is False
    assert platform.lake.read(MACRO_DATASET, MACRO_PARTITION) is None


# ---- automation ------------------------------------------------------------------------------------
def test_after_close_schedule_targets_todays_session_and_skips_holidays():
    from usdcop_platform.defs.market_data.schedules import raw_bars_after_close

    tz = "America/Bogota"
    assert raw_bars_after_close.cron_schedule == "10 13 * * 1-5" and raw_bars_after_close.execution_timezone == tz
    at = datetime(2024, 3, 5, 13, 10, tzinfo=timezone(timedelta(hours=-5)))
    req = raw_bars_after_close(dg.build_schedule_context(scheduled_execution_time=at))
    assert isinstance(req, dg.RunRequest) and req.partition_key == "2024-03-05"
    holiday = datetime(2024, 3, 25, 13, 10, tzinfo=timezone(timedelta(hours=-5)))
    skip = raw_bars_after_close(dg.build_schedule_context(scheduled_execution_time=holiday))
    assert isinstance(skip, dg.SkipReason) and "not a trading session" in skip.skip_message


def test_macro_runs_each_weekday_morning_by_declarative_automation(platform):
    bogota = timezone(timedelta(hours=-5))
    defs = dg.Definitions(assets=[raw_macro_daily], resources=resources(platform))
    instance = dg.DagsterInstance.ephemeral()
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                               evaluation_time=datetime(2024, 3, 5, 6, 50, tzinfo=bogota))
    assert before.total_requested == 0
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor,
                                              evaluation_time=datetime(2024, 3, 5, 7, 1, tzinfo=bogota))
    assert after.total_requested == 1  # 07:00 Bogota, a Tuesday
    saturday = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor,
                                                 evaluation_time=datetime(2024, 3, 9, 7, 1, tzinfo=bogota))
    assert saturday.total_requested == 0
    policy = raw_usdcop_m5_ohlcv.backfill_policy
    assert policy is not None and policy.max_partitions_per_run is None  # single run


def test_domain_definitions_expose_assets_job_and_schedule():
    from usdcop_platform.defs.market_data.definitions import defs

    repo_assets = {a.key for a in defs.assets}  # type: ignore[union-attr]
    assert repo_assets == {RAW_BARS_KEY, RAW_MACRO_KEY}
    assert [s.name for s in defs.schedules] == ["raw_bars_after_close"]  # type: ignore[union-attr]
    sensor = next(iter(defs.sensors))  # type: ignore[arg-type]
    assert sensor.name == "market_data_automation" and sensor.default_status == dg.DefaultSensorStatus.RUNNING


# ---- ingest() and the CLI ----------------------------------------------------------------------------
def test_ingest_synthetic_in_chunks(env, platform):
    from usdcop_platform.commands.data import SUMMARY_KEYS, ingest

    seen = []
    s = ingest(source="synthetic", start=date(2024, 2, 1), end=date(2024, 2, 20), seed=3, chunk_sessions=5,
               instance=dg.DagsterInstance.ephemeral(), progress=lambda done, total, meta: seen.append((done, total)))
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["chunks"] == 3 and seen == [(1, 3), (2, 3), (3, 3)]
    assert s["sessions_expected"] == 14 and s["sessions"] + s["sessions_missing"] == 14
    lake = platform.lake
    assert s["bars_published"] == sum(lake.read(BARS_DATASET, p).height for p in lake.partitions(BARS_DATASET))
    assert s["macro_values"] > 0 and s["macro_values_flagged"] == 0 and s["sessions_refused"] == 0


def test_ingest_real_slice_matches_the_pure_cleaning(env, real_bars_path, real_macro_path, calendar, platform_config):
    """March-April 2020: backfill rows on sessions and on holidays (03-23, 04-09, 04-10)."""
    from usdcop_platform.adapters.sources import read_bars_file
    from usdcop_platform.commands.data import ingest
    from usdcop_platform.core.cleaning import clean_bars
    from usdcop_platform.app.ingest import raw_slice

    start, end = date(2020, 3, 2), date(2020, 4, 30)
    s = ingest(source="file", bars=real_bars_path, macro=real_macro_path, start=start, end=end, chunk_sessions=15,
               instance=dg.DagsterInstance.ephemeral())
    sessions = calendar.sessions(start, end)
    lo, hi = raw_slice(calendar, sessions)
    raw = read_bars_file(real_bars_path).filter(pl.col("time").dt.date().is_between(lo, hi))
    ref = clean_bars(raw, calendar, platform_config.quality.bars, expected_sessions=sessions).report
    for k in ("timezone_repaired", "duplicates_dropped", "holiday_bars_dropped", "off_session_dropped",
              "quarantined", "bars_published", "sessions", "incomplete_sessions"):
        assert s[k] == getattr(ref, k), k
    assert s["timezone_repaired"] > 0 and s["holiday_bars_dropped"] > 0 and s["duplicates_dropped"] > 0
    assert s["macro_published"] and s["macro_values_flagged"] >= 1  # UST10Y's March-2020 jumps


def test_cli_ingest_json_and_clear_errors(env, tmp_path, real_bars_path):
    from usdcop_platform.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["ingest", "--source", "synthetic", "--start", "2024-02-05", "--end", "2024-02-07",
                              "--seed", "2", "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output.strip().splitlines()[-1])
    assert summary["sessions_expected"] == 3 and summary["source"] == "synthetic"
    table = runner.invoke(app, ["ingest", "--start", "2024-02-05", "--end", "2024-02-06"])
    assert table.exit_code == 0 and "bars_published" in table.output
    empty = tmp_path / "empty.csv.gz"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(real_bars_path.read_bytes()[:20_000])
    for bad, msg in ((empty, "file is empty"), (cut, "truncated or corrupt gzip"), (tmp_path / "none.csv", "not found")):
        out = runner.invoke(app, ["ingest", "--source", "file", "--bars", str(bad)])
        flat = " ".join(out.output.split())  # rich wraps long lines
        assert out.exit_code == 1 and msg in flat, out.output
        assert "Traceback" not in out.output
    out = runner.invoke(app, ["ingest", "--source", "file"])
    assert out.exit_code == 1 and "--bars" in out.output
    out = runner.invoke(app, ["ingest", "--start", "2024-02-07", "--end", "2024-02-05"])
    assert out.exit_code == 1 and "after" in out.output

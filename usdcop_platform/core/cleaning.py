"""Bar and macro cleaning: pure functions from raw vendor frames to publishable frames + counts.

Bars, in this order (every raw row ends in exactly one bucket, so
raw_rows = bars_published + off_session_dropped + holiday_bars_dropped + duplicates_dropped + quarantined):

1. Timezone repair. A backfill job wrote Bogota wall-clock times labelled "+00:00". A bar whose
   labelled instant is off the session grid but whose wall-clock reading, taken as instrument-local
   time, is on it (08:00..12:55 "UTC" -> 13:00..17:55 UTC) is shifted to that instant. Nobody
   trades USD/COP at 03:00..07:55 Bogota, so the rule is deterministic and needs no vendor hint.
2. Calendar. Bars still off the grid (wrong time of day, weekends, misaligned minutes) are dropped
   as off-session; on-grid bars on a Colombian weekday holiday (indicative quotes) as holiday bars.
3. De-duplication per instant. Correctly labelled rows are preferred over repaired ones; rows are
   duplicates when their closes agree within float32 precision (the backfill carries full candles
   where the live feed stored close-only ticks, so O/H/L may differ: the preferred row is kept).
   A repaired row whose close disagrees with the labelled one is quarantined; labelled rows that
   disagree among themselves are all quarantined (conflicting_duplicate): there is no basis to
   pick one, so the bar stays a gap.
4. Row rules (core.quality.apply_bar_rules): failures go to quarantine with the rule and value.
5. Sort by time; columns and dtypes of core.schema.BAR_SCHEMA.

Macro: wide daily frame (date + one column per SSOT source column) -> long frame
(date, variable, value, available_date = date + publication_delay_days) with flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final

import numpy as np
import polars as pl

from usdcop_platform.contracts.macro import MacroSSOT
from usdcop_platform.contracts.quality import BarQuality
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.quality import (
    CONFLICTING_DUPLICATE,
    MACRO_FLAG_COLUMNS,
    PRICE_COLUMNS,
    any_static_violation,
    apply_bar_rules,
    bar_static_violations,
    flag_macro,
    macro_gate_frame,
    quarantine_frame,
    session_dates,
    session_metrics,
    spike_mask,
    text,
)
from usdcop_platform.core.schema import BAR_SCHEMA, MACRO_SCHEMA, QUARANTINE_SCHEMA, bar_frame

BARS_DATASET = "raw/usdcop_m5_ohlcv"
MACRO_DATASET = "raw/macro_daily"
MACRO_PARTITION = "all"

# Published macro frame: MACRO_SCHEMA plus the flags the feature code filters on.
MACRO_FLAGGED_SCHEMA: dict[str, pl.DataType] = {**MACRO_SCHEMA, "flagged": pl.Boolean(), "flag_reason": pl.Utf8()}

# Vendor prices are float32 (2^-24 ~ 6e-8 relative); a repaired backfill row and its true-UTC twin
# differ by <= 1.4e-8 in the real export. Anything above 1e-6 relative is a different price.
PRICE_EQUALITY_RTOL = 1e-6

_REQUIRED_BAR_COLUMNS = ("time", *PRICE_COLUMNS)


class CleaningError(ValueError):
    """The raw frame cannot be cleaned (wrong columns or dtypes, naive timestamps)."""


@dataclass(frozen=True)
class CleanReport:
    """Every count of one cleaning pass. `quarantine_by_rule` maps rule -> rows."""

    raw_rows: int
    timezone_repaired: int
    off_session_dropped: int
    holiday_bars_dropped: int
    duplicates_dropped: int
    quarantined: int
    quarantine_by_rule: dict[str, int]
    bars_published: int
    sessions: int
    incomplete_sessions: int
    sessions_expected: int | None
    sessions_missing: int | None
    first_bar: datetime | None
    last_bar: datetime | None

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("first_bar", "last_bar"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


@dataclass(frozen=True)
class CleanResult:
    bars: pl.DataFrame  # BAR_SCHEMA, sorted, on-grid session bars only
    report: CleanReport
    quarantined: pl.DataFrame  # QUARANTINE_SCHEMA
    sessions: pl.DataFrame  # core.quality.session_metrics of the published bars
    repaired_by_session: dict[str, int] = field(default_factory=dict)


def _normalize_bars(raw: pl.DataFrame) -> pl.DataFrame:
    """Check columns and dtypes; UTC microsecond instants and Float64 prices (volume 0 if absent)."""
    missing = [c for c in _REQUIRED_BAR_COLUMNS if c not in raw.columns]
    if missing:
        raise CleaningError(f"raw bars lack column(s) {missing}; found {raw.columns}")
    t = raw.schema["time"]
    if not isinstance(t, pl.Datetime):
        raise CleaningError(f"column 'time' must be a timezone-aware datetime, got {t}")
    if t.time_zone is None:
        raise CleaningError("column 'time' holds naive timestamps; bars must carry a timezone (UTC)")
    for c in (*PRICE_COLUMNS, "volume"):
        if c in raw.columns and not raw.schema[c].is_numeric():
            raise CleaningError(f"column {c!r} must be numeric, got {raw.schema[c]}")
    volume = pl.col("volume").cast(pl.Float64) if "volume" in raw.columns else pl.lit(0.0)
    return raw.select(
        pl.col("time").dt.convert_time_zone("UTC").dt.cast_time_unit("us"),
        *[pl.col(c).cast(pl.Float64) for c in PRICE_COLUMNS],
        volume.alias("volume"),
    ).with_row_index("_row")


def _agree(col: str) -> pl.Expr:
    """Within-instant agreement (relative PRICE_EQUALITY_RTOL) of one price column among the preferred rows."""
    pref = pl.col(col).filter(pl.col("_pref"))
    return (pref.max() - pref.min()).over("time") <= PRICE_EQUALITY_RTOL * pref.abs().max().over("time")


def clean_bars(
    raw: pl.DataFrame,
    calendar: TradingCalendar,
    quality: BarQuality,
    *,
    expected_sessions: list[date] | None = None,
    repair_timezone: bool = True,
    detected_at: datetime | None = None,
) -> CleanResult:
    """Raw vendor bars -> published bars, quarantined rows and every count (see module docstring).

    raw: `time` (tz-aware), open, high, low, close, optional volume; other columns are ignored.
    expected_sessions: the sessions the caller asked for, to count sessions with no bar at all.
    """
    df = _normalize_bars(raw)
    raw_rows = df.height
    tz = calendar.instrument.timezone

    # 1. timezone repair
    df = df.with_columns(
        pl.col("time").dt.replace_time_zone(None).dt.replace_time_zone(tz, non_existent="null")
        .dt.convert_time_zone("UTC").alias("_wall"),
    ).with_columns(
        calendar.grid_index_expr().alias("_k"),
        calendar.grid_index_expr("_wall").alias("_k_wall"),
    )
    mislabelled = pl.col("_k").is_null() & pl.col("_k_wall").is_not_null() & pl.lit(repair_timezone)
    df = df.with_columns(
        mislabelled.alias("_repaired"),
        pl.when(mislabelled).then(pl.col("_wall")).otherwise(pl.col("time")).alias("time"),
        pl.when(mislabelled).then(pl.col("_k_wall")).otherwise(pl.col("_k")).alias("_k"),
    ).drop("_wall", "_k_wall")
    df = df.with_columns(calendar.session_expr().alias("_d"))
    repaired = int(df["_repaired"].sum())

    # 2. calendar
    sessions = set(session_dates(calendar, df["_d"]))
    on_day = pl.col("_d").is_in(sorted(sessions))
    holiday = pl.col("_k").is_not_null() & ~on_day & (pl.col("_d").dt.weekday() <= 5)
    df = df.with_columns(holiday.alias("_holiday"))
    holiday_dropped = int(df["_holiday"].sum())
    off_session = df.filter(pl.col("_k").is_null() | (~on_day & ~pl.col("_holiday"))).height
    df = df.filter(pl.col("_k").is_not_null() & on_day)

    # 3. de-duplication per instant
    df = df.with_columns(
        (~pl.col("_repaired") | pl.col("_repaired").all().over("time")).alias("_pref"),
        pl.len().over("time").alias("_n"),
    )
    df = df.with_columns(_agree("close").alias("_pref_agree"))
    # the kept row: the first preferred row of an instant whose preferred rows agree
    df = df.with_columns(pl.col("_row").filter(pl.col("_pref")).min().over("time").alias("_keep"))
    df = df.with_columns(
        pl.col("close").filter(pl.col("_row") == pl.col("_keep")).first().over("time").alias("_kept_close")
    )
    same_as_kept = (pl.col("close") - pl.col("_kept_close")).abs() <= PRICE_EQUALITY_RTOL * pl.col("_kept_close")
    df = df.with_columns(
        pl.when(pl.col("_n") == 1).then(pl.lit("keep"))
        .when(~pl.col("_pref_agree")).then(pl.lit("conflict"))
        .when(pl.col("_row") == pl.col("_keep")).then(pl.lit("keep"))
        .when(same_as_kept).then(pl.lit("dup"))
        .otherwise(pl.lit("conflict"))
        .alias("_fate"),
    )
    duplicates = int((df["_fate"] == "dup").sum())
    conflicts = df.filter(pl.col("_fate") == "conflict")
    df = df.filter(pl.col("_fate") == "keep").sort("time")

    # 4. row rules
    rules = apply_bar_rules(df, calendar, quality)
    when = detected_at or datetime.now(timezone.utc)
    row_cols = ["time", *PRICE_COLUMNS, "volume"]
    partition = pl.col("_d").dt.to_string("%Y-%m-%d")
    quarantined = pl.concat(
        [
            quarantine_frame(
                conflicts, dataset=BARS_DATASET, partition=partition, rule=CONFLICTING_DUPLICATE,
                field="close",
                value=text("close=", pl.col("close"), " kept=", pl.col("_kept_close")),
                row_columns=row_cols, detected_at=when,
            ),
            quarantine_frame(
                rules.failed, dataset=BARS_DATASET, partition=partition, rule=pl.col("_rule"),
                field=pl.col("_field"), value=pl.col("_value"), row_columns=row_cols, detected_at=when,
            ),
        ],
        how="vertical",
    )
    by_rule = dict(quarantined.group_by("rule").len().sort("rule").iter_rows()) if quarantined.height else {}

    # 5. publish
    kept = rules.kept
    bars = kept.select([pl.col(c).cast(t) for c, t in BAR_SCHEMA.items()]).sort("time")
    metrics = session_metrics(bars, calendar, quality)
    repaired_by_session = dict(
        kept.filter(pl.col("_repaired")).group_by(pl.col("_d").dt.to_string("%Y-%m-%d")).len().iter_rows()
    )
    n_sessions = metrics.height
    missing = None
    if expected_sessions is not None:
        have = set(metrics["session"].to_list())
        missing = sum(1 for d in expected_sessions if d.isoformat() not in have)
    report = CleanReport(
        raw_rows=raw_rows,
        timezone_repaired=repaired,
        off_session_dropped=off_session,
        holiday_bars_dropped=holiday_dropped,
        duplicates_dropped=duplicates,
        quarantined=quarantined.height,
        quarantine_by_rule=by_rule,
        bars_published=bars.height,
        sessions=n_sessions,
        incomplete_sessions=int((metrics["bars"] < calendar.bars_per_session).sum()),
        sessions_expected=len(expected_sessions) if expected_sessions is not None else None,
        sessions_missing=missing,
        first_bar=bars["time"].min() if bars.height else None,  # type: ignore[arg-type]
        last_bar=bars["time"].max() if bars.height else None,  # type: ignore[arg-type]
    )
    return CleanResult(
        bars=bars, report=report, quarantined=quarantined, sessions=metrics,
        repaired_by_session=repaired_by_session,
    )


# ---- future-dated bars ---------------------------------------------------------------------------
FUTURE_DATED = "future_dated"


def screen_live_bar(
    session_before: pl.DataFrame | None, bar: pl.DataFrame, calendar: TradingCalendar, quality: BarQuality,
    *, detected_at: datetime | None = None,
) -> pl.DataFrame:
    """The live path's bar rules: the batch row rules (core.quality.apply_bar_rules, one
    implementation) over the session's published bars before `bar` plus `bar`, i.e. the batch
    verdict on the bars known so far (rows of `session_before` at or after `bar` are ignored, so the
    session's partition can be passed as it is). Returns `bar`'s quarantine rows (QUARANTINE_SCHEMA, same
    rule/field/value as batch cleaning), empty when it passes. A spike is a move beyond the limit
    vs the last accepted close: live cannot wait for the next bar's confirmation, so such a bar is
    never traded (batch keeps it when the next bar confirms the level; then so does the lake).
    A process screening bar after bar keeps a SessionScreen instead (the same verdict)."""
    return SessionScreen.of(session_before, quality).verdict(bar.row(0, named=True), calendar, detected_at=detected_at)


_NO_QUARANTINE: Final = pl.DataFrame(schema=QUARANTINE_SCHEMA)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _epoch_us(t: datetime) -> int:
    return (t - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, eq=False)
class SessionScreen:
    """screen_live_bar's view of one session: the instants (µs since the epoch, ascending) and
    closes of its bars that pass the row rules (the only ones the spike rule compares against).

    Evaluated as apply_bar_rules does for the last bar of a session, from its parts: the row
    rules on the new bar alone, then spike_mask over the accepted closes before it plus its own
    (a live bar is always the session's latest: earlier ones were processed first). A property
    test holds it equal to apply_bar_rules over the whole session. Built from the session's
    partition once (polars), then moved bar by bar with `with_bar` (numpy), because it runs on
    every live bar inside the bar's database transaction."""

    quality: BarQuality
    times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    closes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))

    @classmethod
    def of(cls, session_bars: pl.DataFrame | None, quality: BarQuality) -> SessionScreen:
        if session_bars is None or session_bars.is_empty():
            return cls(quality)
        bars = session_bars.select(list(BAR_SCHEMA)).cast(BAR_SCHEMA)
        ok = bar_static_violations(bars, quality).filter(pl.col("_rule").is_null()).sort("time")
        return cls(quality, ok["time"].dt.epoch("us").to_numpy().astype(np.int64),
                   ok["close"].to_numpy().astype(np.float64))

    def verdict(self, bar: Mapping[str, Any], calendar: TradingCalendar, *,
                detected_at: datetime | None = None) -> pl.DataFrame:
        """The quarantine rows of `bar` (a mapping of BAR_SCHEMA's fields, `time` aware), empty
        when it may be traded. A bar that passes costs no polars work (no frame is built)."""
        if any_static_violation(bar, self.quality):
            failed = bar_static_violations(bar_frame(bar), self.quality)
        else:
            k = int(np.searchsorted(self.times, _epoch_us(bar["time"]), side="left"))
            closes = np.append(self.closes[:k], float(bar["close"]))
            if not spike_mask(closes, np.zeros(closes.shape[0], dtype=np.int64), self.quality.max_one_bar_move_pct)[-1]:
                return _NO_QUARANTINE  # shared: building an empty frame costs more than the rest of the screen
            failed = bar_frame(bar).with_columns(pl.lit("spike").alias("_rule"), pl.lit("close").alias("_field"),
                                                  pl.col("close").cast(pl.Utf8).alias("_value"))
        return quarantine_frame(
            failed.with_columns(calendar.session_expr().alias("_d")), dataset=BARS_DATASET,
            partition=pl.col("_d").dt.to_string("%Y-%m-%d"), rule=pl.col("_rule"), field=pl.col("_field"),
            value=pl.col("_value"), row_columns=["time", *PRICE_COLUMNS, "volume"], detected_at=detected_at,
        )

    def with_bar(self, time: datetime, close: float) -> SessionScreen:
        """The screen once a bar that passed it is written to the session (replacing the bar of
        the same instant, as the lake's upsert does)."""
        t = _epoch_us(time)
        k = int(np.searchsorted(self.times, t, side="left"))
        after = k + int(k < self.times.shape[0] and self.times[k] == t)
        return SessionScreen(self.quality, np.concatenate([self.times[:k], [t], self.times[after:]]).astype(np.int64),
                             np.concatenate([self.closes[:k], [float(close)], self.closes[after:]]))


def future_bars(raw: pl.DataFrame, calendar: TradingCalendar, as_of: date) -> pl.DataFrame:
    """Raw bars whose instrument-local date is after `as_of` (today): no session can hold them yet."""
    return raw.filter(calendar.session_expr() > as_of)


def quarantine_future_bars(
    raw: pl.DataFrame, calendar: TradingCalendar, as_of: date, *, detected_at: datetime | None = None
) -> pl.DataFrame:
    """The future-dated rows of a raw bar frame as quarantine rows (rule future_dated, partition =
    the session date they claim), so an export with a wrong clock is reported, never silently
    ignored, and never widens the range an ingest covers."""
    rows = future_bars(raw, calendar, as_of).with_columns(_d=calendar.session_expr())
    return quarantine_frame(
        rows, dataset=BARS_DATASET, partition=pl.col("_d").dt.to_string("%Y-%m-%d"), rule=FUTURE_DATED,
        field="time",
        value=text(pl.col("time").dt.to_string("%Y-%m-%dT%H:%M:%SZ"), f" is after today ({as_of.isoformat()})"),
        row_columns=["time", *PRICE_COLUMNS, "volume"], detected_at=detected_at,
    )


# ---- macro ---------------------------------------------------------------------------------------
PREVIOUS_VALUE = "previous_value"  # merge_macro: the accepted lake value a newcomer would replace

@dataclass(frozen=True)
class MacroReport:
    raw_rows: int
    values: int
    variables: int
    variables_missing: list[str]
    flagged: int
    flagged_by_reason: dict[str, int]
    flagged_by_variable: dict[str, int]
    first_date: date | None
    last_date: date | None
    overwrites_refused: int = 0  # flagged newcomers that would have replaced an accepted lake value

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("first_date", "last_date"):
            d[k] = d[k].isoformat() if d[k] is not None else None
        return d


@dataclass(frozen=True)
class MacroResult:
    frame: pl.DataFrame  # MACRO_FLAGGED_SCHEMA, sorted by variable, date
    report: MacroReport
    quarantined: pl.DataFrame  # QUARANTINE_SCHEMA: the flagged values, with their reason
    detail: pl.DataFrame  # frame + core.quality.MACRO_FLAG_COLUMNS (moves, limits, bands), for the gates


def macro_long(raw_wide: pl.DataFrame, ssot: MacroSSOT) -> tuple[pl.DataFrame, list[str]]:
    """Wide daily frame -> long (date, variable, value, available_date), nulls/NaN dropped.

    available_date = date + publication_delay_days (>= 1, enforced by the contract): a value dated
    D is never usable on D. Returns the frame and the SSOT variables whose column is absent.
    """
    if "date" not in raw_wide.columns:
        raise CleaningError(f"macro frame lacks a 'date' column; found {raw_wide.columns}")
    if raw_wide.schema["date"] != pl.Date:
        raise CleaningError(f"macro column 'date' must be a Date, got {raw_wide.schema['date']}")
    present = {vid: v for vid, v in ssot.variables.items() if v.column in raw_wide.columns}
    missing = sorted(set(ssot.variables) - set(present))
    if not present:
        raise CleaningError(
            f"macro frame has none of the SSOT columns {sorted(v.column for v in ssot.variables.values())}"
        )
    for vid, v in present.items():
        if not raw_wide.schema[v.column].is_numeric():
            raise CleaningError(f"macro column {v.column!r} ({vid}) must be numeric, got {raw_wide.schema[v.column]}")
    frames = [
        raw_wide.select(
            pl.col("date"),
            pl.lit(vid).alias("variable"),
            pl.col(v.column).cast(pl.Float64).alias("value"),
            (pl.col("date") + pl.duration(days=v.publication_delay_days)).alias("available_date"),
        ).filter(pl.col("value").is_not_null() & pl.col("value").is_not_nan())
        for vid, v in present.items()
    ]
    long = pl.concat(frames, how="vertical").unique(subset=["date", "variable"], keep="last", maintain_order=True)
    return long.select([pl.col(c).cast(t) for c, t in MACRO_SCHEMA.items()]), missing


def _macro_note() -> pl.Expr:
    """Quarantine note of a flagged value (rows joined with their limits by macro_gate_frame): the
    range it left, or its jump vs the last accepted value (out-of-range values have no jump)."""
    outside = text(pl.col("value"), " (outside [", pl.col("range_lo"), ", ", pl.col("range_hi"), "])")
    band = text(pl.col("value"), " (outside its historical band [", pl.col("band_lo").round(4), ", ",
                pl.col("band_hi").round(4), "])")
    jumped = text(pl.col("value"), " (jump ", pl.col("jump_pct").round(2), "% > ", pl.col("max_jump_pct").round(2), "%)")
    return (pl.when(pl.col("flag_reason") == "out_of_range").then(outside)
            .when(pl.col("flag_reason") == "out_of_band").then(band).otherwise(jumped))


def _refuse_overwrites(
    flagged: pl.DataFrame, ssot: MacroSSOT, accepted: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Where a flagged newcomer replaced an accepted value (merge_macro's PREVIOUS_VALUE), put the
    accepted value back and re-flag the series. Returns (re-flagged frame, refused newcomers as flagged)."""
    if PREVIOUS_VALUE not in flagged.columns:
        return flagged, flagged.clear()
    refused_mask = pl.col("flagged") & pl.col(PREVIOUS_VALUE).is_not_null()
    refused = flagged.filter(refused_mask)
    if refused.is_empty():
        return flagged.drop(PREVIOUS_VALUE), refused.drop(PREVIOUS_VALUE)
    restored = flagged.with_columns(
        pl.when(refused_mask).then(pl.col(PREVIOUS_VALUE)).otherwise(pl.col("value")).alias("value")
    ).select(list(MACRO_SCHEMA))
    return flag_macro(restored, ssot, accepted), refused


def clean_macro_long(
    long: pl.DataFrame, ssot: MacroSSOT, *, raw_rows: int | None = None, missing: list[str] | None = None,
    detected_at: datetime | None = None, accepted: pl.DataFrame | None = None,
) -> MacroResult:
    """Flag a long macro frame (the whole series of each variable, so jumps see their history).

    A frame from merge_macro may carry PREVIOUS_VALUE: a newcomer that the flags refuse never
    replaces the accepted value it would overwrite; it is quarantined (rule = its flag, note naming
    the value kept) and the accepted value stays."""
    flagged, refused = _refuse_overwrites(flag_macro(long, ssot, accepted), ssot, accepted)
    detail = flagged.select([*[pl.col(c).cast(t) for c, t in MACRO_FLAGGED_SCHEMA.items()], *MACRO_FLAG_COLUMNS])
    detail = detail.sort("variable", "date")
    frame = detail.drop(MACRO_FLAG_COLUMNS)
    bad = flagged.filter(pl.col("flagged"))
    row_columns = ["date", "variable", "value", "available_date"]
    partition = pl.col("date").dt.to_string("%Y-%m-%d")
    quarantined = pl.concat(
        [
            quarantine_frame(
                macro_gate_frame(bad, ssot), dataset=MACRO_DATASET, partition=partition,
                rule=pl.col("flag_reason"), field=pl.col("variable"), value=_macro_note(),
                row_columns=row_columns, detected_at=detected_at,
            ),
            quarantine_frame(
                macro_gate_frame(refused, ssot), dataset=MACRO_DATASET, partition=partition,
                rule=pl.col("flag_reason"), field=pl.col("variable"),
                value=text(_macro_note(), "; not merged: kept the accepted value ", pl.col(PREVIOUS_VALUE)),
                row_columns=row_columns, detected_at=detected_at,
            ),
        ],
        how="vertical",
    )
    report = MacroReport(
        raw_rows=raw_rows if raw_rows is not None else long.height,
        values=frame.height,
        variables=frame["variable"].n_unique(),
        variables_missing=missing if missing is not None else sorted(set(ssot.variables) - set(frame["variable"].unique())),
        flagged=bad.height,
        flagged_by_reason=dict(bad.group_by("flag_reason").len().sort("flag_reason").iter_rows()),
        flagged_by_variable=dict(bad.group_by("variable").len().sort("variable").iter_rows()),
        first_date=frame["date"].min() if frame.height else None,  # type: ignore[arg-type]
        last_date=frame["date"].max() if frame.height else None,  # type: ignore[arg-type]
        overwrites_refused=refused.height,
    )
    return MacroResult(frame=frame, report=report, quarantined=quarantined, detail=detail)


def clean_macro(raw_wide: pl.DataFrame, ssot: MacroSSOT, *, detected_at: datetime | None = None) -> MacroResult:
    """Wide daily macro (date + SSOT source columns) -> flagged long frame, quarantine rows, counts."""
    long, missing = macro_long(raw_wide, ssot)
    return clean_macro_long(long, ssot, raw_rows=raw_wide.height, missing=missing, detected_at=detected_at)


def merge_macro(existing: pl.DataFrame | None, new_long: pl.DataFrame) -> pl.DataFrame:
    """Upsert keyed on (date, variable), new values win -- except over an accepted value.

    Returns the long frame to re-flag with clean_macro_long, plus PREVIOUS_VALUE: the lake's
    accepted (unflagged) value where the newcomer differs from it, else null. Whether the newcomer
    is refused depends on the whole re-flagged series, so clean_macro_long decides: a flagged
    newcomer is quarantined and the accepted value stays (re-ingesting a file with DXY x 1000 must
    not replace 105.01 by 105010.0). An unflagged newcomer (a vendor revision) wins."""
    base = new_long.select(list(MACRO_SCHEMA))
    if existing is None or existing.is_empty():
        return base.with_columns(pl.lit(None, dtype=pl.Float64).alias(PREVIOUS_VALUE))
    accepted = existing.filter(~pl.col("flagged")) if "flagged" in existing.columns else existing
    merged = pl.concat([existing.select(list(MACRO_SCHEMA)), base], how="vertical")
    merged = merged.unique(subset=["date", "variable"], keep="last", maintain_order=True)
    previous = accepted.select("date", "variable", pl.col("value").cast(pl.Float64).alias("_accepted"))
    return merged.join(previous, on=["date", "variable"], how="left").select(
        *MACRO_SCHEMA,
        pl.when(pl.col("_accepted") != pl.col("value")).then(pl.col("_accepted")).otherwise(None).alias(PREVIOUS_VALUE),
    )


__all__ = [
    "BARS_DATASET",
    "MACRO_DATASET",
    "MACRO_FLAGGED_SCHEMA",
    "MACRO_PARTITION",
    "PREVIOUS_VALUE",
    "CleanReport",
    "CleanResult",
    "CleaningError",
    "FUTURE_DATED",
    "MacroReport",
    "MacroResult",
    "clean_bars",
    "clean_macro",
    "clean_macro_long",
    "future_bars",
    "quarantine_future_bars",
    "macro_long",
    "merge_macro",
]

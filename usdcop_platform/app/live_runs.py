"""The live runs: which bars a sensor tick launches, whether they can succeed, what one run does.

One run of the live job per new closed bar, exactly once, in order. Each tick asks the market
source for the newest closed bar of today's session (plan_live_runs). Outside the session window
(weekends, Colombian holidays, before the first bar closes, after the last one) it says why. A
new bar is requested as a run keyed by its time (run_key = bar time ISO, partition = its
session) carrying the bar in the run config (live_run_config); the cursor advances to it. After
downtime the missed bars of the session are requested in time order, at most `max_catchup` of
them (the newest ones); each run also carries the bars requested before it and processes them
first (no-ops when done), under an inter-process lock (process_bar), so bars reach the live path
in time order whatever order the launcher starts the runs in. Bars off the session grid are
never requested.

A tick never launches a run it knows will fail (live_blocker): a production model to serve, W
bars of published history before the session (a data gap fails the warm-up), and macro values
usable for the session (stale macro makes NaN macro features). The API's health reports the same
rule. No Dagster here: the sensor turns a plan into RunRequests, the demo runs the same config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.app.live_bars import Bar, LiveError, StaleBar, read_macro, warmup_window
from usdcop_platform.app.live_cycle import CycleResult, LiveCycle, process_lock
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.features import macro_session_features

# The live job, its one op (the three live assets) and the run tag naming the bar.
LIVE_JOB_NAME: Final = "live_signal_job"
LIVE_OP_NAME: Final = "live_signal"
BAR_TIME_TAG: Final = "usdcop/bar_time"
LIVE_LOCK_FILE: Final = "live.lock"  # under the state dir: serializes live runs on this machine


@dataclass(frozen=True)
class LivePlan:
    """What one sensor tick decided: bars to run (in order) and the new cursor, or why not."""

    bars: tuple[Bar, ...] = ()
    cursor: str | None = None
    skip_reason: str | None = None
    dropped: int = 0  # missed bars beyond the catch-up bound


def _on_grid(frame: pl.DataFrame, calendar: TradingCalendar) -> list[Bar]:
    bars = [Bar.from_mapping(r) for r in frame.sort("time").iter_rows(named=True)] if frame.height else []
    return [b for b in bars if calendar.is_on_grid(b.time)]


def plan_live_runs(
    now: datetime, cursor: str | None, calendar: TradingCalendar, source: Any, max_catchup: int
) -> LivePlan:
    """Decide a tick (pure apart from the source reads); see the module docstring."""
    session = calendar.session_of(now)
    if not calendar.is_session(session):
        why = calendar.holiday_name(session)
        return LivePlan(cursor=cursor, skip_reason=(
            f"{session} is a Colombian holiday ({why}): no session" if why else f"{session} is a weekend: no session"))
    first_close = calendar.session_open_utc(session) + calendar.bar_delta
    last_close = calendar.session_close_utc(session)
    if now < first_close:
        return LivePlan(cursor=cursor, skip_reason=f"session {session} has no closed bar before "
                        f"{first_close.astimezone(calendar.tz):%H:%M} {calendar.instrument.timezone}")
    if now > last_close + calendar.bar_delta:
        return LivePlan(cursor=cursor, skip_reason=f"session {session} closed at "
                        f"{last_close.astimezone(calendar.tz):%H:%M} {calendar.instrument.timezone}")
    last_done = datetime.fromisoformat(cursor) if cursor else None
    newest_frame = source.latest_bar(now)
    newest = _on_grid(newest_frame, calendar)
    off_grid = newest_frame.height > 0 and not newest
    if off_grid:
        # the newest tick is off the grid (ignored); on-grid bars that closed before it still count
        closed = [b for b in _on_grid(source.bars(session, session), calendar)
                  if calendar.session_of(b.time) == session and b.time + calendar.bar_delta <= now]
        newest = closed[-1:]
    if not newest or (last_done is not None and newest[-1].time <= last_done):
        if off_grid:
            t = newest_frame["time"][-1]
            return LivePlan(cursor=cursor, skip_reason=f"newest bar {t} is outside the session grid: ignored")
        if not newest:
            return LivePlan(cursor=cursor, skip_reason=f"no closed bar of session {session} available yet")
        return LivePlan(cursor=cursor, skip_reason=f"no new bar since {cursor}")
    latest = newest[-1]
    # every closed, on-grid bar of the session after the cursor, up to the newest, in order
    start = last_done if last_done is not None and calendar.session_of(last_done) == session else None
    if start is not None and latest.time - start == calendar.bar_delta:
        return LivePlan(bars=(latest,), cursor=latest.time.isoformat())  # the usual tick: nothing missed
    pending = {b.time: b for b in _on_grid(source.bars(session, session), calendar)
               if calendar.session_of(b.time) == session and b.time <= latest.time
               and b.time + calendar.bar_delta <= now and (start is None or b.time > start)}
    pending[latest.time] = latest
    ordered = [pending[t] for t in sorted(pending)]
    dropped = max(0, len(ordered) - max_catchup)
    ordered = ordered[dropped:]
    return LivePlan(bars=tuple(ordered), cursor=latest.time.isoformat(), dropped=dropped)


def live_blocker(cfg: PlatformConfig, calendar: TradingCalendar, lake: ParquetLake, store: Any, session: Any) -> tuple[str, str] | None:
    """(kind, reason) when the live run of a bar of `session` is known to fail, else None.

    kinds: no_production_model, data_gap (fewer than W published bars before the session: the
    warm-up fails), stale_macro (a macro feature has no usable value for the session: NaN)."""
    if store.models.production() is None:
        return "no_production_model", "no production model in the registry: nothing to serve (approve a proposal first)"
    try:
        warmup_window(lake, calendar, cfg.features.warmup_bars, session)
    except LiveError as exc:
        return "data_gap", f"data gap: {exc}"
    macro = read_macro(lake)
    try:
        values = macro_session_features(macro, [session], cfg.features, calendar, cfg.macro)
    except Exception as exc:  # noqa: BLE001 - any failure to build them is the reason to skip
        return "stale_macro", f"stale macro: macro features for session {session} cannot be built ({exc})"
    bad = [n for n in values.columns  # the contract's macro features only
           if n != "session" and (values[n].is_null().any() or not values[n].is_finite().all())]
    if bad:
        last = macro["date"].max() if macro is not None and macro.height else None
        return "stale_macro", (f"stale macro: {', '.join(bad)} have no usable value for session {session} "
                               f"(newest macro date {last}; forward fill limit exceeded): materialize raw/macro_daily")
    return None


def live_run_config(bar: Bar, earlier: tuple[Bar, ...] = ()) -> dict[str, Any]:
    """The run config of one bar's run; `earlier` = the bars the same tick requested before it
    (processed first by the run, so catch-up stays in time order even if the launcher starts
    runs out of order)."""
    return {"ops": {LIVE_OP_NAME: {"config": {"bar": bar.to_dict(), "earlier": [b.to_dict() for b in earlier]}}}}


def live_run_tags(bar: Bar) -> dict[str, str]:
    return {BAR_TIME_TAG: bar.time.isoformat()}


def process_bar(cycle: LiveCycle, bar: Bar, earlier: list[Bar], state_dir: Path | str,
                log: logging.Logger) -> CycleResult:
    """What one run does: under the machine's live lock (concurrent catch-up runs must not
    interleave), the `earlier` bars in time order (already processed ones are no-ops, stale ones
    skipped), then `bar`."""
    with process_lock(Path(state_dir) / LIVE_LOCK_FILE):
        for before in sorted(earlier, key=lambda b: b.time):
            if before.time >= bar.time:
                continue
            try:
                done = cycle.process(before)
                log.info(f"catch-up bar {before.time.isoformat()}: "
                         f"{'already processed' if done.duplicate else 'processed'}")
            except StaleBar as exc:
                log.warning(f"catch-up bar skipped: {exc}")
        return cycle.process(bar)

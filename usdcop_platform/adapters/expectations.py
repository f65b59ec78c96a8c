"""Great Expectations 1.x suites for the raw assets' quality gates (ephemeral context).

GX is slow to import (3-4 s of CPU) and is only used on the batch path: this module imports it
lazily and caches the context per process. The live path relies on core.quality's rules alone.
A command that will validate (`usdcop ingest`, `usdcop run`) calls `start_gx_worker()` first: GX is
then imported in a second process, on the other core, while Dagster loads and the sources are read,
and the validate_* calls run there (same functions, same results; a dead worker falls back to this
process). `usdcop bench pipeline` measures the gain.

Each expectation carries meta={"check": <asset check name>}; a check passes when all of its
expectations pass. Row-level expectations report the failing row indexes, which the caller maps
to sessions (a blocking failure refuses to publish those sessions only; a table-level failure,
such as a wrong schema, refuses them all).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import numbers
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import polars as pl

from usdcop_platform.contracts.quality import BarQuality
from usdcop_platform.core.quality import GRID_INDEX_COL, SESSION_DAY_COL, SPIKE_COL

MAX_SAMPLES = 5  # unexpected values shown per failing expectation in check metadata


@dataclass(frozen=True)
class CheckDef:
    name: str
    blocking: bool
    description: str


BAR_CHECKS: tuple[CheckDef, ...] = (
    CheckDef("bars_schema", True, "columns and dtypes of BAR_SCHEMA, no nulls"),
    CheckDef("bars_ohlc_consistent", True, "low <= open, close <= high"),
    CheckDef("bars_price_band", True, "prices positive and inside the configured band"),
    CheckDef("bars_unique_on_grid", True, "unique timestamps on the session grid of trading days"),
    CheckDef("bars_no_spike", True, "no one-bar spike above max_one_bar_move_pct"),
    CheckDef("bars_completeness", False, "bars / bars_per_session >= min_completeness"),
    CheckDef("bars_stale_runs", False, "no run of >= stale_run_bars unchanged closes"),
    CheckDef("bars_gaps", False, "no missing grid slot inside a session"),
    CheckDef("bars_large_moves", False, "no confirmed one-bar move above max_one_bar_move_pct"),
    CheckDef("bars_quarantine", False, "no row quarantined by the row rules in this run"),
)
# The warn-level checks that run on the per-session metrics (one row per session), not on bar rows.
SESSION_CHECKS = frozenset({"bars_completeness", "bars_stale_runs", "bars_gaps", "bars_large_moves"})
MACRO_CHECKS: tuple[CheckDef, ...] = (
    CheckDef("macro_schema", True, "columns and dtypes of the flagged macro frame, no nulls"),
    CheckDef("macro_unique", True, "one value per (date, variable)"),
    CheckDef("macro_availability", True, "available_date > date (anti-leakage)"),
    CheckDef("macro_unflagged_in_limits", True, "unflagged values inside the range and jump limit"),
    CheckDef("macro_coverage", False, "every SSOT variable present"),
    CheckDef("macro_staleness", False, "no gap beyond the forward-fill limit; fresh at the end"),
    CheckDef("macro_flagged", False, "no value flagged (out of range, jump, level break)"),
)


@dataclass
class ExpectationOutcome:
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    unexpected_rows: list[int]
    samples: list[str]


@dataclass
class CheckOutcome:
    name: str
    blocking: bool
    description: str
    expectations: list[ExpectationOutcome] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(e.success for e in self.expectations)

    @property
    def table_level_failure(self) -> bool:
        """A failure that cannot be pinned to rows (schema, missing column, table expectation)."""
        return any(not e.success and not e.unexpected_rows for e in self.expectations)

    def failed_rows(self) -> set[int]:
        return {i for e in self.expectations if not e.success for i in e.unexpected_rows}

    def summary(self) -> list[dict[str, Any]]:
        return [
            {"expectation": e.expectation, "column": e.column, "success": e.success,
             "unexpected": e.unexpected_count, "samples": e.samples}
            for e in self.expectations
        ]


_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _context() -> Any:
    """One ephemeral GX context per process, progress bars off, one pandas datasource."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    ctx.data_sources.add_pandas("usdcop")
    return ctx


def warm_up() -> None:
    """Import GX and create the context now (a code server or benchmark pays it once, up front)."""
    _context()


_log = logging.getLogger(__name__)


class _GxWorker:
    """A spawned process that imports GX at start and runs validate_* calls sent over a pipe.
    Daemonic and stateless: killed, not drained, when its owner is done (GX's heap takes a second
    to tear down, which nobody needs to wait for)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # not fork: the caller holds threads and connections
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="usdcop-gx-worker")
        self._proc.start()
        child.close()
        self._lock = threading.Lock()

    def call(self, name: str, args: tuple[Any, ...]) -> dict[str, CheckOutcome]:
        with self._lock:
            self._conn.send((name, args))
            ok, value = self._conn.recv()  # EOFError / OSError when the worker died
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        self._proc.kill()
        self._proc.join(timeout=5)
        self._conn.close()


def _serve(conn: Any) -> None:
    import tqdm

    # GX's (disabled) progress bars still make tqdm create a multiprocessing lock, a named semaphore
    # that a killed worker would leave to the resource tracker (and its warning): a thread lock does.
    tqdm.tqdm.set_lock(threading.RLock())
    warm_up()
    while True:
        try:
            name, args = conn.recv()
        except EOFError:  # the owner went away
            return
        try:
            conn.send((True, globals()[name].__wrapped__(*args)))
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller
            try:
                conn.send((False, exc))
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                conn.send((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


_worker: _GxWorker | None = None


def start_gx_worker() -> bool:
    """Start importing GX in a second process now; later validate_* calls of this process run there.
    A no-op on one core (nothing to overlap with) or when already started. Returns whether a worker runs."""
    global _worker
    if _worker is None and (os.cpu_count() or 1) > 1:
        _worker = _GxWorker()
    return _worker is not None


def stop_gx_worker() -> None:
    global _worker
    if _worker is not None:
        _worker.stop()
        _worker = None


def _in_gx_worker(fn: Callable[..., dict[str, CheckOutcome]]) -> Callable[..., dict[str, CheckOutcome]]:
    """Run `fn` in the GX worker when one was started (arguments and outcomes are picklable frames
    and dataclasses), else here."""

    @functools.wraps(fn)
    def call(*args: Any) -> dict[str, CheckOutcome]:
        worker = _worker
        if worker is None:
            return fn(*args)
        try:
            return worker.call(fn.__name__, args)
        except (EOFError, OSError) as exc:  # killed or failed to start: validating here loses nothing
            _log.warning("GX worker unavailable (%r); validating in this process", exc)
            stop_gx_worker()
            return fn(*args)

    return call


@lru_cache(maxsize=16)
def _batch_definition(asset: str) -> Any:
    ds = _context().data_sources.get("usdcop")
    return ds.add_dataframe_asset(asset).add_batch_definition_whole_dataframe("whole")


def _validate(asset: str, frame: pl.DataFrame, build: Callable[[Any], list[Any]], checks: Sequence[CheckDef]) -> dict[str, CheckOutcome]:
    """Run the expectations `build(gxe)` on `frame` and group the results by their check."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    batch_definition = _batch_definition(asset)  # creates the context first: suites need one
    suite = gx.ExpectationSuite(name=f"{asset}_suite")
    for exp in build(gxe):
        suite.add_expectation(exp)
    pdf = frame.to_pandas()
    # samples name the partition they come from (a failing check over a range of sessions)
    labels = frame["session"].cast(pl.Utf8).to_list() if "session" in frame.columns else None
    with _LOCK:  # the GX context is not documented as thread-safe
        result = batch_definition.get_batch(batch_parameters={"dataframe": pdf}).validate(
            suite, result_format={"result_format": "COMPLETE"}
        )
    out = {c.name: CheckOutcome(c.name, c.blocking, c.description) for c in checks}
    for r in result.results:
        cfg = r.expectation_config
        check = (cfg.meta or {}).get("check")
        if check not in out:
            continue
        res = r.result or {}
        rows = res.get("unexpected_index_list") or []
        samples = [str(v) for v in (res.get("partial_unexpected_list") or [])[:MAX_SAMPLES]]
        if labels is not None and rows:
            samples = [f"{labels[i]}: {v}" if isinstance(i, numbers.Integral) and i < len(labels) else v
                       for i, v in zip(rows, samples)]
        if not r.success and not rows and res.get("observed_value") is not None:
            samples = [f"observed {res.get('observed_value')}"]
        if r.exception_info and r.exception_info.get("raised_exception"):
            samples = [str(r.exception_info.get("exception_message"))[:200]]
        out[check].expectations.append(
            ExpectationOutcome(
                expectation=cfg.type,
                column=cfg.kwargs.get("column") or ",".join(cfg.kwargs.get("column_list") or [])
                or (f"{cfg.kwargs.get('column_A')}>{cfg.kwargs.get('column_B')}" if "column_A" in cfg.kwargs else None),
                success=bool(r.success),
                unexpected_count=res.get("unexpected_count"),
                unexpected_rows=[int(i) for i in rows if isinstance(i, numbers.Integral)],
                samples=samples,
            )
        )
    return out


# ---- bars ----------------------------------------------------------------------------------------
BAR_COLUMNS = ["time", "open", "high", "low", "close", "volume"]


@_in_gx_worker
def validate_bar_rows(gate_frame: pl.DataFrame, quality: BarQuality, bars_per_session: int) -> dict[str, CheckOutcome]:
    """Blocking expectations on the bars + derived columns of core.quality.bar_gate_frame."""
    lo, hi = quality.price_band

    def build(gxe: Any) -> list[Any]:
        m = lambda name: {"check": name}  # noqa: E731
        exps = [
            gxe.ExpectTableColumnsToMatchSet(column_set=[*BAR_COLUMNS, "session", GRID_INDEX_COL, SESSION_DAY_COL,
                                                         "move_pct", SPIKE_COL], exact_match=True, meta=m("bars_schema")),
            gxe.ExpectColumnValuesToBeOfType(column="time", type_="Timestamp", meta=m("bars_schema")),
        ]
        for c in BAR_COLUMNS:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=c, meta=m("bars_schema")))
        for c in BAR_COLUMNS[1:]:
            exps.append(gxe.ExpectColumnValuesToBeOfType(column=c, type_="float64", meta=m("bars_schema")))
        for a, b in (("high", "low"), ("high", "open"), ("high", "close"), ("open", "low"), ("close", "low")):
            exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True,
                                                                     meta=m("bars_ohlc_consistent")))
        for c in ("open", "high", "low", "close"):
            exps.append(gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi, meta=m("bars_price_band")))
        exps += [
            gxe.ExpectColumnValuesToBeUnique(column="time", meta=m("bars_unique_on_grid")),
            gxe.ExpectColumnValuesToNotBeNull(column=GRID_INDEX_COL, meta=m("bars_unique_on_grid")),
            gxe.ExpectColumnValuesToBeBetween(column=GRID_INDEX_COL, min_value=0, max_value=bars_per_session - 1,
                                              meta=m("bars_unique_on_grid")),
            gxe.ExpectColumnValuesToBeInSet(column=SESSION_DAY_COL, value_set=[True], meta=m("bars_unique_on_grid")),
            gxe.ExpectColumnValuesToBeBetween(column=SPIKE_COL, max_value=quality.max_one_bar_move_pct,
                                              meta=m("bars_no_spike")),
        ]
        return exps

    return _validate("bars_rows", gate_frame, build, [c for c in BAR_CHECKS if c.blocking])


@_in_gx_worker
def validate_bar_sessions(metrics: pl.DataFrame, quality: BarQuality) -> dict[str, CheckOutcome]:
    """Warn-level expectations on core.quality.session_metrics (one row per session)."""

    def build(gxe: Any) -> list[Any]:
        m = lambda name: {"check": name}  # noqa: E731
        return [
            gxe.ExpectColumnValuesToBeBetween(column="completeness", min_value=quality.min_completeness,
                                              meta=m("bars_completeness")),
            gxe.ExpectColumnValuesToBeBetween(column="max_stale_run", max_value=quality.stale_run_bars - 1,
                                              meta=m("bars_stale_runs")),
            gxe.ExpectColumnValuesToBeBetween(column="gaps", max_value=0, meta=m("bars_gaps")),
            gxe.ExpectColumnValuesToBeBetween(column="large_moves", max_value=0, meta=m("bars_large_moves")),
        ]

    warn = [c for c in BAR_CHECKS if not c.blocking and c.name != "bars_quarantine"]
    return _validate("bars_sessions", metrics.select("session", "completeness", "max_stale_run", "gaps", "large_moves"),
                     build, warn)


# ---- macro ---------------------------------------------------------------------------------------
MACRO_COLUMNS = ["date", "variable", "value", "available_date", "flagged", "flag_reason"]


@_in_gx_worker
def validate_macro_rows(gate_frame: pl.DataFrame) -> dict[str, CheckOutcome]:
    """Blocking expectations on core.quality.macro_gate_frame restricted to what is published."""

    def build(gxe: Any) -> list[Any]:
        m = lambda name: {"check": name}  # noqa: E731
        exps = [gxe.ExpectColumnToExist(column=c, meta=m("macro_schema")) for c in MACRO_COLUMNS]
        exps += [gxe.ExpectColumnValuesToNotBeNull(column=c, meta=m("macro_schema"))
                 for c in ("date", "variable", "value", "available_date", "flagged")]
        exps += [
            gxe.ExpectColumnValuesToBeOfType(column="value", type_="float64", meta=m("macro_schema")),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["date", "variable"], meta=m("macro_unique")),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="available_date", column_B="date", or_equal=False,
                                                         meta=m("macro_availability")),
            gxe.ExpectColumnValuesToBeInSet(column="flagged", value_set=[False], meta=m("macro_flagged")),
        ]
        return exps

    out = _validate("macro_rows", gate_frame.select(MACRO_COLUMNS), build,
                    [c for c in MACRO_CHECKS if c.name in ("macro_schema", "macro_unique", "macro_availability",
                                                           "macro_flagged")])
    unflagged = gate_frame.filter(~pl.col("flagged"))

    def build_limits(gxe: Any) -> list[Any]:
        m = {"check": "macro_unflagged_in_limits"}
        return [
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="value", column_B="range_lo", or_equal=True, meta=m),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="range_hi", column_B="value", or_equal=True, meta=m),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="max_jump_pct", column_B="jump_pct", or_equal=True,
                                                         meta=m),
        ]

    out.update(_validate("macro_unflagged", unflagged.select("value", "range_lo", "range_hi", "max_jump_pct", "jump_pct"),
                         build_limits, [c for c in MACRO_CHECKS if c.name == "macro_unflagged_in_limits"]))
    return out


@_in_gx_worker
def validate_macro_variables(staleness: pl.DataFrame, max_staleness_business_days: int) -> dict[str, CheckOutcome]:
    """Warn-level expectations on core.quality.macro_staleness (one row per SSOT variable)."""

    def build(gxe: Any) -> list[Any]:
        m = lambda name: {"check": name}  # noqa: E731
        return [
            gxe.ExpectColumnValuesToBeBetween(column="observations", min_value=1, meta=m("macro_coverage")),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="max_ffill_business_days",
                                                         column_B="max_gap_business_days", or_equal=True,
                                                         meta=m("macro_staleness")),
            gxe.ExpectColumnValuesToBeBetween(column="business_days_since_last", max_value=max_staleness_business_days,
                                              meta=m("macro_staleness")),
        ]

    frame = staleness.select("variable", "observations", "max_gap_business_days", "max_ffill_business_days",
                             "business_days_since_last").fill_null(-1)
    frame = frame.with_columns(
        # a variable with no observation at all is a coverage failure, not a staleness one
        pl.when(pl.col("observations") == 0).then(0).otherwise(pl.col("max_gap_business_days")).alias("max_gap_business_days"),
        pl.when(pl.col("observations") == 0).then(0).otherwise(pl.col("business_days_since_last"))
        .alias("business_days_since_last"),
    )
    return _validate("macro_variables", frame, build,
                     [c for c in MACRO_CHECKS if c.name in ("macro_coverage", "macro_staleness")])


@_in_gx_worker
def validate_quarantine(quarantined: pl.DataFrame) -> dict[str, CheckOutcome]:
    """Warn-level: the run quarantined no row (each quarantined row is a bad input worth a look)."""

    def build(gxe: Any) -> list[Any]:
        return [gxe.ExpectTableRowCountToEqual(value=0, meta={"check": "bars_quarantine"})]

    frame = quarantined.select("rule", "field", "value", "partition")
    return _validate("bars_quarantine", frame, build, [c for c in BAR_CHECKS if c.name == "bars_quarantine"])

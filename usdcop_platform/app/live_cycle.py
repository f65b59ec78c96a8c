"""The live cycle of one bar: lake upsert → features → ensemble → risk → journal + signal rows.

No Dagster here: the live asset, `usdcop replay` and `usdcop bench live` all run this code, so
what is benchmarked and replayed is what trades. The maths lives in core/ (features, inference,
policy_runner, risk); this module fetches, calls and stores.

The features of a bar are those of app/live_bars.py (the session's engine after its warm-up
and the session bars consumed before it). A long-lived process carries the engine bar to bar; a
fresh process (each Dagster run) rebuilds it from the lake, or resumes it from the feature
cache's entry of the previous bar. All three agree bit for bit, and the journal records the
bars consumed so `usdcop replay` can run them again.

Each bar is ONE database transaction (adapters/store/live.py: BEGIN, 2 statements, COMMIT on
PostgreSQL), retried whole while the database is unreachable: it reads the live risk state
(row-locked, so an API trade result cannot be lost under it) and the registry version, then
writes (idempotent statements):

    journal  live_journal[(risk_key, bar time)], append-only: the risk state before the bar,
             the ensemble that served it, the feature inputs, the decision (everything replay needs)
    signals  one trading_signals row per ensemble member (unique per bar and model)
    risk     risk_state[risk_key]: the state after the bar (last_bar = t)

A bar is thus either fully written or not at all; a failed run re-runs it identically. A bar at
or before the state's last bar is a duplicate: its stored signals are returned, nothing written.

The locked read travels while the bar is worked on: on PostgreSQL the bar is screened and, in
the steady state, its features and prediction computed for the position this cycle's last bar
left while the server answers the read (adapters/store/live.read_state_while: psycopg2's wait
callback runs that work once the statement is out; one thread).
Under the lock the read decides: same position and ensemble, the early inference stands;
otherwise the same features go to the models again with what holds now (bit for bit what the
sequential path gives: app/test_live_overlap.py). The bar's write is not touched by this.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import polars as pl

from usdcop_platform.adapters.cache import FeatureCache
from usdcop_platform.adapters.store import live as live_sql
from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.store.errors import DatabaseBusy, DatabaseUnavailable
from usdcop_platform.contracts.base import sha256_hex
from usdcop_platform.contracts.experiment import EnvironmentConfig
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core import risk as risk_core
from usdcop_platform.core.actions import HOLD
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET, SessionScreen
from usdcop_platform.core.features import FeatureError
from usdcop_platform.core.inference import InferenceEngine, Prediction, ServingModel
from usdcop_platform.core.risk import RiskDecision, RiskState
from usdcop_platform.core.schema import QUARANTINE_SCHEMA
from usdcop_platform.app.live_bars import (
    Bar,
    LiveError,
    SessionFeatures,
    StaleBar,
    bar_rows,
    build_session_features,
    read_macro,
    resume_session_features,
    upsert_bar,
    validate_bar,
)
from usdcop_platform.app.quarantine import QUARANTINE_DATASETS

log = logging.getLogger(__name__)

DEFAULT_RISK_KEY: Final = risk_core.LIVE_RISK_KEY
INITIAL_RISK_STATE: Final = RiskState().to_dict()  # stored by the very first bar (see live_sql.open_bar)
SIGNAL_ROLE: Final = "production"
# Writes retried while the database is unreachable: the store retries a few times within a
# second; this outer budget rides out a restart or failover before the run fails (and Dagster's
# retry policy re-runs the idempotent bar).
WRITE_RETRY_BUDGET_S: Final = 30.0
WRITE_RETRY_MAX_DELAY_S: Final = 2.0
WRITE_RETRY_FIRST_DELAY_S: Final = 0.1

T = TypeVar("T")


QUARANTINED_CHECK: Final = "bar_quarantined:"  # failing_check prefix of a bar the bar rules refused


# ---- results ---------------------------------------------------------------------------------


@dataclass
class _HeldPartition:
    """A session's raw partition as the cycle last read or wrote it, with the file's stamp
    (reused only while the file is unchanged: any other writer replaces it, so the stamp moves),
    and the bar rules' screen of it (built on first use, then moved with each bar written)."""

    key: str
    stamp: tuple[int, int, int]
    frame: pl.DataFrame
    screen: SessionScreen | None = None


@dataclass(frozen=True)
class PendingBar:
    """Everything computed for a bar, not yet written."""

    bar: Bar
    session: date
    features: np.ndarray
    feature_hash: str
    prediction: Prediction
    decision: RiskDecision
    state_before: RiskState
    state_after: RiskState
    journal: dict[str, Any]
    signals: list[dict[str, Any]]
    compute_ms: float
    feature_source: str  # "memory", "cache" or "lake"


@dataclass(frozen=True)
class _Inference:
    """A bar's features and the ensemble's prediction for a given position held coming into it."""

    bar_time: datetime
    position: int
    snapshot: Any  # the ensemble that predicted
    inputs: dict[str, Any]
    vec: np.ndarray
    flat: bool
    prediction: Prediction
    source: str
    ms: float


@dataclass(frozen=True)
class CycleResult:
    bar: Bar
    session: date
    signals: list[Any]  # stored rows
    duplicate: bool
    pending: PendingBar | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    quarantined: pl.DataFrame | None = None  # the bar's quarantine rows when the bar rules refused it
    session_bars: int | None = None  # rows of the session's raw partition after this bar was written

    @property
    def action(self) -> int:
        return int(self.signals[0]["action"])


def feature_hash(vec: np.ndarray) -> str:
    """sha256 of the raw feature vector's little-endian float64 bytes."""
    return sha256_hex(np.ascontiguousarray(vec, dtype="<f8").tobytes())


def retry_writes(fn: Callable[[], T], what: str, budget_s: float = WRITE_RETRY_BUDGET_S,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """Run an idempotent write, retrying with capped exponential backoff while the database is
    unreachable or busy, for at most `budget_s`; then the last error propagates."""
    deadline = time.monotonic() + budget_s
    delay = WRITE_RETRY_FIRST_DELAY_S
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except (DatabaseUnavailable, DatabaseBusy) as exc:
            if time.monotonic() + delay > deadline:
                log.error("%s failed after %d attempts: %s", what, attempt, exc)
                raise
            log.warning("%s: database unavailable (attempt %d), retrying in %.1f s: %s", what, attempt, delay, exc)
            sleep(delay)
            delay = min(WRITE_RETRY_MAX_DELAY_S, delay * 2)


@contextlib.contextmanager
def process_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes of this machine (flock on `path`), held while the
    block runs; released by the OS even if the process dies."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---- the cycle -------------------------------------------------------------------------------


class LiveCycle:
    """Processes bars one at a time (see the module docstring). Not thread-safe: one per process."""

    def __init__(
        self,
        cfg: PlatformConfig,
        calendar: TradingCalendar,
        lake: ParquetLake,
        store: Any,
        engine: InferenceEngine,
        cache: FeatureCache | None = None,
        risk_key: str = DEFAULT_RISK_KEY,
        write_budget_s: float = WRITE_RETRY_BUDGET_S,
    ) -> None:
        self.cfg, self.calendar, self.lake, self.store = cfg, calendar, lake, store
        self.engine, self.cache, self.risk_key = engine, cache, risk_key
        self.write_budget_s = write_budget_s
        self.limits, self.hours = cfg.mlops.risk, cfg.mlops.trading_hours
        self._sf: SessionFeatures | None = None
        self._macro: pl.DataFrame | None = None
        # The session's raw partition as this cycle last read or wrote it (see _HeldPartition).
        self._partition: _HeldPartition | None = None
        self._written: RiskState | None = None  # the live state this cycle's last bar committed

    def _held(self, session: date) -> _HeldPartition | None:
        """The session's raw bars partition (None: none yet), without re-reading an unchanged file."""
        key = session.isoformat()
        stamp = self.lake.stamp(BARS_DATASET, key)
        if stamp is None:
            return None
        held = self._partition
        if held is not None and held.key == key and held.stamp == stamp:
            return held
        frame = self.lake.read(BARS_DATASET, key)
        self._partition = None if frame is None else _HeldPartition(key, stamp, frame)
        return self._partition

    def _session_screen(self, held: _HeldPartition | None) -> SessionScreen:
        if held is None:
            return SessionScreen(self.cfg.quality.bars)
        if held.screen is None:
            held.screen = SessionScreen.of(held.frame, self.cfg.quality.bars)
        return held.screen

    # -- helpers -------------------------------------------------------------------------------
    def risk_state(self) -> RiskState:
        return RiskState.from_dict(self.store.risk.load(self.risk_key))

    def _macro_frame(self) -> pl.DataFrame | None:
        if self._macro is None:
            self._macro = read_macro(self.lake)
        return self._macro

    def _features_for(self, bar: Bar, session: date) -> tuple[SessionFeatures, str]:
        """The session's feature engine, positioned just before `bar`."""
        sf = self._sf
        if sf is not None and sf.session == session and (sf.last_time is None or sf.last_time < bar.time):
            return sf, "memory"
        self._macro = None  # a fresh build re-reads today's macro
        macro = self._macro_frame()
        if self.cache is not None:
            entry = self.cache.latest()
            meta = entry.meta if entry is not None else {}
            if (entry is not None and meta.get("session") == session.isoformat() and entry.bar_time < bar.time
                    and meta.get("engine_state", {}).get("feature_order_hash") == self.cfg.features.feature_order_hash):
                try:
                    return resume_session_features(self.cfg, self.calendar, meta, macro, entry.bar_time), "cache"
                except (FeatureError, KeyError, ValueError) as exc:
                    log.warning("feature cache entry unusable (%s); rebuilding from the lake", exc)
        today = self.lake.read(BARS_DATASET, session.isoformat())
        prior = [b for b in bar_rows(today) if b.time < bar.time]
        return build_session_features(self.cfg, self.calendar, self.lake, session, macro, prior), "lake"

    def force_flat(self, bar: Bar, model: ServingModel) -> bool:
        """The last bar of the session is flat when the serving model's experiment says so
        (core.policy_runner's rule, as in training and the backtest)."""
        if self.calendar.bar_index(bar.time) != self.calendar.bars_per_session - 1:
            return False
        exp = self.cfg.experiments.get(model.experiment_name) if model.experiment_name else None
        return (exp.environment.flat_at_session_end if exp is not None
                else bool(EnvironmentConfig.model_fields["flat_at_session_end"].default))

    # -- bar quality ---------------------------------------------------------------------------
    def screen(self, bar: Bar, session: date) -> pl.DataFrame:
        """The batch bar rules on the session's published bars plus `bar` (core.cleaning
        .screen_live_bar, kept as the session's SessionScreen): `bar`'s quarantine rows, empty
        when it may be traded."""
        return self._screened(bar, session)[1]

    def _screened(self, bar: Bar, session: date) -> tuple[tuple[int, int, int] | None, pl.DataFrame]:
        """screen(), with the stamp of the partition file it screened against (None: none)."""
        held = self._held(session)
        return None if held is None else held.stamp, self._session_screen(held).verdict(bar.row(), self.calendar)

    def refusal(self, bar: Bar, session: date, pre: RiskState, verdict: pl.DataFrame,
                registry_version: int | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], RiskState]:
        """Journal, signal rows and state of a bar the bar rules refused: not traded, the position
        kept, no features or inference (the model never sees the bar). Each member's row says why:
        risk_status REJECTED, failing_check `bar_quarantined:<rule>`; the journal holds the rule,
        field and value as quarantined."""
        self.engine.maybe_reload(version=registry_version)
        snap = self.engine.snapshot
        q = verdict.row(0, named=True)
        post = replace(pre, last_bar=bar.time, updated_at=bar.time)
        kept = int(pre.position) + HOLD  # SELL/HOLD/BUY of the position kept (-1/0/+1)
        journal = {
            **pre.to_dict(), "bar": bar.to_dict(),
            "quarantined": {"rule": q["rule"], "field": q["field"], "value": q["value"]},
            "ensemble": {"method": snap.method, "ensemble_hash": snap.ensemble_hash,
                         "registry_version": snap.registry_version,
                         "members": [{"model_id": m.model_id, "model_hash": m.model_hash, "onnx_hash": m.onnx_hash,
                                      "weight": m.weight} for m in snap.members]},
            "state_after": post.to_dict(),
        }
        signals = [{
            "bar_time": bar.time, "session_date": session, "model_id": m.model_id, "role": SIGNAL_ROLE,
            "model_hash": m.model_hash, "action": kept, "prob_sell": 0.0, "prob_hold": 0.0, "prob_buy": 0.0,
            "confidence": 0.0, "raw_action": kept, "risk_status": "REJECTED",
            "failing_check": f"{QUARANTINED_CHECK}{q['rule']}"[:64],
            "position_recommendation": float(pre.position * pre.position_size), "feature_hash": None,
            "feature_order_hash": m.feature_order_hash, "norm_stats_hash": m.norm_stats_hash, "features": [],
            "latency_ms": None,
        } for m in snap.members]
        return journal, signals, post

    def _quarantine(self, rows: pl.DataFrame) -> None:
        """Add the refused bar's rows to its session's bar quarantine (the batch layout), once."""
        target = QUARANTINE_DATASETS[BARS_DATASET]
        part = str(rows["partition"][0])
        old = self.lake.read(target, part)
        merged = rows if old is None else pl.concat([old.select(list(QUARANTINE_SCHEMA)), rows], how="vertical")
        self.lake.write(target, part, merged.unique(subset=["rule", "row"], keep="first", maintain_order=True))

    # -- the locked read, and what is computed while it travels ----------------------------------
    def _speculate(self, bar: Bar, session: date) -> _Inference | None:
        """The bar's inference for the position this cycle's last bar left, before the state is
        read: only in the steady state (the bar follows that bar and the session's features are in
        memory, just before it); compute() checks the position and the ensemble against the read.
        A failure here is left to compute(), which does the same work again and raises it."""
        last, sf = self._written, self._sf
        if (last is None or (last.last_bar is not None and bar.time <= last.last_bar) or sf is None
                or sf.session != session or (sf.last_time is not None and sf.last_time >= bar.time)):
            return None
        try:
            return self._infer(bar, session, int(last.position))
        except Exception:  # noqa: BLE001 - raised again by compute(), under the lock, as before
            self._sf = None
            return None

    # -- compute -------------------------------------------------------------------------------
    def _infer(self, bar: Bar, session: date, position: int) -> _Inference:
        """The bar's features (the session's engine moved past it) and the ensemble's prediction,
        given the position held coming into it."""
        t0 = time.perf_counter()
        snap = self.engine.snapshot
        sf, source = self._features_for(bar, session)
        inputs = sf.inputs()
        vec = sf.engine.update(bar.to_dict() | {"time": bar.time}, position=float(position))
        sf.consume(bar.time)
        self._sf = sf
        if not np.isfinite(vec).all():
            bad = [n for n, v in zip(self.cfg.features.names, vec) if not np.isfinite(v)]
            raise LiveError(f"features of bar {bar.time.isoformat()} carry NaN/inf in {bad}: no signal is produced "
                            "(NaN never reaches a model; check the macro data in the lake)")
        flat, prediction = self._predict(bar, snap, vec, position)
        return _Inference(bar.time, int(position), snap, inputs, vec, flat, prediction, source,
                          (time.perf_counter() - t0) * 1e3)

    def _predict(self, bar: Bar, snap: Any, vec: np.ndarray, position: int) -> tuple[bool, Prediction]:
        """Whether the bar is forced flat, and the ensemble's prediction for its features."""
        flat = self.force_flat(bar, snap.primary)
        return flat, self.engine.step(vec, position, force_flat=flat)

    def compute(self, bar: Bar, *, state_before: RiskState | None = None, registry_version: int | None = None,
                early: _Inference | None = None, session: date | None = None) -> PendingBar:
        """Features, inference and the risk decision for `bar` (nothing written). `early`: the
        bar's inference made before the state was read (process), used when its position and
        ensemble are the ones that hold now, else its features are served again to the models.
        `session`: validate_bar's answer for `bar`, when the caller has it."""
        t0 = time.perf_counter()
        session = session or validate_bar(bar, self.calendar)
        pre = state_before if state_before is not None else self.risk_state()
        self.engine.maybe_reload(version=registry_version)
        snap = self.engine.snapshot
        position = int(pre.position)
        if early is not None and early.bar_time != bar.time:
            early = None
        if early is None:
            inf = self._infer(bar, session, position)
        elif early.position != position or early.snapshot is not snap:  # guessed wrong: same features, new step
            vec = early.vec.copy()
            vec[self.engine.position_index] = float(position)
            flat, prediction = self._predict(bar, snap, vec, position)
            inf = replace(early, position=position, snapshot=snap, vec=vec, flat=flat, prediction=prediction)
        else:
            inf = early
        inputs, vec, flat, prediction, source = inf.inputs, inf.vec, inf.flat, inf.prediction, inf.source
        requested = HOLD if flat else prediction.action
        decision, mid = risk_core.evaluate(pre, self.limits, self.hours, self.calendar, requested,
                                           prediction.confidence, bar.time)
        post = risk_core.apply_decision(mid, self.limits, decision, bar.close, bar.time)
        fh = feature_hash(vec)
        compute_ms = (time.perf_counter() - t0) * 1e3 + (early.ms if early is not None else 0.0)
        journal = {
            **pre.to_dict(),
            "bar": bar.to_dict(),
            # the signal rows carry each member's probabilities, action and remaining hashes
            "ensemble": {"method": snap.method, "ensemble_hash": snap.ensemble_hash,
                         "registry_version": snap.registry_version,
                         "members": [{"model_id": m.model_id, "model_hash": m.model_hash, "onnx_hash": m.onnx_hash,
                                      "weight": m.weight} for m in snap.members]},
            "feature_inputs": inputs,
            "feature_hash": fh,
            "forced_flat": flat,
            "prediction": {"action": prediction.action, "confidence": prediction.confidence,
                           "probabilities": [float(p) for p in prediction.probabilities],
                           "values": [m.value for m in prediction.members]},
            "decision": decision.to_dict(),
            "state_after": post.to_dict(),
        }
        signed_size = decision.target_position * decision.position_size
        features = vec.tolist()  # Python floats, as float(v) gives them; one list for every member's row
        signals = []
        for m, mp in zip(snap.members, prediction.members):
            signals.append({
                "bar_time": bar.time,
                "session_date": session,
                "model_id": m.model_id,
                "role": SIGNAL_ROLE,
                "model_hash": m.model_hash,
                "action": decision.final_action,
                "prob_sell": float(mp.probabilities[0]),
                "prob_hold": float(mp.probabilities[1]),
                "prob_buy": float(mp.probabilities[2]),
                "confidence": float(mp.probabilities.max()),
                "raw_action": mp.action,
                "risk_status": decision.status,
                "failing_check": decision.failed_check,
                "position_recommendation": float(signed_size),
                "feature_hash": fh,
                "feature_order_hash": m.feature_order_hash,
                "norm_stats_hash": m.norm_stats_hash,
                "features": features,
                "latency_ms": compute_ms,
            })
        return PendingBar(bar, session, vec, fh, prediction, decision, pre, post, journal, signals, compute_ms, source)

    def _cache_put(self, pending: PendingBar) -> None:
        """Publish the bar's features (and the engine state after it) to the feature cache."""
        if self.cache is None or self._sf is None:
            return
        self.cache.put(pending.bar.time, pending.features, {
            **self._sf.cache_meta(), "model_id": pending.signals[0]["model_id"], "feature_hash": pending.feature_hash,
            "action": pending.decision.final_action,
        })

    # -- the whole thing -----------------------------------------------------------------------
    def process(self, bar: Bar, *, write_bar: bool = True) -> CycleResult:
        """Run one bar through the live path in one database transaction: read the risk state
        (row-locked) and the registry version, upsert the bar into the lake, compute, write the
        journal, signals and state, commit. A bar already processed returns its stored signals;
        the transaction is retried whole while the database is unreachable."""
        t0 = time.perf_counter()
        session = validate_bar(bar, self.calendar)

        def attempt() -> tuple[CycleResult, float]:
            with self.store.transaction() as conn:
                # The locked read goes out first; while the database answers, the bar is screened
                # and, in the steady state, its features and prediction computed for the position
                # this cycle last wrote (checked against the read below).
                found: dict[str, Any] = {}

                def screen_bar() -> None:
                    found["stamp"], found["verdict"] = self._screened(bar, session)

                def infer_bar() -> None:
                    found["early"] = None if found["verdict"].height else self._speculate(bar, session)

                rows = live_sql.read_state_while(conn, self.risk_key, screen_bar, infer_bar)
                opened = live_sql.opened(conn, rows, self.risk_key, INITIAL_RISK_STATE)  # locked until commit
                stamp, verdict, early = found["stamp"], found["verdict"], found["early"]
                pre = RiskState.from_dict(opened.state)
                if pre.last_bar is not None and bar.time <= pre.last_bar:
                    if early is not None:  # features moved past a bar another run processed: rebuild them
                        self._sf = None
                    rows = live_sql.stored_signals(conn, bar.time)
                    if rows:
                        return CycleResult(bar, session, rows, duplicate=True), 0.0
                    raise StaleBar(f"bar {bar.time.isoformat()} is not after the last processed bar "
                                   f"{pre.last_bar.isoformat()} and has no signal: bars are processed in order")
                if self.lake.stamp(BARS_DATASET, session.isoformat()) != stamp:  # written before the lock was ours
                    verdict = self.screen(bar, session)
                    if verdict.height and early is not None:
                        self._sf, early = None, None
                timings: dict[str, float] = {}
                if verdict.height:  # refused by the bar rules: neither in the lake nor seen by the model
                    journal, signals, post = self.refusal(bar, session, pre, verdict, opened.registry_version)
                    t_write = time.perf_counter()
                    stored = live_sql.write_bar(conn, self.risk_key, bar.time, journal, signals, post.to_dict(),
                                                opened.state.get("last_bar"))
                    return CycleResult(bar, session, stored, duplicate=False, timings_ms=timings,
                                       quarantined=verdict), t_write
                session_bars = None
                if write_bar:
                    t1 = time.perf_counter()
                    held = self._held(session)
                    screened = self._session_screen(held).with_bar(bar.time, bar.close)  # it passed the screen
                    written = upsert_bar(self.lake, bar, session, None if held is None else held.frame)
                    stamp = self.lake.stamp(BARS_DATASET, session.isoformat())
                    self._partition = None if stamp is None else _HeldPartition(
                        session.isoformat(), stamp, written, screened)
                    session_bars = written.height
                    timings["lake_upsert"] = (time.perf_counter() - t1) * 1e3
                pending = self.compute(bar, state_before=pre, registry_version=opened.registry_version, early=early,
                                       session=session)
                timings["compute"] = pending.compute_ms
                t_write = time.perf_counter()
                stored = live_sql.write_bar(conn, self.risk_key, bar.time, pending.journal, pending.signals,
                                            pending.journal["state_after"], opened.state.get("last_bar"))
            return CycleResult(bar, session, stored, duplicate=False, pending=pending, timings_ms=timings,
                               session_bars=session_bars), t_write

        result, t_write = retry_writes(attempt, f"bar {bar.time.isoformat()}", self.write_budget_s)
        if result.quarantined is not None:
            self._quarantine(result.quarantined)
            log.warning("bar %s refused by the bar rules (%s): not traded", bar.time.isoformat(),
                        result.signals[0]["failing_check"])
        elif not result.duplicate:
            assert result.pending is not None
            result.timings_ms["commit"] = (time.perf_counter() - t_write) * 1e3
            self._cache_put(result.pending)
        self._written = result.pending.state_after if result.pending is not None else None
        result.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return result

    def reset_features(self) -> None:
        """Forget the in-memory feature engine (the next bar rebuilds it from cache or lake)."""
        self._sf = None

    @property
    def session_features(self) -> SessionFeatures | None:
        return self._sf

    def use_features(self, sf: SessionFeatures) -> None:
        """Position the feature engine explicitly (replay rebuilds it from a journal's inputs)."""
        self._sf = sf

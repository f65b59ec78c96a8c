"""Replay a past session's live signals, bit for bit, from the stored bars and the models that served.

For every bar of the session that has production signals, the bar's journal (written by the live
cycle before its signals) names what the live path used: the ensemble (model ids, hashes,
weights, method), the feature inputs (the W warm-up bars by first/last instant and the session
bars consumed before it) and the risk state coming into the bar. Replay rebuilds exactly that
— bars from the lake, each model from the registry with its hashes verified — and runs the same
LiveCycle.compute the live job runs. Every stored field (action, raw action, probabilities,
confidence, risk status and failing check, position recommendation, feature hash, the feature
vector, model and norm-stats hashes) and the risk state after the bar must be equal, floats
compared exactly. Nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.mlops import EnsembleConfig, EnsembleMember
from usdcop_platform.contracts.platform import PlatformConfig
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET, screen_live_bar
from usdcop_platform.core.features import IncrementalFeatureEngine
from usdcop_platform.core.inference import InferenceEngine
from usdcop_platform.core.risk import RiskState
from usdcop_platform.core.schema import BAR_SCHEMA
from usdcop_platform.app.live_bars import Bar, LiveError, SessionFeatures, read_macro
from usdcop_platform.app.live_cycle import DEFAULT_RISK_KEY, SIGNAL_ROLE, LiveCycle

COMPARED_FIELDS = (
    "model_hash", "action", "raw_action", "prob_sell", "prob_hold", "prob_buy", "confidence", "risk_status",
    "failing_check", "position_recommendation", "feature_hash", "feature_order_hash", "norm_stats_hash", "features",
)


class ReplayError(LiveError):
    """The session cannot be replayed (no signals, missing journal, bars or models)."""


@dataclass
class BarReplay:
    bar_time: datetime
    models: list[str]
    matched: bool
    differences: list[str] = field(default_factory=list)


@dataclass
class ReplayReport:
    session: date
    bars: list[BarReplay]

    @property
    def matched(self) -> bool:
        return all(b.matched for b in self.bars)

    @property
    def n_signals(self) -> int:
        return sum(len(b.models) for b in self.bars)

    def mismatches(self) -> list[BarReplay]:
        return [b for b in self.bars if not b.matched]


def _utc(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(timezone.utc)


def _lake_bars(lake: ParquetLake, calendar: TradingCalendar, first: datetime, last: datetime) -> pl.DataFrame:
    sessions = calendar.sessions(calendar.session_of(first), calendar.session_of(last))
    frame = lake.read_many(BARS_DATASET, [d.isoformat() for d in sessions])
    if frame is None:
        raise ReplayError(f"the lake holds no bars between {first.isoformat()} and {last.isoformat()}")
    frame = frame.select(list(BAR_SCHEMA)).sort("time")
    return frame.filter((pl.col("time") >= first) & (pl.col("time") <= last))


def features_from_inputs(cfg: PlatformConfig, calendar: TradingCalendar, lake: ParquetLake,
                         inputs: dict[str, Any], macro: pl.DataFrame | None) -> SessionFeatures:
    """Rebuild the feature engine a journal describes (warm-up window + session bars consumed)."""
    first, last = _utc(inputs["warmup_first"]), _utc(inputs["warmup_last"])
    window = _lake_bars(lake, calendar, first, last)
    if window.height != int(inputs["n_warmup"]):
        raise ReplayError(f"the warm-up window {first.isoformat()}..{last.isoformat()} now holds {window.height} bars, "
                          f"the live path used {inputs['n_warmup']}: the stored bars changed")
    engine = IncrementalFeatureEngine(cfg.features, calendar, cfg.macro)
    engine.warm_up(window, macro)
    session = date.fromisoformat(inputs["session"])
    sf = SessionFeatures.start(calendar, session, engine, first, last, window.height)
    if "session_bar_indices" in inputs:
        wanted = [sf.time_of(int(i)) for i in inputs["session_bar_indices"]]
    else:  # journals written before the bars were named by grid index
        wanted = [_utc(t) for t in inputs["session_bars"]]
    if wanted:
        today = lake.read(BARS_DATASET, session.isoformat())
        rows = {b.time: b for b in (Bar.from_mapping(r) for r in (today.iter_rows(named=True) if today is not None else []))}
        for t in wanted:
            if t not in rows:
                raise ReplayError(f"bar {t.isoformat()} consumed by the live path is no longer in the lake")
            engine.update(rows[t].to_dict() | {"time": t})
            sf.consume(t)
    return sf


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return a is not None and b is not None and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and float(a) == float(b)
    return a == b


def _replay_refusal(cfg: PlatformConfig, calendar: TradingCalendar, today: pl.DataFrame | None,
                    journal: dict[str, Any]) -> tuple[bool, list[str]]:
    """(matched, differences) of a bar the live bar rules refused: screened again over the lake."""
    raw = journal["bar"]
    bar = pl.DataFrame([{"time": datetime.fromisoformat(raw["time"]),
                         **{k: float("nan") if raw[k] is None else float(raw[k]) for k in ("open", "high", "low", "close")},
                         "volume": float(raw.get("volume") or 0.0)}], schema=BAR_SCHEMA)
    before = None if today is None else today.filter(pl.col("time") < bar["time"][0]).select(list(BAR_SCHEMA))
    got = screen_live_bar(before, bar, calendar, cfg.quality.bars)
    want = journal["quarantined"]
    now = got.row(0, named=True) if got.height else None
    if now is not None and all(now[k] == want[k] for k in ("rule", "field", "value")):
        return True, []
    return False, [f"the bar rules refused it live ({want['rule']}: {want['value']}) but now give "
                   f"{'nothing' if now is None else now['rule'] + ': ' + now['value']}"]


def replay_session(
    cfg: PlatformConfig, calendar: TradingCalendar, lake: ParquetLake, store: Any, session: date, *,
    models_root: Any = None, risk_key: str = DEFAULT_RISK_KEY,
) -> ReplayReport:
    rows = store.signals.list(session_date=session, role=SIGNAL_ROLE)
    if not rows:
        raise ReplayError(f"no production signals are stored for session {session}: nothing to replay")
    by_bar: dict[datetime, dict[str, Any]] = {}
    for r in rows:
        by_bar.setdefault(r["bar_time"], {})[r["model_id"]] = r
    macro = read_macro(lake)
    today = lake.read(BARS_DATASET, session.isoformat())
    lake_bars = {b.time: b for b in (Bar.from_mapping(r) for r in (today.iter_rows(named=True) if today is not None else []))}
    engines: dict[str, InferenceEngine] = {}
    cycle: LiveCycle | None = None
    out: list[BarReplay] = []
    for t in sorted(by_bar):
        stored = by_bar[t]
        journal = store.journal.load(risk_key, t)
        if journal is None:
            out.append(BarReplay(t, sorted(stored), False, ["no journal: the bar cannot be reproduced"]))
            continue
        if "quarantined" in journal:  # refused by the bar rules: the same rules must refuse it again
            out.append(BarReplay(t, sorted(stored), *_replay_refusal(cfg, calendar, today, journal)))
            continue
        if t not in lake_bars:
            out.append(BarReplay(t, sorted(stored), False, ["the bar is no longer in the lake"]))
            continue
        bar = lake_bars[t]
        ens = journal["ensemble"]
        key = ens["ensemble_hash"]
        if key not in engines:
            config = EnsembleConfig(method=ens["method"], members=tuple(
                EnsembleMember(model_id=m["model_id"], weight=m["weight"]) for m in ens["members"]))
            engines[key] = InferenceEngine(store, cfg.features, config, models_root=models_root)
        engine = engines[key]
        snap = engine.snapshot  # loads and verifies every member (hashes vs the registry)
        served = {m["model_id"]: m["onnx_hash"] for m in ens["members"]}
        diffs = [f"model {m.model_id}: ONNX {m.onnx_hash[:12]}… differs from the one that served "
                 f"({served[m.model_id][:12]}…)" for m in snap.members if served.get(m.model_id) != m.onnx_hash]
        if bar.to_dict() != journal["bar"]:
            diffs.append(f"stored bar changed: lake {bar.to_dict()} vs served {journal['bar']}")
        if cycle is None:
            cycle = LiveCycle(cfg, calendar, lake, store, engine)
        cycle.engine = engine
        inputs = journal["feature_inputs"]
        if cycle.session_features is None or cycle.session_features.inputs() != inputs:
            cycle.use_features(features_from_inputs(cfg, calendar, lake, inputs, macro))
        pending = cycle.compute(bar, state_before=RiskState.from_dict(journal))
        for sig in pending.signals:
            row = stored.get(sig["model_id"])
            if row is None:
                diffs.append(f"model {sig['model_id']}: replay produced a signal the live path did not store")
                continue
            for f in COMPARED_FIELDS:
                if not _same(sig.get(f), row.get(f)):
                    diffs.append(f"model {sig['model_id']}: {f} replayed {sig.get(f)!r} != stored {row.get(f)!r}")
        missing = set(stored) - {s["model_id"] for s in pending.signals}
        diffs += [f"model {m}: stored signal not reproduced" for m in sorted(missing)]
        after = journal.get("state_after")
        if after is not None:
            got = pending.state_after.to_dict()
            for k, v in after.items():
                if k != "updated_at" and not _same(got.get(k), v):
                    diffs.append(f"risk state after the bar: {k} replayed {got.get(k)!r} != live {v!r}")
        out.append(BarReplay(t, sorted(stored), not diffs, diffs))
    return ReplayReport(session, out)


def report_rows(report: ReplayReport) -> list[dict[str, Any]]:
    """One printable row per bar (the CLI table and its JSON)."""
    return [{"bar_time": b.bar_time.isoformat(), "models": ",".join(b.models), "matched": b.matched,
             "differences": b.differences} for b in report.bars]

"""The live cycle without Dagster: one code path whatever the process history (warm engine, lake
rebuild, feature-cache resume give identical bits), forced flat at the close, the risk state
surviving a restart, and `usdcop replay` reproducing a session bit for bit."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from typer.testing import CliRunner

from usdcop_platform.adapters.cache import FeatureCache
from usdcop_platform.adapters.store import clear_store_cache, get_store
from usdcop_platform.core.actions import HOLD
from usdcop_platform.core.cleaning import BARS_DATASET
from usdcop_platform.app.live_bars import Bar, LiveError, SessionFeatures, StaleBar
from usdcop_platform.app.replay import replay_session
from usdcop_platform_tests.defs.live_support import LIVE_SESSION, LiveWorld, bogota, make_world

FIELDS = ("action", "raw_action", "prob_sell", "prob_hold", "prob_buy", "confidence", "risk_status",
          "failing_check", "position_recommendation", "feature_hash", "features")


@pytest.fixture
def world(tmp_path, db_url):
    w = make_world(tmp_path, db_url)
    yield w
    clear_store_cache()


def _twin(world: LiveWorld, name: str) -> LiveWorld:
    """A second store over the same lake and models (for comparing process histories)."""
    url = f"sqlite:///{(world.root / f'{name}.sqlite').as_posix()}"
    store = get_store(url)
    from usdcop_platform.bench import live_fixtures as fx

    fx.register(store, world.model)
    return LiveWorld(world.root, world.cfg, world.calendar, world.lake, url, store, world.train, world.model)


def _rows(store):
    return [{f: r[f] for f in FIELDS} for r in store.signals.list(session_date=LIVE_SESSION)]


def test_warm_lake_and_cache_paths_agree_bit_for_bit(world):
    bars = world.session_bars()[:8]
    warm = world.cycle()
    for b in bars:
        res = warm.process(b)
        assert not res.duplicate
    assert [r.pending.feature_source for r in [res]] == ["memory"]
    cold_world = _twin(world, "cold")
    cold = cold_world.cycle()
    sources = []
    for b in bars:
        cold.reset_features()  # a fresh process per bar: rebuild from the lake
        sources.append(cold.process(b, write_bar=False).pending.feature_source)
    assert set(sources) == {"lake"}
    cache_world = _twin(world, "cached")
    cached = cache_world.cycle(cache=FeatureCache(None, ttl_seconds=300, history_size=60))
    sources = []
    for b in bars:
        cached.reset_features()
        sources.append(cached.process(b, write_bar=False).pending.feature_source)
    assert sources == ["lake"] + ["cache"] * 7
    assert _rows(world.store) == _rows(cold_world.store) == _rows(cache_world.store)


def test_risk_state_survives_a_restart(world):
    bars = world.session_bars()[:6]
    first = world.cycle()
    for b in bars[:3]:
        first.process(b)
    state = world.store.risk.load("live")
    restarted = world.cycle()  # a new process: state comes from the store
    restarted.process(bars[3])
    journal = world.store.journal.load("live", bars[3].time)
    for k in ("position", "trades_today", "daily_pnl", "equity", "last_bar"):
        assert journal[k] == state[k]
    with pytest.raises(StaleBar, match="in order"):
        restarted.process(Bar(bogota(date(2024, 3, 4), 12, 55), 4000, 4000, 4000, 4000))


def test_last_bar_of_the_session_is_forced_flat(world):
    cycle = world.cycle()
    bars = world.session_bars()
    assert len(bars) == 60
    for b in bars:
        res = cycle.process(b)
    last = res.signals[0]
    assert res.pending.journal["forced_flat"] is True
    assert last["action"] == HOLD and last["position_recommendation"] == 0.0
    assert world.store.risk.load("live")["position"] == 0
    assert world.store.signals.count(LIVE_SESSION) == 60


def test_replay_reproduces_the_session_bit_for_bit(world):
    cycle = world.cycle()
    bars = world.session_bars()[:10]
    for b in bars[:5]:
        cycle.process(b)
    world.new_model(seed=2)  # swapped mid-session
    for b in bars[5:]:
        cycle.process(b)
    report = replay_session(world.cfg, world.calendar, world.lake, world.store, LIVE_SESSION)
    assert report.matched, [b.differences for b in report.mismatches()]
    assert len(report.bars) == 10 and len({b.models[0] for b in report.bars}) == 2
    # a changed stored bar is caught
    part = world.lake.read(BARS_DATASET, LIVE_SESSION.isoformat())
    import polars as pl

    world.lake.write(BARS_DATASET, LIVE_SESSION.isoformat(),
                     part.with_columns(pl.when(pl.col("time") == bars[7].time).then(pl.col("close") * 1.001)
                                       .otherwise(pl.col("close")).alias("close")))
    report = replay_session(world.cfg, world.calendar, world.lake, world.store, LIVE_SESSION)
    bad = report.mismatches()
    assert not report.matched and bad[0].bar_time == bars[7].time
    assert any("stored bar changed" in d for d in bad[0].differences)


def test_journal_names_consumed_bars_by_grid_index(world):
    cycle = world.cycle()
    bars = world.session_bars()[:4]
    for b in bars:
        cycle.process(b)
    last = world.store.journal.load("live", bars[3].time)
    assert last["feature_inputs"]["session_bar_indices"] == [0, 1, 2]
    assert world.store.journal.bars("live") == [b.time for b in bars]


def test_old_journals_with_iso_instants_still_replay(world, monkeypatch):
    """Journals written before the grid-index form carried the consumed bars as ISO instants; the
    journal is append-only, so the live run itself writes them in that form here."""
    grid_form = SessionFeatures.inputs

    def iso_form(self: SessionFeatures) -> dict:
        inputs = grid_form(self)
        inputs["session_bars"] = [self.time_of(i).isoformat() for i in inputs.pop("session_bar_indices")]
        return inputs

    monkeypatch.setattr(SessionFeatures, "inputs", iso_form)
    cycle = world.cycle()
    bars = world.session_bars()[:4]
    for b in bars:
        cycle.process(b)
    monkeypatch.undo()
    assert world.store.journal.load("live", bars[3].time)["feature_inputs"]["session_bars"] == \
        [b.time.isoformat() for b in bars[:3]]
    report = replay_session(world.cfg, world.calendar, world.lake, world.store, LIVE_SESSION)
    assert report.matched and len(report.bars) == 4, [b.differences for b in report.mismatches()]


def test_replay_command(world, monkeypatch):
    from usdcop_platform.cli import app
    from usdcop_platform.settings import get_settings

    cycle = world.cycle()
    for b in world.session_bars()[:3]:
        cycle.process(b)
    monkeypatch.setenv("USDCOP_DATA_DIR", str(world.root / "lake"))
    monkeypatch.setenv("USDCOP_MODELS_DIR", str(world.root / "models"))
    monkeypatch.setenv("DATABASE_URL", world.db_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        ok = runner.invoke(app, ["replay", "--session", LIVE_SESSION.isoformat(), "--json"])
        assert ok.exit_code == 0, ok.output
        assert '"matched": true' in ok.output and '"signals": 3' in ok.output
        none = runner.invoke(app, ["replay", "--session", "2024-03-06"])
        assert none.exit_code == 1 and "no production signals" in none.output
        bad = runner.invoke(app, ["replay", "--session", "2024-03-09"])
        assert bad.exit_code == 1 and "not a trading session" in bad.output
        junk = runner.invoke(app, ["replay", "--session", "yesterday"])
        assert junk.exit_code == 1 and "not a date" in junk.output
    finally:
        get_settings.cache_clear()


def test_nan_features_never_reach_the_model(world):
    # macro history that stops long before the session: beyond the forward-fill limit -> NaN
    from usdcop_platform.core.cleaning import MACRO_DATASET, MACRO_PARTITION

    macro = world.lake.read(MACRO_DATASET, MACRO_PARTITION)
    import polars as pl

    world.lake.write(MACRO_DATASET, MACRO_PARTITION, macro.filter(pl.col("date") < date(2024, 2, 1)))
    with pytest.raises(LiveError, match="NaN/inf"):
        world.cycle().process(world.session_bars()[0])
    assert world.store.signals.count() == 0


def test_bar_validation(world):
    cycle = world.cycle()
    b = world.session_bars()[0]
    # bad prices are refused by the batch bar rules (test_live_bar_rules.py), not raised
    assert cycle.process(Bar(b.time, b.open, b.low - 1, b.low, b.close)).quarantined is not None
    with pytest.raises(LiveError, match="naive"):
        Bar.from_mapping({"time": "2024-03-05T13:00:00", "open": 1, "high": 1, "low": 1, "close": 1})
    assert np.isfinite(b.close)


def test_a_bar_arriving_after_a_later_one_never_rewinds_the_live_state(world):
    """Two runs racing (bar 3's run wins the row lock first): bar 2 then finds the state past it
    and is refused as stale, writing nothing; the state stays at bar 3."""
    cycle = world.cycle()
    bars = world.session_bars()[:3]
    cycle.process(bars[0])
    cycle.process(bars[2])
    with pytest.raises(StaleBar, match="in order"):
        world.cycle().process(bars[1])
    assert world.store.risk.load("live")["last_bar"] == bars[2].time.isoformat()
    assert world.store.signals.count(LIVE_SESSION) == 2
    assert world.store.journal.bars("live") == [bars[0].time, bars[2].time]


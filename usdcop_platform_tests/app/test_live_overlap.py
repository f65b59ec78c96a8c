"""The live cycle reads the locked state while it screens and computes the bar (on PostgreSQL the
read runs on a background thread): the inference made for the position its last bar left must
give exactly what the sequential path gives, also when the state or the ensemble moved under it,
and a bar another run processed meanwhile must leave no trace in this cycle's features."""

from __future__ import annotations

from typing import Any

import pytest

from usdcop_platform.adapters.store import clear_store_cache, get_store
from usdcop_platform.bench import live_fixtures as fx
from usdcop_platform_tests.defs.live_support import LIVE_SESSION, LiveWorld, make_world

FIELDS = ("action", "raw_action", "prob_sell", "prob_hold", "prob_buy", "confidence", "risk_status",
          "failing_check", "position_recommendation", "feature_hash", "features", "model_id")


@pytest.fixture
def world(tmp_path, db_url):
    w = make_world(tmp_path, db_url)
    yield w
    clear_store_cache()


def _sequential_twin(world: LiveWorld) -> LiveWorld:
    """The same lake and models on a second store, for a cycle that never computes early."""
    url = f"sqlite:///{(world.root / 'twin.sqlite').as_posix()}"
    store = get_store(url)
    fx.register(store, world.model)
    return LiveWorld(world.root, world.cfg, world.calendar, world.lake, url, store, world.train, world.model)


def _rows(store: Any) -> list[dict[str, Any]]:
    return [{f: r[f] for f in FIELDS} for r in store.signals.list(session_date=LIVE_SESSION)]


def _flip_position(state: Any) -> dict[str, Any]:
    """What an API trade result or a reset does between two bars: the position is not the one
    the last bar left."""
    pos = int(state["position"])
    return {**state, "position": 1 if pos != 1 else -1, "position_size": 0.5,
            "entry_price": state.get("entry_price") or 4000.0}


def test_early_inference_equals_the_sequential_path_when_state_and_ensemble_move(world):
    bars = world.session_bars()[:12]
    twin = _sequential_twin(world)
    early, sequential = world.cycle(), twin.cycle()
    steps = {"n": 0}
    step = early.engine.step

    def counted(*a: Any, **k: Any) -> Any:
        steps["n"] += 1
        return step(*a, **k)

    early.engine.step = counted  # type: ignore[method-assign]
    for i, bar in enumerate(bars):
        if i == 4:  # the state moves between bars: the early inference used the wrong position
            for w in (world, twin):
                w.store.risk.update("live", _flip_position)
        if i == 8:  # a new production model between bars: the early inference used the old ensemble
            m = fx.make_model(world.root / "models", world.cfg, world.train, seed=7)
            for w in (world, twin):
                fx.register(w.store, m, stage="production")
        res = early.process(bar)
        sequential.reset_features()  # nothing in memory: no early inference, features from the lake
        seq = sequential.process(bar, write_bar=False)
        assert not res.duplicate and not seq.duplicate
        assert res.pending.journal["prediction"] == seq.pending.journal["prediction"], i
        assert res.pending.journal["decision"] == seq.pending.journal["decision"], i
        assert res.pending.journal["feature_inputs"] == seq.pending.journal["feature_inputs"], i
    assert _rows(world.store) == _rows(twin.store)
    # one model step per bar, plus a second for the two bars whose early inference was stale
    assert steps["n"] == len(bars) + 2


def test_a_bar_another_run_processed_meanwhile_is_returned_and_the_features_rebuilt(world):
    bars = world.session_bars()[:6]
    mine, other = world.cycle(), world.cycle()  # two processes on one store
    for bar in bars[:4]:
        mine.process(bar)
    other.process(bars[4])  # another run processes the next bar first
    res = mine.process(bars[4])  # computed early for the bar, then found it processed
    assert res.duplicate and res.signals == other.process(bars[4]).signals
    assert mine.session_features is None, "features that moved past a bar processed elsewhere are dropped"
    nxt = mine.process(bars[5])
    assert nxt.pending.feature_source == "lake"
    twin = _sequential_twin(world)
    sequential = twin.cycle()
    for bar in bars:
        sequential.reset_features()
        sequential.process(bar, write_bar=False)
    assert _rows(world.store) == _rows(twin.store)

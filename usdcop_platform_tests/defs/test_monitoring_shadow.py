"""monitoring/shadow_signals: challengers (real ONNX policies) run beside production on the
production observations, stored with role shadow, never acted on; parity with the backtest path."""

from __future__ import annotations

from datetime import date

import dagster as dg
import numpy as np

from usdcop_platform.bench import live_fixtures as fx
from usdcop_platform.core.onnx_policy import OnnxPolicy
from usdcop_platform.core.policy_runner import run_policy_over_bars
from usdcop_platform.defs.monitoring.assets import MonitoringRunConfig
from usdcop_platform.defs.monitoring.sensors import shadow_signals_sensor
from usdcop_platform.app.monitoring import SHADOW_ROLE, challengers
from usdcop_platform.defs.monitoring.shadow import shadow_signals
from usdcop_platform_tests.defs.monitoring_support import add_signals, at, config_copy, make_world

D = date(2024, 3, 5)


def _models(world, tmp_path, rng):
    cfg = world.cfg
    train = rng.normal(size=(400, cfg.features.n_features))
    train[:, cfg.features.names.index("position")] = rng.integers(-1, 2, 400)
    prod = fx.make_model(tmp_path / "models", cfg, train, seed=1)
    chal = fx.make_model(tmp_path / "models", cfg, train, seed=2)
    other = fx.make_model(tmp_path / "models", cfg, train, seed=3)
    fx.register(world.store, prod, "production")
    for m in (chal, other):
        fx.register(world.store, m, "staging")
    world.store.proposals.upsert(
        model_id=chal.model_id, experiment_name="smoke", experiment_version="fixture", recommendation="REVIEW", confidence=0.6
    )
    return prod, chal, other


def _observations(world, rng, n):
    x = rng.normal(size=(n, world.cfg.features.n_features))
    x[:, world.cfg.features.names.index("position")] = 0.0
    return x


def _run(world, as_of):
    return dg.materialize(
        [shadow_signals],
        resources=world.resources(),
        run_config=dg.RunConfig(ops={"monitoring__shadow_signals": MonitoringRunConfig(as_of=as_of.isoformat())}),
        raise_on_error=False,
    )


def test_challenger_matches_the_backtest_policy_run(tmp_path, sqlite_url) -> None:
    config = config_copy(tmp_path, **{"risk.min_confidence": 0.0})  # no confidence gate: pure policy parity
    world = make_world(tmp_path, sqlite_url, config)
    rng = np.random.default_rng(0)
    prod, chal, other = _models(world, tmp_path, rng)
    assert [c["model_id"] for c in challengers(world.store, 3)] == [chal.model_id]
    x = _observations(world, rng, 60)
    add_signals(world, D, prod.model_id, "production", [1] * 60, x)

    result = _run(world, at(world, D, 13, 5))
    assert result.success
    shadow = world.store.signals.list(session_date=D, model_id=chal.model_id, role=SHADOW_ROLE)
    assert len(shadow) == 60 and not world.store.signals.list(model_id=other.model_id)
    run = run_policy_over_bars(
        OnnxPolicy(chal.onnx_path), chal.norm_stats, x, np.zeros(60),
        flat_at_session_end=True, position_index=world.cfg.features.names.index("position"),
    )
    assert [s["raw_action"] for s in shadow] == run.actions.tolist()
    np.testing.assert_allclose([[s["prob_sell"], s["prob_hold"], s["prob_buy"]] for s in shadow], run.probabilities, atol=1e-6)
    positions = [{0: -1, 1: 0, 2: 1}[s["action"]] for s in shadow]
    assert positions == run.positions.tolist()  # own position chain, flat at the close
    pos_idx = world.cfg.features.names.index("position")
    assert [s["features"][pos_idx] for s in shadow[1:]] == positions[:-1]
    assert all(s["position_recommendation"] == 0.0 for s in shadow)  # never acted on

    again = _run(world, at(world, D, 13, 5))
    assert again.success
    assert len(world.store.signals.list(model_id=chal.model_id)) == 60  # idempotent


def test_confidence_gate_and_incremental_catch_up(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    rng = np.random.default_rng(1)
    prod, chal, _ = _models(world, tmp_path, rng)
    x = _observations(world, rng, 24)
    add_signals(world, D, prod.model_id, "production", [1] * 12, x[:12])
    assert _run(world, at(world, D, 9, 0)).success
    assert len(world.store.signals.list(model_id=chal.model_id)) == 12
    # more bars arrive: only the new ones are computed, the position carries over
    grid = world.calendar.session_grid_utc(D)
    for i in range(12, 24):
        world.store.signals.upsert({
            "bar_time": grid[i], "session_date": D, "model_id": prod.model_id, "role": "production", "action": 1,
            "raw_action": 1, "prob_sell": 0.2, "prob_hold": 0.6, "prob_buy": 0.2, "confidence": 0.6,
            "risk_status": "APPROVED", "features": [float(v) for v in x[i]],
        })
    assert _run(world, at(world, D, 10, 5)).success
    shadow = world.store.signals.list(model_id=chal.model_id)
    assert len(shadow) == 24
    min_conf = world.cfg.mlops.risk.min_confidence
    gated = [s["confidence"] < min_conf for s in shadow]
    assert any(gated) and not all(gated), "the data must exercise both sides of the gate"
    for s in shadow:
        if s["confidence"] < min_conf:
            assert s["action"] == 1 and s["risk_status"] == "REJECTED" and s["failing_check"] == "min_confidence"
        else:
            assert s["action"] == s["raw_action"] and s["risk_status"] == "APPROVED"
    pos_idx = world.cfg.features.names.index("position")
    assert shadow[12]["features"][pos_idx] == {0: -1, 1: 0, 2: 1}[shadow[11]["action"]]


def test_no_challenger_skips_and_sensor_fires_once_per_bar(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    result = _run(world, at(world, D, 10))
    assert result.success and not result.get_asset_materialization_events()
    ctx = dg.build_sensor_context(resources=world.resources())
    assert "no challenger" in shadow_signals_sensor(ctx).skip_message

    rng = np.random.default_rng(2)
    prod, chal, _ = _models(world, tmp_path, rng)
    add_signals(world, D, prod.model_id, "production", [1] * 3, _observations(world, rng, 3))
    ctx = dg.build_sensor_context(resources=world.resources())
    req = shadow_signals_sensor(ctx)
    assert isinstance(req, dg.RunRequest) and req.run_key.startswith("shadow:2024-03-05T13:10")
    ctx2 = dg.build_sensor_context(resources=world.resources(), cursor=ctx.cursor)
    assert "no new production signal" in shadow_signals_sensor(ctx2).skip_message


def test_unservable_challenger_is_reported_not_fatal(tmp_path, sqlite_url) -> None:
    world = make_world(tmp_path, sqlite_url)
    rng = np.random.default_rng(3)
    prod, chal, _ = _models(world, tmp_path, rng)
    chal.onnx_path.write_bytes(b"corrupted")
    add_signals(world, D, prod.model_id, "production", [1] * 3, _observations(world, rng, 3))
    result = _run(world, at(world, D, 10))
    assert result.success
    (mat,) = result.get_asset_materialization_events()
    unservable = mat.event_specific_data.materialization.metadata["unservable"].value
    assert chal.model_id in unservable and "sha256" in unservable[chal.model_id]
    assert world.store.signals.list(model_id=chal.model_id) == []

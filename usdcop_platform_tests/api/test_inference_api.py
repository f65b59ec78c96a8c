"""MLOps inference API on the real app, store (SQLite and PostgreSQL) and ONNX models."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import pytest

from usdcop_platform.api.inference import MAX_BATCH, inference_service
from usdcop_platform.bench import live_fixtures as fx
from usdcop_platform.contracts.platform import get_config
from usdcop_platform.core.risk import LIVE_RISK_KEY, RiskState

CFG = get_config()
N = CFG.features.n_features
POS = CFG.features.names.index("position")
IN_SESSION = datetime(2024, 3, 5, 14, 0, tzinfo=timezone.utc)  # 09:00 Bogota, a Tuesday


@pytest.fixture
def train():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, N))
    x[:, POS] = rng.integers(-1, 2, 400)
    return x


@pytest.fixture
def model(store, settings, train):
    m = fx.make_model(settings.models_dir, CFG, train, seed=1)
    fx.register(store, m)
    return m


def obs(seed=1):
    x = np.random.default_rng(seed).normal(size=N)
    x[POS] = 0
    return [float(v) for v in x]


def post(client, keys, body, role="viewer", path="/v1/inference"):
    return client.post(path, json=body, headers=keys.h(role))


def test_no_production_model_is_503(client, keys):
    r = post(client, keys, {"observation": obs()})
    assert r.status_code == 503 and "no production model" in r.json()["error"]["message"]


def test_prediction_matches_the_engine(client, keys, model, store):
    r = post(client, keys, {"observation": obs(), "at": IN_SESSION.isoformat()})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["probabilities"]) == {"SELL", "HOLD", "BUY"}
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-6)
    assert body["models"][0]["model_id"] == model.model_id and body["features_source"] == "request"
    assert body["risk"]["status"] in ("APPROVED", "REJECTED") and body["latency_ms"] > 0
    from usdcop_platform.core.inference import InferenceEngine

    direct = InferenceEngine(store, CFG.features, CFG.mlops.ensemble).predict(obs())
    assert body["action"] == direct.action and body["confidence"] == direct.confidence


@pytest.mark.parametrize("payload,needle", [
    ('{"observation": [%s]}' % ",".join(["0.1"] * 14), "exactly 15 values"),
    ('{"observation": [%s]}' % ",".join(["0.1"] * 16), "exactly 15 values"),
    ('{"observation": [NaN%s]}' % (",0.1" * 14), "finite number"),
    ('{"observation": [Infinity%s]}' % (",0.1" * 14), "finite number"),
    ('{"observation": ["x"%s]}' % (",0.1" * 14), "observation"),
    ('{}', "exactly one of observation or bar_time"),
    ('{"observation": [%s], "bar_time": "2024-03-05T14:00:00Z"}' % ",".join(["0.1"] * 15), "exactly one"),
    ('{"observation": [%s]}' % ",".join(["0.1"] * 13 + ["0.5", "0.1"]), "position"),
    ('{"observation": [%s], "at": "2024-03-05T14:00:00"}' % ",".join(["0.1"] * 15), "timezone"),
    ('not json', "JSON"),
])
def test_bad_observations_are_422_with_a_clear_message(client, keys, model, payload, needle):
    r = client.post("/v1/inference", content=payload, headers={**keys.h("viewer"), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]["message"]


def test_batch(client, keys, model):
    rows = [obs(s) for s in range(5)]
    r = post(client, keys, {"observations": rows}, path="/v1/inference/batch")
    assert r.status_code == 200 and r.json()["count"] == 5
    singles = [post(client, keys, {"observation": o}).json()["probabilities"] for o in rows]
    assert [p["probabilities"] for p in r.json()["predictions"]] == singles
    big = post(client, keys, {"observations": [obs()] * (MAX_BATCH + 1)}, path="/v1/inference/batch")
    assert big.status_code == 422 and str(MAX_BATCH) in big.json()["error"]["message"]
    bad = post(client, keys, {"observations": [obs(), obs()[:10]]}, path="/v1/inference/batch")
    assert bad.status_code == 422 and "observations[1] must have exactly 15" in bad.json()["error"]["message"]
    empty = post(client, keys, {"observations": []}, path="/v1/inference/batch")
    assert empty.status_code == 422


def test_auth_and_roles(client, keys, model, store):
    assert client.post("/v1/inference", json={"observation": obs()}).status_code == 401
    assert client.post("/v1/inference", json={"observation": obs()}, headers={"X-API-Key": "usdcop_nope"}).status_code == 401
    assert post(client, keys, {"pnl": 0.01}, "viewer", "/v1/risk/trade-result").status_code == 403
    assert post(client, keys, {"pnl": 0.01}, "reviewer", "/v1/risk/trade-result").status_code == 200
    assert post(client, keys, {}, "reviewer", "/v1/risk/reset").status_code == 403
    r = post(client, keys, {"notes": "after the outage"}, "admin", "/v1/risk/reset")
    assert r.status_code == 200
    audit = store.audit.list(action="RISK_RESET")
    assert audit[0]["reviewer"] == "ada-admin" and audit[0]["notes"] == "after the outage"


def test_trade_results_trip_the_breaker_and_reset_clears_it(client, keys, model):
    r = post(client, keys, {"pnl": -0.025, "at": IN_SESSION.isoformat()}, "reviewer", "/v1/risk/trade-result")
    assert r.status_code == 200 and r.json()["breaker_active"] and r.json()["breaker_reason"] == "daily_loss"
    summary = client.get("/v1/risk/summary", headers=keys.h("viewer")).json()
    assert summary["breaker_active"] and summary["daily_pnl"] == pytest.approx(-0.025)
    assert summary["limits"]["max_daily_loss_pct"] == 2.0 and summary["check_order"][0] == "hold"
    # a confident BUY/SELL is now rejected by the breaker
    for seed in range(200):
        body = post(client, keys, {"observation": obs(seed), "at": IN_SESSION.isoformat()}).json()
        if body["action"] != 1 and body["confidence"] >= 0.6:
            assert body["risk"]["status"] == "REJECTED" and body["risk"]["failing_check"] == "circuit_breaker"
            assert body["risk"]["final_action_name"] == "HOLD"
            break
    else:
        pytest.fail("no confident BUY/SELL among 200 observations")
    assert post(client, keys, {}, "admin", "/v1/risk/reset").json()["breaker_active"] is False
    assert post(client, keys, {"pnl": 2.0}, "reviewer", "/v1/risk/trade-result").status_code == 422


def test_trade_result_during_a_live_bar_loses_neither_and_reset_audits_before_after(client, keys, store):
    """The live path (another process) holds the risk row while the API records a trade result:
    the API waits and builds on the bar's state, instead of overwriting it. (On SQLite the
    request's key check, a write, already queues behind the bar; on PostgreSQL only the row lock
    of the atomic update makes the trade result wait.)"""
    store.risk.save(LIVE_RISK_KEY, RiskState().to_dict())  # an earlier bar's row, which the bar locks
    bar_inside = threading.Event()

    def live_bar(cur):
        bar_inside.set()
        time.sleep(0.3)  # the bar's work, inside its transaction
        return {**RiskState.from_dict(cur).to_dict(), "trading_date": IN_SESSION.date().isoformat(),
                "last_bar": IN_SESSION.isoformat(), "position": 1, "position_size": 0.1,
                "entry_price": 4000.0, "trades_today": 1, "total_trades": 1}

    with ThreadPoolExecutor(1) as pool:
        bar = pool.submit(store.risk.update, LIVE_RISK_KEY, live_bar)
        assert bar_inside.wait(10)
        r = post(client, keys, {"pnl": -0.005, "at": IN_SESSION.isoformat()}, "reviewer", "/v1/risk/trade-result")
        bar.result(30)
    assert r.status_code == 200, r.text
    st = RiskState.from_dict(store.risk.load(LIVE_RISK_KEY))
    assert st.last_bar == IN_SESSION and st.position == 1 and st.trades_today == 1  # the bar's write
    assert st.consecutive_losses == 1 and st.daily_pnl == pytest.approx(-0.005)  # the API's

    assert post(client, keys, {"notes": "x"}, "admin", "/v1/risk/reset").status_code == 200
    details = store.audit.list(action="RISK_RESET")[0]["details"]
    assert details["before"]["consecutive_losses"] == 1 and details["before"]["trades_today"] == 1
    assert details["after"]["consecutive_losses"] == 0 and details["after"]["position"] == 1


def test_cached_features_by_bar_time(client, keys, model):
    svc = inference_service(client.app)
    bar = IN_SESSION
    svc.cache.put(bar, np.asarray(obs(3)), {"session": "2024-03-05"})
    r = post(client, keys, {"bar_time": bar.isoformat()})
    assert r.status_code == 200 and r.json()["features_source"] == "cache"
    assert r.json()["probabilities"] == post(client, keys, {"observation": obs(3)}).json()["probabilities"]
    miss = post(client, keys, {"bar_time": "2024-03-05T14:05:00+00:00"})
    assert miss.status_code == 404
    stats = client.get("/v1/cache/stats", headers=keys.h("viewer")).json()
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["backend"] == "memory"


def test_models_hot_reload_and_failed_load(client, keys, model, store, settings, train):
    assert client.get("/v1/models", headers=keys.h("viewer")).json()["served"]["members"][0]["model_id"] == model.model_id
    inference_service(client.app).engine.poll_interval_s = 0.0
    b = fx.make_model(settings.models_dir, CFG, train, seed=2)
    fx.register(store, b)
    body = post(client, keys, {"observation": obs()}).json()
    assert body["models"][0]["model_id"] == b.model_id
    c = fx.make_model(settings.models_dir, CFG, train, seed=3)
    c.onnx_path.write_bytes(b"corrupted")
    fx.register(store, c)
    body = post(client, keys, {"observation": obs()}).json()
    assert body["models"][0]["model_id"] == b.model_id  # the broken model never serves
    m = client.get("/v1/models", headers=keys.h("viewer")).json()
    assert m["production"]["model_id"] == c.model_id and "corrupted or replaced" in m["served"]["last_error"]


def test_corrupted_production_model_is_503(client, keys, store, settings, train):
    m = fx.make_model(settings.models_dir, CFG, train, seed=1)
    m.onnx_path.write_bytes(b"corrupted")
    fx.register(store, m)
    r = post(client, keys, {"observation": obs()})
    assert r.status_code == 503 and "corrupted or replaced" in r.json()["error"]["message"]


def test_metrics_json_and_prometheus(client, keys, model):
    for s in range(3):
        post(client, keys, {"observation": obs(s)})
    post(client, keys, {"observation": [1.0] * 3})
    m = client.get("/v1/metrics", headers=keys.h("viewer")).json()
    ep = m["endpoints"]["/v1/inference"]
    assert ep["requests"] == 4 and ep["errors"] == 1 and ep["p50_ms"] > 0
    assert m["engine"]["loaded"] and m["cache"]["backend"] == "memory"
    text = client.get("/metrics").text
    assert 'usdcop_inference_requests_total{endpoint="/v1/inference",status="200"} 3.0' in text
    assert 'usdcop_inference_requests_total{endpoint="/v1/inference",status="422"} 1.0' in text
    assert f'usdcop_model_served{{model_id="{model.model_id}"}} 1.0' in text
    assert "usdcop_inference_request_seconds_bucket" in text and "usdcop_risk_breaker_active" in text
    assert json.loads(json.dumps(m))  # JSON-serializable


def test_prometheus_reports_the_registry_version_before_any_model_call(client, store, model) -> None:
    text = client.get("/metrics").text  # no inference request yet
    assert f"usdcop_registry_version {float(store.registry_version())}" in text
    assert store.registry_version() >= 1 and f'usdcop_model_served{{model_id="{model.model_id}"}} 1.0' in text


def test_standalone_inference_app(settings, store, keys, model):
    from fastapi.testclient import TestClient

    from usdcop_platform.api.inference import standalone_app

    with TestClient(standalone_app(settings, store)) as c:
        r = c.post("/v1/inference", json={"observation": obs()}, headers=keys.h("viewer"))
        assert r.status_code == 200 and r.json()["models"][0]["model_id"] == model.model_id
        assert c.post("/v1/inference", json={"observation": obs()[:3]}, headers=keys.h("viewer")).status_code == 422
        assert "usdcop_inference_requests_total" in c.get("/metrics").text

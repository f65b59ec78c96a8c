"""Monitoring API: /health/detailed (each component separately), alerts, rollback proposals,
drift history, and the audited admin rollback (incl. no previous model)."""

from __future__ import annotations

from usdcop_platform.core.alerts import KIND_ROLLBACK

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from usdcop_platform.api.app import create_app
from usdcop_platform.bench import live_fixtures as fx
from usdcop_platform.contracts.platform import get_config
from usdcop_platform.core.calendar import TradingCalendar
from usdcop_platform.core.cleaning import BARS_DATASET
from usdcop_platform.app import monitoring_history as h
from usdcop_platform.app.lifecycle import propose_rollback
from usdcop_platform_tests.api.conftest import make_settings


@pytest.fixture
def cfg():
    return get_config()


def _fixture_model(store, settings, cfg, seed: int, stage: str):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(200, cfg.features.n_features))
    model = fx.make_model(settings.models_dir, cfg, train, seed=seed)
    fx.register(store, model, stage)
    return model


def test_health_detailed_reports_every_component(client, store, settings, lake, cfg, keys, tmp_path) -> None:
    r = client.get("/health/detailed")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded"  # no model yet
    assert body["database"]["status"] == "ok" and body["database"]["dialect"] == store.dialect
    assert body["redis"]["status"] == "not_configured"
    assert body["model"]["status"] == "unavailable" and "no production model" in body["model"]["detail"]
    assert body["sensors"]["status"] == "unavailable" and "no Dagster instance" in body["sensors"]["detail"]
    assert body["last_bar"]["last"] is None and body["last_signal"]["last"] is None

    model = _fixture_model(store, settings, cfg, 1, "production")
    cal = TradingCalendar(cfg.instrument)
    t = datetime(2024, 3, 5, 14, 0, tzinfo=timezone.utc)
    lake.write(BARS_DATASET, "2024-03-05", pl.DataFrame({"time": [t], "close": [4000.0]}, schema={"time": pl.Datetime("us", "UTC"), "close": pl.Float64}))
    store.signals.upsert({
        "bar_time": t, "session_date": "2024-03-05", "model_id": model.model_id, "role": "production", "action": 1,
        "raw_action": 1, "prob_sell": 0.2, "prob_hold": 0.6, "prob_buy": 0.2, "confidence": 0.6, "risk_status": "APPROVED",
    })
    body = client.get("/health/detailed").json()
    assert body["model"] == {"status": "ok", "detail": None, "model_id": model.model_id, "experiment": "smoke",
                             "onnx_present": True, "onnx_hash_matches": True, "served_model_ids": None,
                             "served_registry_version": None, "served_error": None}
    assert client.get("/v1/models", headers=keys.h("viewer")).status_code == 200  # the inference engine loads
    served = client.get("/health/detailed").json()["model"]
    assert served["served_model_ids"] == [model.model_id] and served["served_registry_version"] == store.registry_version()
    now = datetime.now(timezone.utc)
    for key in ("last_bar", "last_signal"):
        age = body[key]["age_seconds"]
        expected = (now - (t + cal.bar_delta)).total_seconds()
        assert body[key]["last"].startswith("2024-03-05T14:00") and abs(age - expected) < 60
        assert body[key]["market_open"] == cal.is_open(now)

    model.onnx_path.write_bytes(b"tampered")
    body = client.get("/health/detailed").json()
    assert body["model"]["status"] == "degraded" and body["model"]["onnx_hash_matches"] is False
    assert body["status"] == "degraded"
    model.onnx_path.unlink()
    r = client.get("/health/detailed")
    assert "policy.onnx missing" in r.json()["model"]["detail"]
    assert str(tmp_path) not in r.text and str(settings.models_dir) not in r.text  # no absolute paths, unauthenticated


def test_health_detailed_redis(tmp_path, sqlite_url, redis_url) -> None:
    with TestClient(create_app(make_settings(tmp_path, sqlite_url, REDIS_URL=redis_url))) as c:
        assert c.get("/health/detailed").json()["redis"]["status"] == "ok"
    with TestClient(create_app(make_settings(tmp_path, sqlite_url, REDIS_URL="redis://127.0.0.1:1/0"))) as c:
        redis = c.get("/health/detailed").json()["redis"]
        assert redis["status"] == "unavailable" and redis["detail"]


def test_health_detailed_database_down_is_503(tmp_path) -> None:
    settings = make_settings(tmp_path, "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    with TestClient(create_app(settings)) as c:
        r = c.get("/health/detailed")
    assert r.status_code == 503
    body = r.json()
    assert body["database"]["status"] == "unavailable" and "database unavailable" in body["database"]["detail"]
    assert body["status"] == "degraded" and body["redis"]["status"] == "not_configured"
    # user, host, host:port, port/name, name, driver (":1" alone also matches a timestamp's minutes)
    for secret in ("127.0.0.1", "nobody", "127.0.0.1:1", ":1/", "/none", "postgresql"):
        assert secret not in r.text, secret
    with TestClient(create_app(settings)) as c:
        r = c.get("/health")
        assert r.status_code == 503 and "127.0.0.1" not in r.text and "nobody" not in r.text
        keyed = c.get("/api/models", headers={"X-API-Key": "usdcop_" + "x" * 43})
        assert keyed.status_code == 503 and "127.0.0.1" not in keyed.text and "nobody" not in keyed.text


def test_health_detailed_reads_an_empty_dagster_instance(tmp_path, sqlite_url) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with TestClient(create_app(make_settings(tmp_path, sqlite_url, DAGSTER_HOME=str(home)))) as c:
        sensors = c.get("/health/detailed").json()["sensors"]
    assert sensors["status"] == "ok" and sensors["sensors"] == [] and "no sensor" in sensors["detail"]
    assert "dagster_home" not in sensors and str(home) not in str(sensors)


def test_alerts_and_drift_history_need_a_key(client, store, lake, keys) -> None:
    store.alerts.add("feature_drift", "WARN", "drift share 0.4 above 0.15", {"model_id": "m"})
    assert client.get("/api/monitoring/alerts").status_code == 401
    r = client.get("/api/monitoring/alerts", headers=keys.h("viewer"))
    assert r.status_code == 200 and [a["kind"] for a in r.json()] == ["feature_drift"]
    assert r.json()[0]["delivered"] is False
    assert len(client.get("/api/monitoring/alerts?pending=true", headers=keys.h("viewer")).json()) == 1
    assert client.get("/api/monitoring/alerts?kind=DROP;", headers=keys.h("viewer")).status_code == 422

    t = datetime(2024, 3, 5, 15, tzinfo=timezone.utc)
    row = h.history_row(h.DRIFT_SCHEMA, checked_at=t, status="DRIFT", model_id="m", drift_share=0.4, threshold=0.15,
                        drifted_features="rsi_9,vix_z")
    h.append(lake, h.DRIFT_DATASET, t.date(), row)
    drift = client.get("/api/monitoring/drift", headers=keys.h("viewer")).json()
    assert drift[0]["drifted_features"] == ["rsi_9", "vix_z"] and drift[0]["status"] == "DRIFT"


def test_rollback_proposal_then_admin_rollback_with_audit(client, store, settings, cfg, keys) -> None:
    old = _fixture_model(store, settings, cfg, 1, "production")
    new = _fixture_model(store, settings, cfg, 2, "production")
    assert client.get("/api/monitoring/rollback-proposals", headers=keys.h("viewer")).json() == []
    propose_rollback(store, None, model_id=new.model_id, reason="realized Sharpe 2.5 below the backtest")
    (proposal,) = client.get("/api/monitoring/rollback-proposals", headers=keys.h("viewer")).json()
    assert proposal["model_id"] == new.model_id and proposal["target_model_id"] == old.model_id

    assert client.post("/api/models/rollback", json={"notes": "x", "expected_registry_version": 0}, headers=keys.h("reviewer")).status_code == 403
    r = client.post("/api/models/rollback", json={"notes": "approve the rollback proposal", "expected_registry_version": store.registry_version()}, headers=keys.h("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["model_id"] == old.model_id and r.json()["previous_production_model_id"] == new.model_id
    assert store.models.production()["model_id"] == old.model_id
    (audit,) = store.audit.list(action="ROLLBACK")
    assert audit["reviewer"] == "ada-admin" and audit["notes"] == "approve the rollback proposal"
    # the API rollback is alerted like `usdcop rollback` (same lifecycle function)
    (alert,) = [a for a in store.alerts.list() if a["kind"] == KIND_ROLLBACK]
    assert new.model_id in alert["message"] and old.model_id in alert["message"]
    # the proposal was for the model that is no longer production: nothing open any more
    assert client.get("/api/monitoring/rollback-proposals", headers=keys.h("viewer")).json() == []


def test_rollback_without_previous_model_is_a_clear_error(client, store, settings, cfg, keys) -> None:
    _fixture_model(store, settings, cfg, 1, "production")
    r = client.post("/api/models/rollback", json={"notes": "try", "expected_registry_version": store.registry_version()}, headers=keys.h("admin"))
    assert r.status_code == 404
    assert "no previous production model" in r.json()["error"]["message"]

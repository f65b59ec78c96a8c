"""The MLflow alias `champion` follows the production model (real MLflow on a temp sqlite store)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from usdcop_platform.adapters.tracking import MlflowTracking, run_url
from usdcop_platform.api.app import create_app
from usdcop_platform.app.champion import CHAMPION_ALIAS
from usdcop_platform_tests.api.conftest import make_settings, seed_proposal

pytestmark = pytest.mark.slow


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def _register(resource: MlflowTracking, experiment: str) -> tuple[str, str]:
    """One training run with one registered model version, as training does; (run_id, version)."""
    run = resource.start_run(experiment, "train")
    client = run.client
    name = resource.registered_model_name(experiment)
    try:
        client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST
        client.create_registered_model(name)
    source = f"{client.get_run(run.run_id).info.artifact_uri}/onnx_model"
    version = client.create_model_version(name, source, run_id=run.run_id)
    run.end()
    return run.run_id, str(version.version)


def test_champion_follows_approvals_and_rollbacks(tmp_path: Path, db_url, store, lake, calendar, keys) -> None:
    settings = make_settings(tmp_path, db_url, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    resource = MlflowTracking.from_settings(settings)
    client = resource.client()
    name = resource.registered_model_name("baseline")
    (run_a, ver_a), (run_b, ver_b), (run_c, ver_c) = (_register(resource, "baseline") for _ in range(3))
    a = seed_proposal(store, lake, calendar, seed=1, n_sessions=2, with_series=False,
                      mlflow_run_id=run_a, mlflow_model_version=ver_a)
    b = seed_proposal(store, lake, calendar, seed=2, n_sessions=2, with_series=False,
                      mlflow_run_id=run_b, mlflow_model_version=ver_b)
    c = seed_proposal(store, lake, calendar, seed=3, n_sessions=2, with_series=False, mlflow_run_id=run_c)

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version)

    with TestClient(create_app(settings, store)) as api:
        def approve(p) -> None:
            r = api.post(f"/api/experiments/{p['proposal_id']}/approve", headers=keys.h("reviewer"),
                         json={"decision": "APPROVE", "notes": "ok", "override_confirmed": True})
            assert r.status_code == 200, r.text

        approve(a)
        assert champion() == ver_a
        approve(b)
        assert champion() == ver_b
        r = api.post("/api/models/rollback", headers=keys.h("admin"), json={"notes": "live drawdown", "expected_registry_version": store.registry_version()})
        assert r.status_code == 200 and r.json()["model_id"] == a["model_id"]
        assert champion() == ver_a
        # c was trained last: it is the challenger until approved, then only the champion
        client.set_registered_model_alias(name, "challenger", ver_c)
        approve(c)  # no version recorded: found from the run id
        assert champion() == ver_c
        assert "challenger" not in client.get_model_version(name, ver_c).aliases
        # the experiment opens in MLflow's model-development view, not the GenAI one
        exp = client.get_experiment_by_name(resource.experiment_name("baseline"))
        assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
        # the review page links the run in the MLflow UI (`mlflow ui`'s port for a local store)
        detail = api.get(f"/api/experiments/{c['proposal_id']}", headers=keys.h("viewer")).json()
        assert detail["mlflow_run_id"] == run_c and detail["mlflow_url"] == run_url(settings.resolved_mlflow_ui_url, run_c)


def test_mlflow_failure_never_blocks_an_approval(
    tmp_path: Path, db_url, store, lake, calendar, keys, caplog, monkeypatch
) -> None:
    # MLflow's HTTP client retries for minutes by default; fail fast here
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    settings = make_settings(tmp_path, db_url, MLFLOW_TRACKING_URI="http://127.0.0.1:1")
    p = seed_proposal(store, lake, calendar, n_sessions=2, with_series=False,
                      mlflow_run_id="0" * 32, mlflow_model_version="7")
    with caplog.at_level(logging.ERROR, logger="usdcop_platform.app.champion"), \
            TestClient(create_app(settings, store)) as api:
        r = api.post(f"/api/experiments/{p['proposal_id']}/approve", headers=keys.h("reviewer"),
                     json={"decision": "APPROVE", "notes": "ok", "override_confirmed": True})
        assert r.status_code == 200
        detail = api.get(f"/api/experiments/{p['proposal_id']}", headers=keys.h("viewer")).json()
        assert detail["mlflow_url"] == run_url("http://127.0.0.1:1", "0" * 32)  # the tracking server is its UI
    assert store.models.production()["model_id"] == p["model_id"]
    assert any("champion" in rec.getMessage() for rec in caplog.records)

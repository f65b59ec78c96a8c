"""REQUEST_MORE_TESTS launches the evaluation job through the Dagster GraphQL client."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from usdcop_platform.api.app import create_app
from usdcop_platform.api.launcher import BACKTEST_JOB_NAME, graphql_client, run_config, run_tags
from usdcop_platform_tests.api.conftest import make_settings, seed_proposal

REQUEST = {"id": 7, "model_id": "baseline-abc", "proposal_id": "prop_1", "start_date": date(2023, 1, 2),
           "end_date": date(2023, 6, 30), "requested_by": "rita-reviewer"}
WEBSERVER_START_TIMEOUT_S = 180


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url


def test_run_config_fits_the_real_evaluation_job() -> None:
    import dagster as dg

    from usdcop_platform.defs.evaluation.assets import BACKTEST_KEY, PROPOSAL_KEY
    from usdcop_platform.definitions import defs

    job = defs.resolve_job_def(BACKTEST_JOB_NAME)
    config = run_config(REQUEST)
    assert set(config["ops"]) == {BACKTEST_KEY.to_python_identifier(), PROPOSAL_KEY.to_python_identifier()}
    assert dg.validate_run_config(job, config)["ops"][BACKTEST_KEY.to_python_identifier()]["config"] == {
        "model_id": "baseline-abc", "start": "2023-01-02", "end": "2023-06-30", "allow_partial": False
    }
    tags = run_tags(REQUEST, "baseline")
    assert tags["dagster/partition"] == "baseline" and tags["usdcop/backtest_request_id"] == "7"


@pytest.mark.parametrize(
    ("url", "host", "port", "https", "prefix"),
    [
        ("http://dagster:3000", "dagster", 3000, False, ""),
        ("https://ops.example.test/dagster/", "ops.example.test", None, True, "/dagster"),
        ("localhost:3000", "localhost", 3000, False, ""),
    ],
)
def test_graphql_client_from_url(monkeypatch, url, host, port, https, prefix) -> None:
    import dagster_graphql

    seen = {}

    class Recorder:
        def __init__(self, hostname, port_number=None, use_https=False, timeout=0, path_prefix=""):  # noqa: ANN001
            seen.update(hostname=hostname, port=port_number, https=use_https, prefix=path_prefix)

    monkeypatch.setattr(dagster_graphql, "DagsterGraphQLClient", Recorder)
    graphql_client(url)
    assert seen == {"hostname": host, "port": port, "https": https, "prefix": prefix}


def test_unreachable_webserver_leaves_the_request_pending(tmp_path, db_url, store, lake, calendar, keys) -> None:
    settings = make_settings(tmp_path, db_url, USDCOP_DAGSTER_URL="http://127.0.0.1:1")
    p = seed_proposal(store, lake, calendar, n_sessions=2, with_series=False)
    with TestClient(create_app(settings, store)) as c:
        r = c.post(f"/api/experiments/{p['proposal_id']}/backtest", headers=keys.h("reviewer"),
                   json={"start_date": "2023-01-02", "end_date": "2023-03-31"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["launched"] is False and "launch failed" in body["message"]
    assert body["request"]["status"] == "PENDING" and body["request"]["error"]
    assert store.backtest_requests.list(status="PENDING")[0]["error"] == body["request"]["error"]
    assert store.audit.list()[0]["action"] == "REQUEST_MORE_TESTS"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dagster_webserver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The real code location (usdcop_platform.definitions) served by dagster-webserver."""
    import httpx

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "USDCOP_STATE_DIR": str(tmp_path / "state"),
           "USDCOP_DATA_DIR": str(tmp_path / "lake"), "USDCOP_MODELS_DIR": str(tmp_path / "models")}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-m", "usdcop_platform.definitions", "-h", "127.0.0.1",
         "-p", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WEBSERVER_START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not start (exit code {proc.poll()})")
            time.sleep(1)
        yield url, home
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the webserver and its code-server child
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_request_more_tests_launches_a_dagster_run(
    dagster_webserver, tmp_path, db_url, store, lake, calendar, keys
) -> None:
    from dagster import DagsterInstance

    url, home = dagster_webserver
    settings = make_settings(tmp_path, db_url, USDCOP_DAGSTER_URL=url)
    p = seed_proposal(store, lake, calendar, n_sessions=2, with_series=False)
    with TestClient(create_app(settings, store)) as c:
        r = c.post(f"/api/experiments/{p['proposal_id']}/backtest", headers=keys.h("reviewer"),
                   json={"start_date": "2023-01-02", "end_date": "2023-06-30", "notes": "check H1 2023"})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["launched"] is True, body["message"]
    req = body["request"]
    assert req["status"] == "LAUNCHED" and req["dagster_run_id"]
    assert store.backtest_requests.get(req["id"])["dagster_run_id"] == req["dagster_run_id"]

    instance = DagsterInstance.from_config(str(home))
    try:
        run = instance.get_run_by_id(req["dagster_run_id"])
        assert run is not None and run.job_name == BACKTEST_JOB_NAME
        assert run.tags["dagster/partition"] == "baseline"
        assert run.tags["usdcop/backtest_request_id"] == str(req["id"])
        assert run.tags["usdcop/requested_by"] == "rita-reviewer"
        assert run.run_config["ops"]["evaluation__backtest"]["config"] == {
            "model_id": p["model_id"], "start": "2023-01-02", "end": "2023-06-30"
        }
    finally:
        instance.dispose()

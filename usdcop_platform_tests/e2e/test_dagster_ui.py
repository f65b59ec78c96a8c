"""The Dagster UI on the real definitions: `dagster-webserver -m usdcop_platform.definitions` in a
subprocess (free loopback port, temp DAGSTER_HOME). Its GraphQL API must list every asset, asset
check, job, schedule and sensor the definitions declare, with no load error; headless Chromium
renders the asset graph and the screenshots are kept in test-artifacts/."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Loading the definitions imports torch, MLflow and Dagster: slow on a busy 2-core machine.
STARTUP_TIMEOUT_S = 300
UI_TIMEOUT_MS = 120_000

pytestmark = pytest.mark.slow

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message }
  }
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        jobs { name }
        schedules { name cronSchedule executionTimezone }
        sensors { name }
        assetNodes {
          assetKey { path }
          description
          kinds
          owners { __typename ... on TeamAssetOwner { team } }
          assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

SET_CURSOR = """
mutation($selector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $selector, cursor: $cursor) { __typename ... on PythonError { message } }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expected() -> dict[str, object]:
    from usdcop_platform.definitions import defs

    repo = defs.get_repository_def()
    graph = repo.asset_graph
    return {
        "assets": {k.to_user_string() for k in graph.get_all_asset_keys()},
        "checks": {(c.asset_key.to_user_string(), c.name) for k in graph.get_all_asset_keys() for c in graph.get(k).check_keys},
        "jobs": {j.name for j in repo.get_all_jobs()},
        "schedules": {s.name for s in repo.schedule_defs},
        "sensors": {s.name for s in repo.sensor_defs},
    }


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "USDCOP_DATA_DIR": str(tmp_path / "lake"),
        "USDCOP_MODELS_DIR": str(tmp_path / "models"),
        "USDCOP_STATE_DIR": str(tmp_path / "state"),
    }
    for var in ("DATABASE_URL", "MLFLOW_TRACKING_URI", "REDIS_URL", "USDCOP_ALERT_WEBHOOK_URL"):
        env.pop(var, None)
    port = _free_port()
    log = (tmp_path / "webserver.log").open("w")
    exe = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen(
        [str(exe), "-h", "127.0.0.1", "-p", str(port), "-m", "usdcop_platform.definitions"],
        cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{(tmp_path / 'webserver.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver not up after {STARTUP_TIMEOUT_S}s:\n{(tmp_path / 'webserver.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, home
    finally:
        # the webserver and the code server it spawned share the new session's process group
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=180)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body.get("errors")
    return body["data"]


def test_webserver_loads_everything_and_renders_the_asset_graph(webserver) -> None:
    url, home = webserver
    data = _graphql(url, WORKSPACE_QUERY)
    (entry,) = data["workspaceOrError"]["locationEntries"]
    assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry["locationOrLoadError"]
    (repo,) = data["repositoriesOrError"]["nodes"]
    served = {
        "assets": {"/".join(n["assetKey"]["path"]) for n in repo["assetNodes"]},
        "checks": {
            ("/".join(n["assetKey"]["path"]), c["name"])
            for n in repo["assetNodes"]
            for c in n["assetChecksOrError"].get("checks", [])
        },
        "jobs": {j["name"] for j in repo["jobs"]},
        "schedules": {s["name"] for s in repo["schedules"]},
        "sensors": {s["name"] for s in repo["sensors"]},
    }
    expected = _expected()
    # what the catalog shows for every asset (defs/catalog.py; details in defs/test_asset_catalog.py)
    for n in repo["assetNodes"]:
        key = "/".join(n["assetKey"]["path"])
        assert n["kinds"] and n["description"], f"{key}: kinds {n['kinds']}, description {n['description']!r}"
        assert [o["__typename"] for o in n["owners"]] == ["TeamAssetOwner"], f"{key}: owners {n['owners']}"
    for kind in ("assets", "checks", "jobs", "schedules", "sensors"):
        assert served[kind] == expected[kind], f"{kind}: missing {expected[kind] - served[kind]}, extra {served[kind] - expected[kind]}"
    # the monitoring domain is part of it
    assert {"monitoring/feature_drift", "monitoring/realized_performance", "monitoring/shadow_ab_report",
            "monitoring/shadow_signals"} <= served["assets"]
    assert ("monitoring/feature_drift", "feature_drift_below_threshold") in served["checks"]
    assert {"retrain_trigger_sensor", "monitoring_run_failure_sensor", "alert_delivery_sensor"} <= served["sensors"]
    drift = next(s for s in repo["schedules"] if s["name"] == "feature_drift_schedule")
    assert drift["executionTimezone"] == "America/Bogota"

    # a sensor cursor set through the UI's API is what GET /health/detailed reports
    from usdcop_platform.api.monitoring import sensor_states

    selector = {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"], "sensorName": "retrain_trigger_sensor"}
    result = _graphql(url, SET_CURSOR, {"selector": selector, "cursor": '{"last_trigger_at": null}'})
    assert result["setSensorCursor"]["__typename"] == "Sensor", result
    states = {s.name: s for s in sensor_states(home).sensors}
    assert states["retrain_trigger_sensor"].cursor == '{"last_trigger_at": null}'

    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    graph_png, group_png = ARTIFACTS / "dagster_asset_graph.png", ARTIFACTS / "dagster_monitoring_assets.png"
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(home.parent / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            page = ctx.new_page()
            page.goto(f"{url}/asset-groups", wait_until="domcontentloaded", timeout=UI_TIMEOUT_MS)
            skip = page.get_by_role("button", name="Skip")  # the first-visit newsletter dialog
            skip.click(timeout=UI_TIMEOUT_MS)
            page.get_by_text("Global asset lineage").first.wait_for(timeout=UI_TIMEOUT_MS)
            for group in ("market_data", "features", "training", "evaluation", "live", "monitoring"):
                page.get_by_text(group, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
            page.wait_for_timeout(1500)  # let the graph layout settle
            page.screenshot(path=str(graph_png))
            location = repo["location"]["name"]
            page.goto(f"{url}/locations/{location}/asset-groups/monitoring", wait_until="domcontentloaded")
            for name in ("feature_drift", "realized_performance", "shadow_ab_report", "shadow_signals"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(group_png))
        finally:
            ctx.close()
    for png in (graph_png, group_png):
        head = png.read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, png

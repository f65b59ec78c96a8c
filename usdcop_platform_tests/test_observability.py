"""Prometheus + Grafana of docker-compose.yml agree with the code (no Docker engine here: parsed).

* the Grafana dashboard queries only series the API really exposes on /metrics (served by the real
  app, after a real prediction, so every labelled series has samples), with labels it really has;
  every expression parses as PromQL (promql-parser, the Rust parser GreptimeDB uses);
* every panel uses the provisioned datasource uid; the provider loads the mounted dashboards folder;
* Prometheus scrapes the compose service that runs `usdcop serve`, on its port, at a path the app serves;
* the risk panels' limit lines are config/mlops.yaml's limits;
* compose mounts only files that exist, at the paths the configs name, with pinned images.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SCRAPE = yaml.safe_load(PROMETHEUS_YML.read_text())
(SCRAPE_JOB,) = SCRAPE["scrape_configs"]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "usdcop.json").read_text())
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "usdcop.yml").read_text())

# Series Prometheus writes itself for every scrape target (not the app's).
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
TARGET_LABELS = {"job", "instance", "service"}  # added at scrape time (prometheus.yml `labels` included)
# Grafana's global variables, replaced by sample values before parsing (Grafana does the same).
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h", "$endpoint": ".*"}


def _mounts(service: str) -> dict[str, str]:
    """Host path (relative to the repo) -> container path, for the service's bind mounts."""
    out = {}
    for vol in SERVICES[service].get("volumes", []):
        parts = vol.split(":")
        if parts[0].startswith("./"):
            out[parts[0][2:]] = parts[1]
    return out


def _targets() -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def _expressions() -> list[tuple[str, str]]:
    exprs = [(title, t["expr"]) for title, t in _targets()]
    for var in DASHBOARD["templating"]["list"]:
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((?P<metric>[a-zA-Z_:][\w:]*)\s*,\s*(?P<label>\w+)\)", query)
        assert m, f"variable {var['name']}: unsupported query {query!r}"
        exprs.append((f"variable {var['name']}", f"count by ({m['label']}) ({m['metric']})"))
    return exprs


def _concrete(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


# ---- the series the app exposes ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Sample name -> label names, from the real app's scrape path (prometheus.yml metrics_path)
    after one real prediction."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from usdcop_platform.adapters.store import Store
    from usdcop_platform.api.app import create_app
    from usdcop_platform.bench import live_fixtures as fx
    from usdcop_platform.contracts.platform import get_config
    from usdcop_platform_tests.api.conftest import make_settings

    tmp = tmp_path_factory.mktemp("metrics")
    settings = make_settings(tmp, f"sqlite:///{(tmp / 'api.db').as_posix()}")
    store = Store(settings.resolved_database_url)
    store.upgrade()
    cfg = get_config()
    n = cfg.features.n_features
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, n))
    position = cfg.features.names.index("position")
    train[:, position] = rng.integers(-1, 2, 200)
    fx.register(store, fx.make_model(settings.models_dir, cfg, train, seed=1))
    key, _ = store.api_keys.create("grafana-test", "viewer")
    observation = [float(v) for v in rng.normal(size=n)]
    observation[position] = 0.0
    try:
        with TestClient(create_app(settings, store)) as client:
            r = client.post("/v1/inference", json={"observation": observation}, headers={"X-API-Key": key})
            assert r.status_code == 200, r.text
            resp = client.get(SCRAPE_JOB.get("metrics_path", "/metrics"))  # what Prometheus scrapes
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    finally:
        store.dispose()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_the_app_exposes_the_dashboards_families(exposed) -> None:
    # the fixture really produced labelled samples (else the next test would pass vacuously)
    assert {"usdcop_inference_requests_total", "usdcop_inference_request_seconds_bucket",
            "usdcop_inference_actions_total", "usdcop_model_served"} <= set(exposed)
    assert {"endpoint", "status"} <= exposed["usdcop_inference_requests_total"]


def _selectors(expr: Any) -> Iterator[tuple[str, str, set[str]]]:
    """(kind, metric name, label names) of each vector selector; ("by", "", labels) of each grouping."""
    import promql_parser as pp

    found: list[tuple[str, str, set[str]]] = []

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            found.append(("selector", node.name or "", {m.name for m in node.matchers.matchers}))
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            found.append(("by", "", set(node.modifier.labels)))

    pp.walk(expr, pre_visit=visit)
    return iter(found)


@pytest.mark.parametrize("title,expr", _expressions(), ids=[t for t, _ in _expressions()])
def test_every_query_parses_and_names_only_exposed_series_and_labels(title: str, expr: str, exposed) -> None:
    import promql_parser as pp

    parsed = pp.parse(_concrete(expr))  # ValueError with the position on a syntax error
    selectors = list(_selectors(parsed))
    names = [name for kind, name, _ in selectors if kind == "selector"]
    assert names, f"{title}: no metric in {expr!r}"
    available: set[str] = set(TARGET_LABELS)
    for kind, name, labels in selectors:
        if kind != "selector":
            continue
        assert name in exposed or name in SCRAPE_SERIES, f"{title}: {name} is not on /metrics ({expr!r})"
        known = exposed.get(name, set()) | TARGET_LABELS
        assert labels <= known, f"{title}: {name} has no label {labels - known}"
        available |= known
    for kind, _, labels in selectors:
        if kind == "by":
            assert labels <= available, f"{title}: grouping by {labels - available}, which no selected series has"


def test_up_panel_names_the_scrape_job() -> None:
    jobs = {c["job_name"] for c in SCRAPE["scrape_configs"]}
    named = set(re.findall(r'job="([^"]+)"', " ".join(e for _, e in _expressions())))
    assert named and named <= jobs


# ---- Grafana wiring -----------------------------------------------------------------------------------


def test_panels_use_the_provisioned_datasource() -> None:
    (source,) = DATASOURCES["datasources"]
    assert source["type"] == "prometheus"
    uid = source["uid"]
    for panel in DASHBOARD["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for var in DASHBOARD["templating"]["list"]:
        assert var["datasource"]["uid"] == uid


def test_datasource_points_at_the_prometheus_service() -> None:
    (source,) = DATASOURCES["datasources"]
    m = re.fullmatch(r"http://(?P<host>[\w-]+):(?P<port>\d+)", source["url"])
    assert m and m["host"] in SERVICES and m["host"] == "prometheus"
    command = " ".join(SERVICES["prometheus"]["command"])
    listen = re.search(r"--web\.listen-address=\S*:(\d+)", command)
    assert m["port"] == (listen.group(1) if listen else "9090")  # Prometheus' default port
    assert source["jsonData"]["timeInterval"] == SCRAPE["global"]["scrape_interval"]


def test_dashboard_is_well_formed() -> None:
    assert DASHBOARD["uid"] and DASHBOARD["title"] and DASHBOARD["schemaVersion"] >= 39
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]
            assert panel.get("description"), f"{panel['title']}: say what the panel shows"


def test_provider_loads_the_mounted_dashboards() -> None:
    (provider,) = PROVIDERS["providers"]
    mounts = _mounts("grafana")
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["deploy/grafana/dashboards"] == provider["options"]["path"]
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()


# ---- risk limits ---------------------------------------------------------------------------------------


def _threshold_steps(title: str) -> list[float]:
    (panel,) = [p for p in DASHBOARD["panels"] if p["title"] == title]
    return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["value"] is not None]


def test_risk_panels_draw_the_configured_limits() -> None:
    from usdcop_platform.contracts.platform import get_config

    risk = get_config().mlops.risk
    assert _threshold_steps("Daily PnL") == [pytest.approx(-risk.max_daily_loss_pct / 100)]
    assert _threshold_steps("Drawdown") == [pytest.approx(-risk.max_drawdown_pct / 100)]
    assert _threshold_steps("Trades today") == [risk.max_trades_per_day]


# ---- Prometheus and compose -----------------------------------------------------------------------------


def test_prometheus_scrapes_the_api_service_on_its_port(exposed) -> None:
    """The target is the compose service running `usdcop serve`, on its --port; the path answered
    with these metrics in the `exposed` fixture."""
    (static,) = SCRAPE_JOB["static_configs"]
    hosts = []
    for target in static["targets"]:
        host, port = target.split(":")
        command = SERVICES[host]["command"]
        assert command[:2] == ["usdcop", "serve"], f"{host} does not run the API"
        assert command[command.index("--port") + 1] == port
        hosts.append(host)
    assert SERVICES["prometheus"]["depends_on"] == hosts
    assert set(static.get("labels", {})) <= TARGET_LABELS
    config_file = next(a.split("=", 1)[1] for a in SERVICES["prometheus"]["command"] if a.startswith("--config.file="))
    assert _mounts("prometheus")["deploy/prometheus/prometheus.yml"] == config_file


def test_observability_services_pin_their_images_and_mount_existing_files() -> None:
    for name in ("prometheus", "grafana"):
        image = SERVICES[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image), f"{name}: pin an exact version, not {image!r}"
        for host in _mounts(name):
            assert (ROOT / host).exists(), f"{name} mounts missing {host}"
        named = [v.split(":")[0] for v in SERVICES[name]["volumes"] if not v.startswith("./")]
        assert set(named) <= set(COMPOSE["volumes"]), f"{name}: undeclared volume"
    assert SERVICES["grafana"]["depends_on"] == ["prometheus"]
    grafana_port = SERVICES["grafana"]["ports"][0].split(":")[0]
    taken = {p.split(":")[0] for n, s in SERVICES.items() if n != "grafana" for p in s.get("ports", [])}
    assert grafana_port not in taken, "Grafana's host port collides with another service (Dagster has 3000)"

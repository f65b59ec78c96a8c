"""`usdcop bench chaos`: the API under a mixed load while its dependencies fail.

Bounded in time (DURATION_S, QUICK_DURATION_S) and in workers. The real app is served by uvicorn on
loopback against its own PostgreSQL schema and, through a TCP proxy, Redis. While WORKERS clients
send a mix of reads, predictions and audited writes, a schedule of faults runs:

- PostgreSQL: every connection of the app is killed (`pg_terminate_backend`, matched by the app's
  own `application_name`, so nobody else's sessions are touched), three times;
- Redis: the proxy goes down (connections cut, new ones refused) and comes back;
- a model file: the archived model's policy.onnx gets 64 flipped bytes and an admin asks to roll
  back to it: the verified rollback must refuse (409) and production must not move.

Reported: requests (per endpoint), responses and exceptions by class, and rows lost: every write the
API acknowledged (a `RISK_RESET` audit row per 200 of /v1/risk/reset, an API key per 201 of
/api/keys) is looked up afterwards; lost = acknowledged - found, which must be 0. A 500 means an
unexplained failure (the store maps a dead database to 503), so its count must be 0 too.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from usdcop_platform.bench.harness import BenchResult
from usdcop_platform.bench.live_server import LiveServer
from usdcop_platform.bench.tcp_proxy import TcpProxy

POSTGRES_URL_ENV = "USDCOP_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_DB = 12  # test workers use 15 and 14
DURATION_S = 30.0
QUICK_DURATION_S = 10.0
WORKERS = 6
REQUEST_TIMEOUT_S = 15.0
BATCH_ROWS = 16
# fault schedule: (fraction of the run, fault)
SCHEDULE = (
    (0.15, "kill_postgres"),
    (0.30, "redis_down"),
    (0.45, "kill_postgres"),
    (0.55, "corrupt_model_and_rollback"),
    (0.70, "redis_up"),
    (0.80, "kill_postgres"),
)


@dataclass
class ChaosReport:
    duration_s: float
    workers: int
    requests: Counter = field(default_factory=Counter)  # endpoint -> count
    outcomes: Counter = field(default_factory=Counter)  # "2xx" / "409" / "503" / "exc:ReadTimeout" ...
    by_endpoint: dict[str, Counter] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    acknowledged_writes: int = 0
    rows_lost: int = 0
    production_flips_on_corrupt_rollback: int = 0
    max_latency_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    @property
    def server_errors(self) -> int:
        return self.outcomes.get("500", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "duration_s": self.duration_s, "workers": self.workers, "requests": self.total,
            "requests_by_endpoint": dict(self.requests), "outcomes": dict(self.outcomes),
            "outcomes_by_endpoint": {k: dict(v) for k, v in self.by_endpoint.items()},
            "events": self.events, "acknowledged_writes": self.acknowledged_writes, "rows_lost": self.rows_lost,
            "unexplained_500": self.server_errors,
            "production_flips_on_corrupt_rollback": self.production_flips_on_corrupt_rollback,
            "max_latency_s": round(self.max_latency_s, 3),
        }


def _schema_url(tag: str) -> tuple[str, Any, Any]:
    """A fresh schema (URL tagged with application_name=tag), an admin engine, and its cleanup."""
    import sqlalchemy as sa

    base = os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
    admin = sa.create_engine(base, connect_args={"connect_timeout": 2})
    schema = f"chaos_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{base}?options=-csearch_path%3D{schema}&application_name={tag}", admin, drop


def _kill_postgres(admin: Any, tag: str) -> int:
    import sqlalchemy as sa

    with admin.begin() as conn:
        return len(conn.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :tag"
        ), {"tag": tag}).all())


def _flip(path: Path, n: int = 64) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + n] = bytes(b ^ 0xFF for b in data[mid : mid + n])
    path.write_bytes(bytes(data))


def chaos(duration_s: float = DURATION_S, workers: int = WORKERS, root: Path | None = None) -> ChaosReport:
    """Run the chaos scenario (see the module docstring); needs PostgreSQL and Redis on loopback."""
    from usdcop_platform.adapters.store import Store
    from usdcop_platform.api.app import create_app
    from usdcop_platform.bench import live_fixtures as fx
    from usdcop_platform.contracts.platform import get_config
    from usdcop_platform.settings import Settings

    tag = f"usdcop_chaos_{uuid.uuid4().hex[:8]}"
    url, admin, drop = _schema_url(tag)
    proxy = TcpProxy(REDIS_HOST, REDIS_PORT).start()
    tmp = tempfile.TemporaryDirectory() if root is None else None
    base = Path(tmp.name) if tmp is not None else root
    assert base is not None
    report = ChaosReport(duration_s=duration_s, workers=workers)
    try:
        settings = Settings(
            USDCOP_DATA_DIR=str(base / "lake"), USDCOP_MODELS_DIR=str(base / "models"),
            USDCOP_STATE_DIR=str(base / "state"), DATABASE_URL=url,
            REDIS_URL=f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}",
            USDCOP_WRITE_RATE_LIMIT=10_000_000, USDCOP_AUTH_FAILURES_PER_MINUTE=10_000_000,
        )
        check = Store(url)
        check.upgrade()
        cfg = get_config(str(settings.config_dir))
        train = np.random.default_rng(0).normal(size=(256, cfg.features.n_features))
        old, new = (fx.make_model(base / "models", cfg, train, seed=s) for s in (1, 2))
        fx.register(check, old, stage="production")
        fx.register(check, new, stage="production")  # `old` is archived: the rollback target
        keys = {role: check.api_keys.create(f"chaos-{role}", role, actor="bench")[0] for role in ("viewer", "admin")}
        app_store = Store(url)
        with LiveServer(create_app(settings, app_store), log_level="critical") as server:
            _load(server.url, keys, report, duration_s, workers, lambda: _faults(
                report, admin, tag, proxy, server.url, keys["admin"], check, old, new, duration_s))
        app_store.dispose()
        _count_lost(report, check)
        check.dispose()
    finally:
        proxy.stop()
        drop()
        if tmp is not None:
            tmp.cleanup()
    return report


def _faults(report: ChaosReport, admin: Any, tag: str, proxy: TcpProxy, url: str, admin_key: str,
            store: Any, old: Any, new: Any, duration_s: float) -> None:
    import httpx

    t0 = time.monotonic()
    for at, fault in SCHEDULE:
        time.sleep(max(0.0, t0 + at * duration_s - time.monotonic()))
        event: dict[str, Any] = {"at_s": round(time.monotonic() - t0, 2), "fault": fault}
        if fault == "kill_postgres":
            event["connections_killed"] = _kill_postgres(admin, tag)
        elif fault == "redis_down":
            proxy.stop()
        elif fault == "redis_up":
            proxy.start()
        elif fault == "corrupt_model_and_rollback":
            _flip(old.onnx_path)
            with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as c:
                r = c.post("/api/models/rollback", headers={"X-API-Key": admin_key},
                           json={"notes": "chaos: roll back to a corrupted model",
                                 "expected_registry_version": store.registry_version()})
            production = store.models.production()
            report.production_flips_on_corrupt_rollback = int(production is None or production["model_id"] != new.model_id)
            event.update(status=r.status_code, message=r.json().get("error", {}).get("message", "")[:160])
        report.events.append(event)


def _load(url: str, keys: dict[str, str], report: ChaosReport, duration_s: float, workers: int,
          faults: Any) -> None:
    import httpx

    obs = [0.0] * get_n_features()  # a valid contract row (flat position, session start)
    lock = threading.Lock()
    acked_resets: list[str] = []
    acked_keys: list[str] = []
    deadline = time.monotonic() + duration_s
    viewer, admin = {"X-API-Key": keys["viewer"]}, {"X-API-Key": keys["admin"]}

    def worker(w: int) -> None:
        i = 0
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as c:
            while time.monotonic() < deadline:
                i += 1
                uid = f"w{w}-{i}"
                kind = i % 8
                t = time.perf_counter()
                try:
                    if kind in (0, 1, 2):
                        name, r = "POST /v1/inference", c.post("/v1/inference", headers=viewer, json={"observation": obs})
                    elif kind == 3:
                        name, r = "POST /v1/inference/batch", c.post("/v1/inference/batch", headers=viewer,
                                                                      json={"observations": [obs] * BATCH_ROWS})
                    elif kind == 4:
                        name, r = "GET /api/models", c.get("/api/models", headers=viewer)
                    elif kind == 5:
                        name, r = "GET /v1/cache/stats", c.get("/v1/cache/stats", headers=viewer)
                    elif kind == 6:
                        name, r = "POST /v1/risk/reset", c.post("/v1/risk/reset", headers=admin, json={"notes": f"chaos {uid}"})
                        if r.status_code == 200:
                            with lock:
                                acked_resets.append(f"chaos {uid}")
                    else:
                        name, r = "POST /api/keys", c.post("/api/keys", headers=admin, json={"name": f"chaos-{uid}", "role": "viewer"})
                        if r.status_code == 201:
                            with lock:
                                acked_keys.append(f"chaos-{uid}")
                    outcome = "2xx" if r.status_code < 300 else str(r.status_code)
                except httpx.HTTPError as exc:
                    name = {0: "POST /v1/inference", 1: "POST /v1/inference", 2: "POST /v1/inference",
                            3: "POST /v1/inference/batch", 4: "GET /api/models", 5: "GET /v1/cache/stats",
                            6: "POST /v1/risk/reset"}.get(kind, "POST /api/keys")
                    outcome = f"exc:{type(exc).__name__}"
                elapsed = time.perf_counter() - t
                with lock:
                    report.requests[name] += 1
                    report.outcomes[outcome] += 1
                    report.by_endpoint.setdefault(name, Counter())[outcome] += 1
                    report.max_latency_s = max(report.max_latency_s, elapsed)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(workers)]
    fault_thread = threading.Thread(target=faults, daemon=True)
    for th in (*threads, fault_thread):
        th.start()
    for th in (*threads, fault_thread):
        th.join(timeout=duration_s + 4 * REQUEST_TIMEOUT_S)
    report._acked = (acked_resets, acked_keys)  # type: ignore[attr-defined]


def get_n_features() -> int:
    from usdcop_platform.contracts.platform import get_config

    return get_config().features.n_features


def _count_lost(report: ChaosReport, store: Any) -> None:
    """Acknowledged writes that the database does not hold (must be 0)."""
    acked_resets, acked_keys = report._acked  # type: ignore[attr-defined]
    audited = {a["notes"] for a in store.audit.list(limit=1_000_000, action="RISK_RESET")}
    names = {k["name"] for k in store.api_keys.list()}
    report.acknowledged_writes = len(acked_resets) + len(acked_keys)
    report.rows_lost = sum(n not in audited for n in acked_resets) + sum(k not in names for k in acked_keys)


def run(quick: bool = False) -> tuple[list[BenchResult], dict[str, Any]]:
    report = chaos(QUICK_DURATION_S if quick else DURATION_S)
    fails = {k: v for k, v in report.outcomes.items() if k != "2xx"}
    rows = [
        BenchResult(name=f"requests in {report.duration_s:.0f} s ({report.workers} clients, mixed)",
                    value=float(report.total), unit="requests"),
        BenchResult(name="non-2xx responses and client errors, by class: " + (
            ", ".join(f"{k}={v}" for k, v in sorted(fails.items())) or "none"), value=float(sum(fails.values())),
            unit="requests"),
        BenchResult(name="acknowledged writes (audited resets + API keys)", value=float(report.acknowledged_writes),
                    unit="rows"),
        BenchResult(name="rows lost (acknowledged but not in the database)", value=float(report.rows_lost),
                    unit="rows", target="0", met=report.rows_lost == 0),
        BenchResult(name="unexplained 500 responses", value=float(report.server_errors), unit="requests",
                    target="0", met=report.server_errors == 0),
        BenchResult(name="production moved by a rollback to a corrupted model",
                    value=float(report.production_flips_on_corrupt_rollback), unit="flips", target="0",
                    met=report.production_flips_on_corrupt_rollback == 0),
        BenchResult(name="slowest request", value=report.max_latency_s, unit="s"),
    ]
    return rows, report.as_dict()

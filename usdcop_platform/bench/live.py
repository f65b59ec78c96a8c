"""`usdcop bench live`: the live path's latencies, side by side in one run.

1. In-process cycle per bar — incremental features + ensemble of 3 ONNX policies (SB3 PPO
   networks of the baseline architecture, exported by core.onnx_export) + risk manager + the
   SQL writes (journal, 3 signal rows, risk state) — p50/p99 on SQLite and on PostgreSQL.
   Steady-state bars; the once-per-session engine rebuild is reported on its own row. Its peer
   is the bar's SQL alone: right after each bar, every statement the cycle sent for it re-sent in
   the same order through raw DBAPI connections to a fresh database of the same schema (committed
   as the cycle committed, the same rows inserted), with no Python work between — the database's
   own share, a lower bound of any implementation's cycle that persists the same rows durably.
   Back to back, so a busy host slows both alike.
   PostgreSQL's target is a ratio to that floor measured in the same run (cycle p99 ≤ 2× the
   floor's p99), so it holds on any host; SQLite's is an absolute p99.
2. The serving engine (normalization + onnxruntime, one model) versus SB3 `predict` on the
   same network and the same raw observation.
3. `POST /v1/inference` under load: uvicorn serving the real app in one process, a load
   generator (asyncio, keep-alive connections) in a second process, for a bounded time.
4. Bar available → signal persisted through the sensor with a running `dagster-daemon`: the
   bench appends a bar to the market file the sensor polls and times until its signal row
   exists. Sampled a few times, bounded in time. The bench's code location imports the
   default one (`usdcop_platform.definitions`), so each run process pays what a run of the
   default workspace pays to start.

Everything runs on temporary stores (SQLite file, a fresh PostgreSQL schema, a temp lake and
Dagster home); nothing of the user's state is touched.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from usdcop_platform.bench.harness import BenchResult, latency_percentiles
from usdcop_platform.contracts.platform import PlatformConfig, get_config

TARGET_CYCLE_P99_MS = 5.0  # SQLite (in-process database)
TARGET_PG_CYCLE_P99_OVER_SQL = 2.0  # PostgreSQL: cycle p99 <= this x the p99 of the bar's SQL alone
TARGET_API_RPS = 1000.0
TARGET_API_P99_MS = 20.0
TARGET_SENSOR_P95_S = 15.0
N_MODELS = 3
BENCH_EXPERIMENT = "baseline"  # network architecture of the benchmarked policies
HISTORY = (date(2024, 1, 22), date(2024, 2, 29))  # warm-up sessions in the lake
LIVE_SESSIONS = (date(2024, 3, 1), date(2024, 3, 15))  # sessions replayed through the cycle
POSTGRES_URL_ENV = "USDCOP_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
LOAD_CONCURRENCY = 8  # concurrent keep-alive clients of the load generator
# A second daemon measurement with a shorter sensor interval, to separate polling wait from the
# run launch (mlops.yaml keeps its interval; this only shows what a shorter one would give).
FAST_INTERVAL_S = 5
COMMIT = "<commit>"  # marks a driver commit among the statements a bar sent (bench 1)


# ---- fixtures: a lake and three SB3-exported policies --------------------------------------------


@dataclass
class World:
    root: Path
    cfg: PlatformConfig
    calendar: Any
    lake: Any
    models: list[Any]  # FixtureModel-like: model_id, record, onnx_path
    sb3: Any  # the first SB3 model (for the predict comparison)


def _sb3_models(root: Path, cfg: PlatformConfig, train: np.ndarray, n: int) -> tuple[list[Any], Any]:
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO

    from usdcop_platform.bench.live_fixtures import FixtureModel
    from usdcop_platform.contracts.base import file_hash
    from usdcop_platform.core.normalization import NormStats
    from usdcop_platform.core.onnx_export import export_onnx
    from usdcop_platform.core.training import params_hash

    contract = cfg.features
    clip = contract.normalization_clip

    class _Spaces(gym.Env):  # only the spaces matter: the networks are not trained here
        observation_space = gym.spaces.Box(-clip, clip, (contract.n_features,), np.float32)
        action_space = gym.spaces.Discrete(3)

        def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
            return np.zeros(contract.n_features, np.float32), {}

        def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
            return np.zeros(contract.n_features, np.float32), 0.0, True, False, {}

    arch = list(cfg.experiment(BENCH_EXPERIMENT).algorithm.net_arch)
    stats = NormStats.fit(train, contract)
    torch.set_num_threads(1)
    out, first = [], None
    for seed in range(n):
        model = PPO("MlpPolicy", _Spaces(), seed=seed, device="cpu", verbose=0,
                    policy_kwargs={"net_arch": {"pi": arch, "vf": arch}})
        mh = params_hash(model)
        mid = f"bench-{seed}-{mh[:12]}"
        folder = root / "models" / "bench" / mid
        folder.mkdir(parents=True, exist_ok=True)
        norm_path = stats.to_json(folder / "norm_stats.json")
        onnx_path = export_onnx(model, folder / "policy.onnx", {
            "model_id": mid, "model_hash": mh, "feature_order_hash": contract.feature_order_hash,
            "norm_stats_hash": stats.hash})
        record = dict(model_id=mid, experiment_name=BENCH_EXPERIMENT, experiment_version="bench", model_hash=mh,
                      servable=True, onnx_hash=file_hash(onnx_path), norm_stats_hash=stats.hash,
                      feature_order_hash=contract.feature_order_hash, artifact_dir=str(folder),
                      onnx_path=str(onnx_path), norm_stats_path=str(norm_path))
        out.append(FixtureModel(mid, record, onnx_path, stats))
        first = first or model
    return out, first


def build_world(root: Path) -> World:
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.bench import live_fixtures as fx
    from usdcop_platform.core.calendar import TradingCalendar

    cfg = get_config()
    calendar = TradingCalendar(cfg.instrument)
    lake = ParquetLake(root / "lake")
    fx.seed_lake(lake, cfg, calendar, HISTORY[0], LIVE_SESSIONS[1], seed=11)
    train = fx.lake_feature_matrix(lake, cfg, calendar)
    models, sb3 = _sb3_models(root, cfg, train, N_MODELS)
    return World(root, cfg, calendar, lake, models, sb3)


def _register(store: Any, world: World) -> None:
    for i, m in enumerate(world.models):
        store.models.register(**m.record)
        if i == 0:
            store.models.set_stage(m.model_id, "production", reviewer="bench", notes="bench")


def _ensemble(world: World) -> Any:
    from usdcop_platform.contracts.mlops import EnsembleConfig, EnsembleMember

    return EnsembleConfig(method="weighted_average",
                          members=tuple(EnsembleMember(model_id=m.model_id, weight=1.0) for m in world.models))


# ---- 1. in-process cycle ----------------------------------------------------------------------------


def _postgres_url() -> tuple[str, Any] | None:
    """A fresh schema on the PostgreSQL server (dropped by the returned cleanup), or None."""
    import sqlalchemy as sa

    base = os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
    try:
        admin = sa.create_engine(base, connect_args={"connect_timeout": 2})
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception:  # noqa: BLE001 - no server: the PostgreSQL rows are skipped with a note
        return None

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{base}?options=-csearch_path%3D{schema}", drop


def cycle_latencies(world: World, db_url: str, n_sessions: int, floor_url: str) -> dict[str, Any]:
    """The cycle per bar on `db_url`; right after each bar, the bar's SQL alone on the fresh
    `floor_url` (back to back, so both see the same host)."""
    import sqlalchemy as sa

    from usdcop_platform.adapters.store import Store
    from usdcop_platform.core.inference import InferenceEngine
    from usdcop_platform.core.synthetic import synthetic_bars
    from usdcop_platform.app.live_bars import Bar
    from usdcop_platform.app.live_cycle import LiveCycle

    # the statements of the bar being processed as the driver got them, with the DBAPI connection
    # that sent them (a read session may run beside the bar's transaction) and where each
    # transaction committed (COMMIT: the driver's commit, which no cursor sees). On PostgreSQL at
    # the driver itself (the live path runs its statements on the DBAPI cursor); SQLite's go
    # through SQLAlchemy, whose events see them.
    sent: list[tuple[int, str, Any]] = []
    driver = DriverTap(db_url, lambda *sent_one: sent.append(sent_one)) if db_url.startswith("postgresql") else None
    if driver is not None:
        driver.install()  # before the store opens its first connection
    store = Store(db_url)
    store.upgrade()
    floor = SqlAlone(floor_url)  # another database: its own SQL is never captured

    def capture(conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        sent.append((id(conn.connection.dbapi_connection), statement, params))

    def committed(conn: Any) -> None:
        sent.append((id(conn.connection.dbapi_connection), COMMIT, None))

    try:
        _register(store, world)
        engine = InferenceEngine(store, world.cfg.features, _ensemble(world))
        engine.load()
        cycle = LiveCycle(world.cfg, world.calendar, world.lake, store, engine)
        sessions = world.calendar.sessions(*LIVE_SESSIONS)[:n_sessions]
        steady, compute, commit, rebuild, alone = [], [], [], [], []
        if driver is None:
            sa.event.listen(sa.Engine, "before_cursor_execute", capture)
            sa.event.listen(sa.Engine, "commit", committed)
        try:
            for d in sessions:
                frame = synthetic_bars(world.calendar, d, d, 11, quirks=False)
                for i, row in enumerate(frame.iter_rows(named=True)):
                    sent.clear()
                    t0 = time.perf_counter()
                    res = cycle.process(Bar.from_mapping(row), write_bar=False)
                    dt = time.perf_counter() - t0
                    dt_sql = floor.replay(sent)  # raw DBAPI: nothing of it is captured
                    if i == 0:
                        rebuild.append(dt)  # the session's engine warm-up from the lake
                        continue
                    steady.append(dt)
                    alone.append(dt_sql)
                    compute.append(res.timings_ms["compute"] / 1e3)
                    commit.append(res.timings_ms["commit"] / 1e3)
        finally:
            if driver is None:
                sa.event.remove(sa.Engine, "before_cursor_execute", capture)
                sa.event.remove(sa.Engine, "commit", committed)
        return {"total": latency_percentiles(steady), "compute": latency_percentiles(compute),
                "commit": latency_percentiles(commit), "rebuild_ms": statistics.median(rebuild) * 1e3,
                "bars": len(steady), "floor": latency_percentiles(alone)}
    finally:
        floor.close()
        store.dispose()
        if driver is not None:
            driver.remove()


class DriverTap:
    """Everything the PostgreSQL driver is sent on the connections of one database (its URL's
    options name the schema): `on_send(connection id, statement, parameters)` for each statement
    and `on_send(connection id, COMMIT, None)` for each commit, as psycopg2 gets them, before they
    leave. Installed through SQLAlchemy's `do_connect` event (a psycopg2 connection_factory), so
    it sees what SQLAlchemy executes and what runs on the DBAPI cursor alike; only connections
    opened after install() are tapped (dispose a store's pool to reopen them)."""

    def __init__(self, db_url: str, on_send: Callable[[int, Any, Any], None]) -> None:
        import psycopg2.extensions as pe
        import sqlalchemy as sa

        self._options = sa.make_url(db_url).query.get("options")

        class Cursor(pe.cursor):
            def execute(self, query: Any, vars: Any = None) -> Any:  # noqa: A002 - psycopg2's name
                on_send(id(self.connection), query, vars)
                return super().execute(query, vars)

            def executemany(self, query: Any, vars_list: Any) -> Any:
                vars_list = list(vars_list)
                for v in vars_list:
                    on_send(id(self.connection), query, v)
                return super().executemany(query, vars_list)

        class Connection(pe.connection):
            def cursor(self, *args: Any, **kwargs: Any) -> Any:
                if kwargs.get("cursor_factory") is None:
                    kwargs["cursor_factory"] = Cursor
                return super().cursor(*args, **kwargs)

            def commit(self) -> None:
                on_send(id(self), COMMIT, None)
                super().commit()

        self._factory = Connection

    def _connect(self, dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        if dialect.name == "postgresql" and cparams.get("options") == self._options:
            cparams["connection_factory"] = self._factory

    def install(self) -> DriverTap:
        import sqlalchemy as sa

        sa.event.listen(sa.Engine, "do_connect", self._connect)
        return self

    def remove(self) -> None:
        import sqlalchemy as sa

        sa.event.remove(sa.Engine, "do_connect", self._connect)


class SqlAlone:
    """The bar's SQL alone: a bar's statements as the cycle sent them (locked read, writes;
    SQLite's BEGIN IMMEDIATE is among them) and its commits, re-sent in order through raw DBAPI
    connections (one per connection the cycle used) to a fresh database of the same schema, no
    Python work between. The same rows are inserted (nothing conflicts), so it is the database's
    own cost of the same bar."""

    def __init__(self, db_url: str) -> None:
        from usdcop_platform.adapters.store import Store

        self.store = Store(db_url)
        self.store.upgrade()
        self._raws: dict[int, Any] = {}  # the cycle's DBAPI connection id -> a pooled raw connection here

    def replay(self, statements: list[tuple[int, str, Any]]) -> float:
        """Seconds to send `statements` (the connections are checked out before the clock starts)."""
        for key in {k for k, _, _ in statements} - set(self._raws):
            self._raws[key] = self.store.engine.raw_connection()
        cursors = {key: self._raws[key].driver_connection.cursor() for key in {k for k, _, _ in statements}}
        t0 = time.perf_counter()
        for key, statement, params in statements:
            if statement is COMMIT:
                self._raws[key].driver_connection.commit()
                continue
            cur = cursors[key]
            cur.execute(statement, params)
            if cur.description is not None:
                cur.fetchall()
        dt = time.perf_counter() - t0
        for cur in cursors.values():
            cur.close()
        return dt

    def close(self) -> None:
        for raw in self._raws.values():
            raw.close()
        self.store.dispose()


def _cycle_p99_rows(backend: str, p99_ms: float, floor: dict[str, float]) -> list[BenchResult]:
    """The cycle's p99 row with its target, and the bar's SQL alone (p50, and the ratio to it)."""
    floor_p99 = floor["p99_us"] / 1e3
    if backend == "PostgreSQL":
        bound = TARGET_PG_CYCLE_P99_OVER_SQL * floor_p99
        target, met = f"<= {TARGET_PG_CYCLE_P99_OVER_SQL:g}x the SQL alone p99 = {bound:.2f} ms", p99_ms <= bound
    else:
        target, met = f"<= {TARGET_CYCLE_P99_MS:g} ms", p99_ms <= TARGET_CYCLE_P99_MS
    rows = [BenchResult(name=f"live cycle p99, {backend}", value=p99_ms, unit="ms", target=target, met=met,
                        peer="the bar's SQL alone, raw DBAPI (floor) p99", peer_value=floor_p99),
            BenchResult(name=f"  the bar's SQL alone (same statements and rows, fresh database, raw DBAPI, "
                             f"no Python work) p50, {backend}", value=floor["p50_us"] / 1e3, unit="ms")]
    if backend == "PostgreSQL":
        rows.append(BenchResult(
            name="live cycle p99 / the bar's SQL alone p99, PostgreSQL (same run)", value=p99_ms / floor_p99,
            unit="x", target=f"<= {TARGET_PG_CYCLE_P99_OVER_SQL:g}", met=met))
    return rows


# ---- 2. engine vs SB3 predict --------------------------------------------------------------------


def engine_vs_sb3(world: World, db_url: str, n: int) -> dict[str, dict[str, float]]:
    import torch

    from usdcop_platform.adapters.store import Store
    from usdcop_platform.contracts.mlops import EnsembleConfig, EnsembleMember
    from usdcop_platform.core.inference import InferenceEngine

    store = Store(db_url)
    store.upgrade()
    try:
        _register(store, world)
        one = InferenceEngine(store, world.cfg.features, EnsembleConfig(
            method="weighted_average", members=(EnsembleMember(model_id=world.models[0].model_id, weight=1.0),)))
        three = InferenceEngine(store, world.cfg.features, _ensemble(world))
        one.load()
        three.load()
        rng = np.random.default_rng(0)
        raw = rng.normal(size=(1000, world.cfg.features.n_features))
        raw[:, world.cfg.features.names.index("position")] = 0
        norm = world.models[0].norm_stats
        model = world.sb3
        torch.set_num_threads(1)

        def timed(fn: Any, count: int) -> dict[str, float]:
            for i in range(200):
                fn(raw[i % 1000])
            samples = []
            for i in range(count):
                x = raw[i % 1000]
                t0 = time.perf_counter()
                fn(x)
                samples.append(time.perf_counter() - t0)
            return latency_percentiles(samples)

        return {
            "engine_1": timed(lambda x: one.step(x, 0), n),
            "engine_3": timed(lambda x: three.step(x, 0), n),
            "sb3": timed(lambda x: model.predict(norm.apply(x), deterministic=True), n // 4),
        }
    finally:
        store.dispose()


# ---- 3. the API under load ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not start within {timeout_s} s")


async def _load(port: int, key: str, body: bytes, seconds: float, warmup_s: float, concurrency: int) -> dict[str, Any]:
    request = (f"POST /v1/inference HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop_at = measure_from + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                errors += status != 200
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"requests": len(latencies), "errors": errors, "seconds": seconds, "latencies": latencies}


def loadgen_main() -> None:
    """Entry of the load-generator process: argv = port key seconds warmup concurrency out.json."""
    port, key, seconds, warmup, conc, out = sys.argv[1:7]
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    x = np.random.default_rng(0).normal(size=get_config().features.n_features)
    x[get_config().features.names.index("position")] = 0
    body = json.dumps({"observation": [float(v) for v in x]}).encode()
    res = asyncio.run(_load(int(port), key, body, float(seconds), float(warmup), int(conc)))
    lat = sorted(res.pop("latencies"))
    res["rps"] = res["requests"] / res["seconds"]
    res["p50_ms"] = lat[len(lat) // 2] * 1e3 if lat else float("nan")
    res["p99_ms"] = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1e3 if lat else float("nan")
    Path(out).write_text(json.dumps(res))


def api_under_load(world: World, seconds: float, app: str = "usdcop_platform.api.app:app",
                   factory: bool = False) -> dict[str, Any]:
    from usdcop_platform.adapters.store import Store

    db = world.root / f"api-{uuid.uuid4().hex[:6]}.sqlite"
    url = f"sqlite:///{db.as_posix()}"
    store = Store(url)
    store.upgrade()
    _register(store, world)
    key, _ = store.api_keys.create("bench-viewer", "viewer")
    store.dispose()
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": url, "USDCOP_MODELS_DIR": str(world.root / "models"),
           "USDCOP_DATA_DIR": str(world.root / "lake"), "USDCOP_STATE_DIR": str(world.root / "state")}
    env.pop("REDIS_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, *(["--factory"] if factory else []), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
         "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = world.root / "load.json"
    try:
        _wait_http(port, 60)
        gen = subprocess.run(
            [sys.executable, "-c", "from usdcop_platform.bench.live import loadgen_main; loadgen_main()",
             str(port), key, str(seconds), "2", str(LOAD_CONCURRENCY), str(out)],
            env=env, timeout=seconds + 120, capture_output=True, text=True)
        if gen.returncode != 0:
            raise RuntimeError(f"load generator failed: {gen.stderr[-2000:]}")
        return json.loads(out.read_text())
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


# ---- 4. sensor + daemon: bar available -> signal persisted ------------------------------------------

_DAEMON_DEFS = """
# the live location on the bench's settings (the daemon's environment); importing the entry point
# also pays what every run process of the default workspace pays to start
from usdcop_platform.definitions import live_location
from usdcop_platform.settings import get_settings

defs = live_location(get_settings(), sensor_interval_s={interval}, frozen_now={now!r})
"""


def sensor_latencies(world: World, samples: int, budget_s: float, interval_s: int, tag: str) -> dict[str, Any]:
    """Append bars one at a time to the file the sensor polls (sensor every `interval_s`); time
    until each bar's signal row exists. Also splits each latency into its parts from the run
    records: bar available → run created (sensor polling), created → started (run process
    launch), started → signal written."""
    from usdcop_platform.adapters.store import Store
    from usdcop_platform.core.cleaning import BARS_DATASET
    from usdcop_platform.core.schema import BAR_SCHEMA
    from usdcop_platform.core.synthetic import synthetic_bars
    from usdcop_platform.settings import Settings

    session = world.calendar.sessions(*LIVE_SESSIONS)[-1]
    root = world.root / f"daemon-{tag}"
    home = root / "dagster_home"
    home.mkdir(parents=True)
    db = root / "live.sqlite"
    url = f"sqlite:///{db.as_posix()}"
    store = Store(url)
    store.upgrade()
    _register(store, world)  # production = the first bench model
    # the session being "traded" must not already be in the lake
    lake_root = root / "lake"
    shutil.copytree(world.root / "lake", lake_root)
    (lake_root / BARS_DATASET / f"{session.isoformat()}.parquet").unlink(missing_ok=True)
    bars = synthetic_bars(world.calendar, session, session, 11, quirks=False).select(list(BAR_SCHEMA))
    bars_file = root / "bars.parquet"
    # frozen at the session's close: every appended bar counts as closed; latency is wall-clock
    now = world.calendar.session_close_utc(session).isoformat()
    (root / "live_defs.py").write_text(textwrap.dedent(_DAEMON_DEFS.format(interval=interval_s, now=now)))
    settings = Settings(USDCOP_DATA_DIR=lake_root, USDCOP_MODELS_DIR=world.root / "models",
                        USDCOP_CONFIG_DIR=world.cfg.config_dir, DATABASE_URL=url, USDCOP_STATE_DIR=root / "state",
                        DAGSTER_HOME=home, USDCOP_MARKET_SOURCE="file", USDCOP_BARS_FILE=bars_file,
                        DATABASE_PASSWORD=None, REDIS_URL=None, USDCOP_ALERT_WEBHOOK_URL=None)  # memory cache, no webhook
    (root / "workspace.yaml").write_text(f"load_from:\n  - python_file: {root / 'live_defs.py'}\n")
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    bars.head(0).write_parquet(bars_file)
    env = settings.as_env(os.environ)
    # its own process group: the daemon spawns a code server and run workers, all stopped below
    daemon = subprocess.Popen(["dagster-daemon", "run", "-w", str(root / "workspace.yaml")], env=env, cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    latencies: list[float] = []
    available_at: dict[Any, datetime] = {}
    deadline = time.monotonic() + budget_s
    try:
        rng = np.random.default_rng(0)
        for k in range(samples):
            # bars arrive every 5 minutes whatever the sensor's phase: a random wait before each
            # bar keeps its arrival independent of the tick schedule (no systematic phase bias)
            time.sleep(float(rng.uniform(0, interval_s)))
            if time.monotonic() > deadline:
                break
            bar_time = bars["time"][k]
            tmp = root / "bars.tmp.parquet"
            bars.head(k + 1).write_parquet(tmp)
            os.replace(tmp, bars_file)  # the bar becomes available now
            available = datetime.now(timezone.utc)
            available_at[bar_time] = available
            while time.monotonic() < deadline:
                rows = [r for r in store.signals.list(session_date=session) if r["bar_time"] == bar_time]
                if rows:
                    latencies.append((rows[0]["created_at"] - available).total_seconds())
                    break
                if daemon.poll() is not None:
                    raise RuntimeError(f"dagster-daemon exited: {daemon.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)
    finally:
        _stop_group(daemon)
        store.dispose()
    return {"samples": latencies, "requested": samples, "parts": _run_parts(home, available_at)}


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop `proc`'s process group (daemon, its code server, run workers): SIGTERM, wait, SIGKILL."""
    import signal

    def group_alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    if group_alive():
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 15
    while group_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    if group_alive():
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=10)


def _run_parts(home: Path, available_at: dict[Any, datetime]) -> dict[str, float]:
    """Median seconds of polling wait, run launch and run execution over the measured bars."""
    import dagster as dg

    from usdcop_platform.app.live_runs import BAR_TIME_TAG

    parts: dict[str, list[float]] = {"poll": [], "launch": [], "execute": []}
    with dg.DagsterInstance.from_config(str(home)) as inst:
        for rec in inst.get_run_records():
            tag = rec.dagster_run.tags.get(BAR_TIME_TAG)
            avail = next((v for k, v in available_at.items() if k.isoformat() == tag), None)
            if avail is None or not rec.start_time or not rec.end_time:
                continue
            parts["poll"].append((rec.create_timestamp - avail).total_seconds())
            parts["launch"].append(rec.start_time - rec.create_timestamp.timestamp())
            parts["execute"].append(rec.end_time - rec.start_time)
    return {k: statistics.median(v) for k, v in parts.items() if v}


# ---- run -------------------------------------------------------------------------------------------


def run(quick: bool = False) -> list[BenchResult]:
    results: list[BenchResult] = []
    cfg = get_config()
    with tempfile.TemporaryDirectory(prefix="usdcop-bench-live-") as tmp:
        world = build_world(Path(tmp))
        n_sessions = 1 if quick else 10  # 590 steady bars: a p99 over few bars is mostly noise

        lat: dict[str, Any] = {"SQLite": cycle_latencies(world, f"sqlite:///{(Path(tmp) / 'cycle.sqlite').as_posix()}",
                                                         n_sessions, f"sqlite:///{(Path(tmp) / 'floor.sqlite').as_posix()}")}
        pg = _postgres_url()
        pg_floor = _postgres_url() if pg is not None else None  # a second fresh schema for the SQL alone
        if pg is not None and pg_floor is not None:
            try:
                lat["PostgreSQL"] = cycle_latencies(world, pg[0], n_sessions, pg_floor[0])
            finally:
                pg[1]()
                pg_floor[1]()
        elif pg is not None:
            pg[1]()
        else:
            print(f"PostgreSQL not reachable ({POSTGRES_URL_ENV} / {DEFAULT_POSTGRES_URL}): its cycle rows are skipped")
        for backend, d in lat.items():
            results.append(BenchResult(
                name=f"live cycle p50, {backend} (features + {N_MODELS} ONNX + risk + SQL writes; {d['bars']} bars)",
                value=d["total"]["p50_us"] / 1e3, unit="ms"))
            results.extend(_cycle_p99_rows(backend, d["total"]["p99_us"] / 1e3, d["floor"]))
            results.append(BenchResult(
                name=f"  of which features + inference + risk p50 (p99 {d['compute']['p99_us'] / 1e3:.2f} ms), {backend}",
                value=d["compute"]["p50_us"] / 1e3, unit="ms"))
            results.append(BenchResult(
                name=f"  of which SQL writes p50 (p99 {d['commit']['p99_us'] / 1e3:.2f} ms), {backend}",
                value=d["commit"]["p50_us"] / 1e3, unit="ms"))
            results.append(BenchResult(name=f"session-open engine rebuild from the lake, {backend}",
                                       value=d["rebuild_ms"], unit="ms"))

        ev = engine_vs_sb3(world, f"sqlite:///{(Path(tmp) / 'engine.sqlite').as_posix()}", 2_000 if quick else 20_000)
        results.append(BenchResult(
            name="serving engine step, 1 model (normalize + onnxruntime) p50", value=ev["engine_1"]["p50_us"], unit="us",
            peer="SB3 PPO.predict (normalize + torch) p50", peer_value=ev["sb3"]["p50_us"]))
        results.append(BenchResult(
            name="serving engine step, 1 model p99", value=ev["engine_1"]["p99_us"], unit="us",
            peer="SB3 PPO.predict p99", peer_value=ev["sb3"]["p99_us"]))
        results.append(BenchResult(
            name=f"serving engine step, ensemble of {N_MODELS} p50", value=ev["engine_3"]["p50_us"], unit="us",
            peer="SB3 PPO.predict, 1 model p50", peer_value=ev["sb3"]["p50_us"]))

        seconds = 3.0 if quick else 10.0
        for label, app, factory in (("sidecar app (usdcop serve)", "usdcop_platform.api.app:app", False),
                                    ("standalone inference app", "usdcop_platform.api.inference:standalone_app", True)):
            load = api_under_load(world, seconds, app, factory)
            results.append(BenchResult(
                name=f"POST /v1/inference throughput, {label} (uvicorn 1 worker, {LOAD_CONCURRENCY} keep-alive "
                     f"clients in a 2nd process, {load['seconds']:g} s, {load['errors']} errors)",
                value=load["rps"], unit="req/s", target=f">= {TARGET_API_RPS:,.0f} req/s",
                met=load["rps"] >= TARGET_API_RPS))
            results.append(BenchResult(name=f"POST /v1/inference latency p50 under load, {label}",
                                       value=load["p50_ms"], unit="ms"))
            results.append(BenchResult(
                name=f"POST /v1/inference latency p99 under load, {label}", value=load["p99_ms"], unit="ms",
                target=f"<= {TARGET_API_P99_MS:g} ms", met=load["p99_ms"] <= TARGET_API_P99_MS and load["errors"] == 0))

        interval = cfg.mlops.sensor.interval_seconds
        for tag, every, n, budget in (("config", interval, 3 if quick else 8, 180.0 if quick else 420.0),
                                      ("fast", FAST_INTERVAL_S, 3 if quick else 8, 90.0 if quick else 180.0)):
            sens = sensor_latencies(world, n, budget, every, tag)
            s = sorted(sens["samples"])
            if not s:
                print(f"no bar reached a signal through the daemon within {budget:g} s (sensor every {every} s)")
                continue
            p50 = s[len(s) // 2]
            p95 = s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in sens["parts"].items())
            origin = "mlops.yaml" if tag == "config" else "what-if"
            results.append(BenchResult(
                name=f"bar available -> signal persisted p50 (dagster-daemon, sensor every {every} s [{origin}], "
                     f"{len(s)}/{sens['requested']} bars; medians: {parts})", value=p50, unit="s"))
            results.append(BenchResult(
                name=f"bar available -> signal persisted p95 (sensor every {every} s)", value=p95, unit="s",
                target=f"<= {TARGET_SENSOR_P95_S:g} s", met=p95 <= TARGET_SENSOR_P95_S))
    return results


if __name__ == "__main__":  # pragma: no cover
    from rich.console import Console

    from usdcop_platform.bench.harness import render_table

    Console().print(render_table("live", run(quick="--quick" in sys.argv)))

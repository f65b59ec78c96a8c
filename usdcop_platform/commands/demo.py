"""`usdcop demo`: the whole path on the embedded defaults, then where to look.

config → database → raw bars + macro (synthetic, the experiment's span) → features → dataset →
PPO model (ONNX + parity gate) → out-of-sample backtest → promotion proposal (first vote) →
approval with a demo reviewer key through the approvals API (second vote) → one session through
the live job bar by bar → replay check of that session's signals. Every asset step runs through
Dagster on the instance under DAGSTER_HOME, so `dagster dev` shows the runs afterwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import typer
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, err_console, open_local_instance
from usdcop_platform.settings import Settings, get_settings

DEMO_REVIEWER = "demo-reviewer"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )


def asset_graph_table() -> Table:
    """The asset graph of the code location: key, partitions, upstream assets and checks."""
    from usdcop_platform.definitions import defs

    graph = defs.get_repository_def().asset_graph
    table = Table(title="asset graph (usdcop_platform.definitions)")
    for col in ("asset", "partitions", "upstream", "checks"):
        table.add_column(col)
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        pd = node.partitions_def
        kind = "" if pd is None else ("experiments" if "Dynamic" in type(pd).__name__ else "sessions")
        table.add_row(
            key.to_user_string(), kind,
            ", ".join(sorted(k.to_user_string() for k in node.parent_keys)),
            ", ".join(sorted(c.name for c in node.check_keys)),
        )
    return table


def experiment_span(settings: Settings, experiment: str) -> tuple[date, date]:
    """Sessions to ingest: the experiment's train start minus the feature warm-up, to its test end."""
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar

    cfg = load_platform_config(settings.config_dir)
    exp = cfg.experiment(experiment)
    calendar = TradingCalendar(cfg.instrument)
    warmup_sessions = -(-cfg.features.warmup_bars // calendar.bars_per_session) + 2  # ceil + slack for gaps
    start = exp.date_ranges.train.start
    for _ in range(warmup_sessions):
        start = calendar.previous_session(start)
    return start, exp.date_ranges.test.end


def materialize_features(sessions: list[date], settings: Settings, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Materialize features/m5_features for each session (one Dagster run per partition)."""
    import dagster as dg

    from usdcop_platform.defs.features.assets import m5_features
    from usdcop_platform.defs.resources import build_resources

    resources = build_resources(settings)
    counts = {"published": 0, "refused": 0}
    with open_local_instance(settings) as instance:
        for i, d in enumerate(sessions):
            result = dg.materialize([m5_features], partition_key=d.isoformat(), instance=instance,
                                    resources=resources, raise_on_error=False, tags={"usdcop/command": "demo"})
            counts["published" if result.success else "refused"] += 1
            if progress:
                progress(i + 1)
    return counts


def run_live_session(session: date, settings: Settings, progress: Callable[[int], None] | None = None) -> int:
    """Send every stored bar of `session` through the live job, in order, as the sensor would."""
    import dagster as dg

    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.defs.live.definitions import defs as live_defs
    from usdcop_platform.defs.live.cycle import bar_rows
    from usdcop_platform.defs.live.sensors import run_request
    from usdcop_platform.defs.resources import build_resources

    bars = bar_rows(ParquetLake(settings.data_dir).read("raw/usdcop_m5_ohlcv", session.isoformat()))
    if not bars:
        raise UserFacingError(f"no stored bars for session {session}")
    # resources from *these* settings: the code location's module-level defs were bound to the
    # settings of whichever process imported it first
    defs = dg.Definitions.merge(live_defs, dg.Definitions(resources=build_resources(settings)))
    job = defs.resolve_job_def("live_signal_job")
    with open_local_instance(settings) as instance:
        for i, bar in enumerate(bars):
            request = run_request(bar, session.isoformat())
            result = job.execute_in_process(
                run_config=request.run_config, partition_key=session.isoformat(), instance=instance,
                tags={**request.tags, "usdcop/command": "demo"}, raise_on_error=False,
            )
            if not result.success:
                raise UserFacingError(f"live run for bar {bar.time.isoformat()} failed (dagster run {result.run_id})")
            if progress:
                progress(i + 1)
    return len(bars)


def approve_through_api(proposal_id: str, settings: Settings, notes: str) -> dict[str, Any]:
    """Approve with a demo reviewer key through the real approvals API (auth, transaction, audit)."""
    from fastapi.testclient import TestClient

    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.api.app import create_app

    store = get_store(settings.resolved_database_url)
    existing = {k["name"] for k in store.api_keys.list()}
    name = DEMO_REVIEWER if DEMO_REVIEWER not in existing else f"{DEMO_REVIEWER}-{int(time.time())}"
    key, _ = store.api_keys.create(name, "reviewer")
    with TestClient(create_app(settings)) as client:
        resp = client.post(
            f"/api/experiments/{proposal_id}/approve",
            json={"decision": "APPROVE", "notes": notes, "promote_to_production": True},
            headers={"X-API-Key": key},
        )
    if resp.status_code != 200:
        raise UserFacingError(f"approval failed: HTTP {resp.status_code} {resp.text}")
    return resp.json()


def run_demo(settings: Settings, experiment: str, timesteps: int | None) -> dict[str, Any]:
    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.commands.data import ingest
    from usdcop_platform.commands.evaluation import evaluate_experiment
    from usdcop_platform.commands.live import replay
    from usdcop_platform.commands.training import train_experiment
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar

    t0 = time.perf_counter()
    cfg = load_platform_config(settings.config_dir)
    calendar = TradingCalendar(cfg.instrument)
    exp = cfg.experiment(experiment)
    console.print(f"[bold]1/8[/] config valid: {len(cfg.experiments)} experiments, feature contract "
                  f"{cfg.features.version} ({cfg.features.feature_order_hash[:12]})")

    store = get_store(settings.resolved_database_url)
    console.print(f"[bold]2/8[/] database at head revision {store.revision()} ({store.masked_url})")
    console.print(asset_graph_table())

    start, end = experiment_span(settings, experiment)
    sessions = calendar.sessions(start, end)
    with _progress() as bar:
        task = bar.add_task("3/8 ingesting synthetic bars + macro", total=1)
        with open_local_instance(settings) as instance:  # the demo's runs all show in `dagster dev`
            summary = ingest(source="synthetic", start=start, end=end, settings=settings, instance=instance,
                             progress=lambda i, n, _m: bar.update(task, completed=i, total=n))
    console.print(f"[bold]3/8[/] ingested {summary['sessions']} sessions, {summary['bars_published']} bars "
                  f"({summary['quarantined']} quarantined, {summary['incomplete_sessions']} incomplete)")

    with _progress() as bar:
        task = bar.add_task("4/8 features per session", total=len(sessions))
        feats = materialize_features(sessions, settings, progress=lambda i: bar.update(task, completed=i))
    refused = f", {feats['refused']} refused by the quality gates" if feats["refused"] else ""
    console.print(f"[bold]4/8[/] features: {feats['published']} sessions published{refused}")

    console.print(f"[bold]5/8[/] training {experiment!r} (dataset → PPO → ONNX parity gate) ...")
    trained = train_experiment(experiment, settings, total_timesteps=timesteps)
    console.print(f"      model {trained['model_id']} servable={trained['servable']} "
                  f"mlflow run {trained['mlflow_run_id']}")

    console.print("[bold]6/8[/] out-of-sample backtest + promotion proposal ...")
    evaluated = evaluate_experiment(experiment, settings, model_id=trained["model_id"])
    proposal = evaluated["proposal"]
    console.print(f"      proposal {proposal['proposal_id']}: {proposal['recommendation']} "
                  f"(confidence {proposal['confidence']:.2f})")

    if proposal["status"] == "PENDING_APPROVAL":
        notes = "demo approval" if proposal["recommendation"] != "REJECT" else \
            "demo override: smoke model approved to exercise the live path (rules recommended REJECT)"
        decision = approve_through_api(proposal["proposal_id"], settings, notes)
        console.print(f"[bold]7/8[/] approved by {DEMO_REVIEWER}: model {trained['model_id']} is in production "
                      f"(registry version {decision.get('registry_version')})")
    else:  # a re-run: the same config, data and seed minted the same model, already decided
        decision = {"status": proposal["status"]}
        production = store.models.production()
        if production is None:
            raise UserFacingError(f"proposal {proposal['proposal_id']} is {proposal['status']} and there is "
                                  "no production model for the live step")
        console.print(f"[bold]7/8[/] proposal already {proposal['status']} (same model as a previous run); "
                      f"production model {production['model_id']}")

    live_day = exp.date_ranges.test.end if calendar.is_session(exp.date_ranges.test.end) \
        else calendar.previous_session(exp.date_ranges.test.end)
    with _progress() as bar:
        task = bar.add_task(f"8/8 live job, session {live_day}", total=calendar.bars_per_session)
        n_bars = run_live_session(live_day, settings, progress=lambda i: bar.update(task, completed=i))
    report = replay(live_day, settings)
    signals = store.signals.list(session_date=live_day, model_id=trained["model_id"])
    console.print(f"[bold]8/8[/] live path: {n_bars} bars → {len(signals)} signals; replay "
                  f"{'reproduced them bit for bit' if report.matched else 'FOUND DIFFERENCES'}")
    console.print(signals_table(signals))
    return {
        "summary": summary, "features": feats, "trained": trained, "proposal": proposal,
        "decision": decision, "live_session": live_day.isoformat(), "signals": len(signals),
        "replay_matched": bool(report.matched), "seconds": round(time.perf_counter() - t0, 1),
    }


def signals_table(signals: list[Any], limit: int = 12) -> Table:
    from usdcop_platform.core.actions import ACTION_NAMES

    from usdcop_platform.core.calendar import default_calendar

    tz = default_calendar().tz
    table = Table(title=f"signals (last {min(limit, len(signals))} of {len(signals)}, Bogota time)")
    for col in ("bar", "action", "policy", "p sell/hold/buy", "conf", "risk", "size"):
        table.add_column(col, no_wrap=True)
    for s in list(signals)[-limit:]:
        risk = s["risk_status"] + (f" ({s['failing_check']})" if s["failing_check"] else "")
        table.add_row(
            s["bar_time"].astimezone(tz).strftime("%H:%M"), ACTION_NAMES[int(s["action"])],
            ACTION_NAMES[int(s["raw_action"])],
            f"{s['prob_sell']:.2f}/{s['prob_hold']:.2f}/{s['prob_buy']:.2f}", f"{s['confidence']:.2f}",
            risk, f"{s['position_recommendation']:.3f}",
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        experiment: str = typer.Option("smoke", "--experiment", help="experiment from config/experiments"),
        timesteps: int = typer.Option(None, "--timesteps", help="override the training budget"),
    ) -> None:
        """Run the whole graph on the embedded defaults and print where to look."""
        settings = get_settings()
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        log_path = settings.state_dir / "demo.log"
        console.print(f"Dagster and MLflow logs of this run go to {log_path}")
        with cli_errors(), open(log_path, "w") as log, contextlib.redirect_stderr(log):
            try:
                out = run_demo(settings, experiment, timesteps)
            except Exception:
                log.flush()
                tail = log_path.read_text().splitlines()[-15:]
                err_console.print("[red]last lines of the log:[/]\n" + "\n".join(tail))
                raise
        base = settings.public_api_url
        pid = out["proposal"]["proposal_id"]
        console.print(Panel.fit(
            f"[bold green]demo finished in {out['seconds']} s[/]\n\n"
            f"review page     {base}/experiments/{pid}/review   (start it: usdcop serve)\n"
            f"approvals UI    {base}/experiments\n"
            f"Dagster UI      DAGSTER_HOME={settings.resolved_dagster_home} dagster dev -w workspace.yaml\n"
            f"MLflow          mlflow ui --backend-store-uri {settings.resolved_mlflow_uri}\n"
            f"lake            {settings.data_dir}\n"
            f"database        {settings.resolved_database_url}\n"
            f"model artefacts {out['trained']['artifact_dir']}",
            title="where to look",
        ))

"""`usdcop demo`: the whole path on the embedded defaults, then where to look.

config → database → `usdcop run` on the synthetic source (raw bars + macro → features → dataset →
PPO model with its ONNX parity gate → out-of-sample backtest → promotion proposal, the first vote;
resumable) → approval with a demo reviewer key through the approvals API (`usdcop serve` in a child
process: the second vote) → one session through the live job (one catch-up run, its bars in time
order) → replay check of that session's signals. Every asset step runs through Dagster on the local instance (DAGSTER_HOME,
default .usdcop/dagster_home), so `dagster dev` shows the runs afterwards; Dagster's logs go to the log file, not the terminal.

The synthetic market carries a planted edge (USDCOP_SYNTHETIC_EDGE, default DEMO_EDGE when unset)
and the `demo` experiment trades it at 5 bps, so the model has something to learn; the demo prints
the oracle's net Sharpe (the best rule on what the observation carries) beside the model's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import typer
from rich.panel import Panel
from rich.table import Table

from usdcop_platform.commands.asset_graph import asset_graph_table
from usdcop_platform.commands.common import UserFacingError, cli_errors, console, open_local_instance
from usdcop_platform.settings import Settings, get_settings

DEMO_REVIEWER = "demo-reviewer"
DEMO_EXPERIMENT = "demo"
DEMO_EDGE = 0.5  # core.synthetic.PlantedEdge strength: per-bar drift sd / bar vol
EDGE_ENV = "USDCOP_SYNTHETIC_EDGE"


def run_live_session(session: date, settings: Settings) -> int:
    """app.demo.run_live_session on the local instance: the session's stored bars in one live run."""
    from usdcop_platform.adapters.dagster_runs import DagsterJobLauncher
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.app.demo import DemoError
    from usdcop_platform.app.demo import run_live_session as send_session
    from usdcop_platform.definitions import build_resources, defs

    with open_local_instance(settings) as instance:
        try:
            return send_session(session, lake=ParquetLake(settings.data_dir),
                                launch=DagsterJobLauncher(defs.resolve_job_def, build_resources(settings), instance))
        except DemoError as exc:
            raise UserFacingError(str(exc)) from None


def first_vote_line(proposal: dict[str, Any]) -> str:
    """What the rules said, before anyone approves."""
    reasons = proposal.get("reasons") or []
    why = f": {reasons[0]}" if reasons else ""
    return (f"first vote (promotion rules): {proposal.get('recommendation')}, confidence "
            f"{proposal.get('confidence')}{why}")


def second_vote_line(proposal: dict[str, Any], status: str, reviewer: str | None) -> str:
    """The human decision, saying so when it overrides the first vote (an approved REJECT)."""
    from usdcop_platform.app.demo import is_override

    who = f" by {reviewer}" if reviewer else ""
    if status == "APPROVED" and is_override(proposal):
        return (f"second vote: [bold yellow]HUMAN OVERRIDE[/] of the first vote: APPROVED{who} although the rules "
                "said REJECT (the demo approves to exercise the live path; never do this with real money)")
    return f"second vote: {status}{who} (the first vote was {proposal.get('recommendation')})"


@contextlib.contextmanager
def serving_api(settings: Settings, timeout_s: float = 60.0) -> Iterator[str]:
    """`usdcop serve` on a free local port in a child process with these settings; yields its base
    URL once /health answers. Stopped with SIGTERM: uvicorn's graceful shutdown lets the request's
    background work (the MLflow champion alias after a promotion) finish."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "usdcop_platform.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"],
            env=settings.as_env(os.environ), stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    err.seek(0)
                    raise UserFacingError(f"usdcop serve exited ({proc.returncode}) before answering: "
                                          f"{err.read().decode(errors='replace')[-2000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise UserFacingError(f"usdcop serve did not answer on {base} within {timeout_s:g} s")
                time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def approve_through_api(proposal_id: str, settings: Settings, notes: str, *, override: bool = False) -> dict[str, Any]:
    """Approve with a demo reviewer key through the real approvals API (auth, transaction, audit),
    served by `usdcop serve` in a child process. `override`: the proposal was rated REJECT and this
    approval knowingly overrides it (the API's override_confirmed; the notes must say why)."""
    import httpx

    from usdcop_platform.adapters.store import get_store

    store = get_store(settings.resolved_database_url)
    existing = {k["name"] for k in store.api_keys.list()}
    name = DEMO_REVIEWER if DEMO_REVIEWER not in existing else f"{DEMO_REVIEWER}-{int(time.time())}"
    key, _ = store.api_keys.create(name, "reviewer")
    body: dict[str, Any] = {"decision": "APPROVE", "notes": notes, "promote_to_production": True}
    if override:  # the API refuses (422) to approve a REJECT-rated proposal without this confirmation
        body["override_confirmed"] = True
    with serving_api(settings) as base:
        resp = httpx.post(f"{base}/api/experiments/{proposal_id}/approve", json=body, headers={"X-API-Key": key},
                          timeout=120.0)
    if resp.status_code != 200:
        raise UserFacingError(f"approval failed: HTTP {resp.status_code} {resp.text}")
    return resp.json()


def run_demo(settings: Settings, experiment: str, timesteps: int | None) -> dict[str, Any]:
    """app.demo.run_demo with the CLI's steps (`usdcop run`, the approvals API in a child process,
    the live job on the local instance, replay), printing each step."""
    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.app.demo import DemoError, DemoSteps
    from usdcop_platform.app.demo import run_demo as demo
    from usdcop_platform.commands.live import replay
    from usdcop_platform.commands.run import run_with_progress, summary_table
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar

    cfg = load_platform_config(settings.config_dir)
    console.print(f"[bold]1/5[/] config valid: {len(cfg.experiments)} experiments, feature contract "
                  f"{cfg.features.version} ({cfg.features.feature_order_hash[:12]})")
    store = get_store(settings.resolved_database_url)
    console.print(f"[bold]2/5[/] database at head revision {store.revision()} ({store.masked_url})")
    console.print(asset_graph_table())

    def on_step(step: str, info: dict[str, Any]) -> None:
        if step == "pipeline":
            console.print("[bold]3/5[/] usdcop run: synthetic bars + macro → features → dataset → model → backtest "
                          "→ proposal")
            console.print(summary_table(info))
            console.print(edge_table(settings, experiment, info))
            console.print(f"[bold]4/5[/] {first_vote_line(info['proposal'])}")
        elif step == "approved":
            console.print(f"[bold]4/5[/] {second_vote_line(info['proposal'], 'APPROVED', DEMO_REVIEWER)}: model "
                          f"{info['model_id']} is in production (registry version "
                          f"{info['decision'].get('registry_version')})")
        elif step == "decided before":
            console.print(f"[bold]4/5[/] {second_vote_line(info['proposal'], info['decision']['status'], None)} "
                          f"(same model as a previous run); production model {info['model_id']}")

    def pipeline() -> dict[str, Any]:
        return run_with_progress(console, experiment=experiment, source="synthetic", settings=settings,
                                 timesteps=timesteps)

    def send_live_session(day: date) -> int:
        with console.status(f"5/5 live job: the bars of session {day} in one catch-up run"):
            return run_live_session(day, settings)

    steps = DemoSteps(
        run_pipeline=pipeline,
        approve=lambda pid, notes, override: approve_through_api(pid, settings, notes, override=override),
        send_live_session=send_live_session, replay=lambda day: replay(day, settings))
    try:
        outcome = demo(cfg.experiment(experiment), TradingCalendar(cfg.instrument), store, steps, on_step=on_step)
    except DemoError as exc:
        raise UserFacingError(str(exc)) from None
    console.print(f"[bold]5/5[/] live path: {outcome.bars} bars → {len(outcome.signals)} signals; replay "
                  f"{'reproduced them bit for bit' if outcome.replay_matched else 'FOUND DIFFERENCES'}")
    console.print(signals_table(outcome.signals))
    return outcome.summary()


def edge_table(settings: Settings, experiment: str, out: dict[str, Any]) -> Table:
    """What the model learned, beside what it could have: the planted edge, the oracle, 1h momentum."""
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.app.learnability import experiment_edge_report
    from usdcop_platform.contracts.platform import load_platform_config

    report = experiment_edge_report(load_platform_config(settings.config_dir), ParquetLake(settings.data_dir), experiment)
    model = out["proposal"].get("metrics") or {}
    edge = settings.synthetic_edge
    title = (f"planted edge {edge:g} (USDCOP_SYNTHETIC_EDGE): the market's drift is known, the model must find it"
             if edge else "no planted edge (USDCOP_SYNTHETIC_EDGE=0): the best a model can do is stay flat")
    table = Table(title=f"{title}; test split, {report['cost_bps']:g} bps")
    for col in ("", "net Sharpe", "return", "max drawdown", "exposure", "rule"):
        table.add_column(col, no_wrap=col != "rule")

    def row(name: str, m: dict[str, Any], rule: str) -> None:
        def pct(v: Any) -> str:
            return "—" if v is None else f"{100 * float(v):+.1f}%"
        sharpe = m.get("sharpe")
        table.add_row(name, "—" if sharpe is None else f"{float(sharpe):.2f}", pct(m.get("total_return")),
                      pct(m.get("max_drawdown")), pct(m.get("exposure")), rule)

    row("trained model", model, "PPO policy (ONNX)")
    row("oracle", report["oracle"], report["oracle"]["rule"])
    row("1h momentum", report["momentum_1h"], report["momentum_1h"]["rule"])
    return table


def print_summary(out: dict[str, Any], settings: Settings) -> None:
    """The one place that prints the demo's closing summary (extend it here)."""
    from usdcop_platform.commands.run import where_to_look

    vote = second_vote_line(out["proposal"], out["decision"]["status"], out["decision"].get("reviewer"))
    console.print(Panel.fit(
        f"[bold green]demo finished in {out['seconds']} s[/]\n\n" + where_to_look(out["run"], settings)
        + f"\n{vote}"
        + f"\napprovals UI    {settings.public_api_url}/experiments"
        + f"\ndatabase        {settings.resolved_database_url}",
        title="where to look",
    ))


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
        experiment: str = typer.Option(DEMO_EXPERIMENT, "--experiment", help="experiment from config/experiments"),
        timesteps: int = typer.Option(None, "--timesteps", help="override the training budget"),
    ) -> None:
        """Run the whole graph on the embedded defaults and print where to look."""
        import os

        # The demo's market carries a planted edge unless the caller chose one (0 = none). Set in the
        # environment, so every Dagster run process builds the same synthetic source.
        os.environ.setdefault(EDGE_ENV, str(DEMO_EDGE))
        get_settings.cache_clear()
        settings = get_settings()
        with cli_errors():
            out = run_demo(settings, experiment, timesteps)
        print_summary(out, settings)

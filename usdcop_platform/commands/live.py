"""`usdcop replay --session YYYY-MM-DD`: reproduce a past session's live signals bit for bit.

`replay()` is the reusable entry (the demo can call it); the command prints one row per bar
and exits 1 when any stored signal is not reproduced exactly.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import typer
from rich.table import Table

from usdcop_platform.commands.common import UserFacingError, cli_errors, console, print_json
from usdcop_platform.settings import Settings, get_settings


def replay(session: date, settings: Settings | None = None) -> Any:
    """Replay `session` against the stores of `settings`; returns the ReplayReport."""
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.adapters.store import get_store
    from usdcop_platform.contracts.platform import load_platform_config
    from usdcop_platform.core.calendar import TradingCalendar
    from usdcop_platform.core.inference import InferenceError
    from usdcop_platform.app.live_bars import LiveError
    from usdcop_platform.app.replay import replay_session

    s = settings or get_settings()
    cfg = load_platform_config(s.config_dir)
    calendar = TradingCalendar(cfg.instrument)
    if not calendar.is_session(session):
        raise UserFacingError(f"{session} is not a trading session ({calendar.holiday_name(session) or 'weekend'})")
    store = get_store(s.resolved_database_url)
    try:
        return replay_session(cfg, calendar, ParquetLake(s.data_dir), store, session, models_root=s.models_dir)
    except (LiveError, InferenceError) as exc:
        raise UserFacingError(str(exc)) from exc


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay_cmd(
        session: str = typer.Option(..., "--session", help="trading session YYYY-MM-DD"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object instead of a table"),
    ) -> None:
        """Reproduce a past session's signals from the stored bars and the models that served them."""
        from usdcop_platform.app.replay import report_rows

        with cli_errors():
            try:
                day = date.fromisoformat(session)
            except ValueError:
                raise UserFacingError(f"--session {session!r} is not a date (YYYY-MM-DD)") from None
            report = replay(day)
        rows = report_rows(report)
        if as_json:
            print_json({"session": day.isoformat(), "matched": report.matched, "bars": len(rows),
                        "signals": report.n_signals, "rows": rows})
        else:
            table = Table(title=f"replay of session {day}: {report.n_signals} signal(s) on {len(rows)} bar(s)")
            for col in ("bar (UTC)", "models", "reproduced", "differences"):
                table.add_column(col)
            for r in rows:
                table.add_row(r["bar_time"], r["models"], "[green]bit for bit[/]" if r["matched"] else "[red]NO[/]",
                              "; ".join(r["differences"][:3]))
            console.print(table)
            verdict = "[green]all signals reproduced bit for bit[/]" if report.matched else (
                f"[red]{len(report.mismatches())} bar(s) not reproduced[/]")
            console.print(verdict)
        if not report.matched:
            raise typer.Exit(1)

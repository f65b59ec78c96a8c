"""`usdcop rollback --notes ...`: restore the previous production model (atomic, audited, alerted)."""

from __future__ import annotations

import getpass

import typer

from usdcop_platform.commands.common import console
from usdcop_platform.commands.db import store_errors
from usdcop_platform.settings import get_settings


def register(app: typer.Typer) -> None:
    @app.command("rollback")
    def rollback_cmd(
        notes: str = typer.Option(..., "--notes", help="Why the rollback is needed (kept in the audit log)"),
        reviewer: str = typer.Option(
            None, "--reviewer", help="Who is rolling back (default: cli:<OS user>); recorded in the audit row"
        ),
        expect_version: int = typer.Option(
            None, "--expect-version",
            help="Registry version you saw (`usdcop` prints it; GET /api/models): refuse if it moved since",
        ),
        expect_current: str = typer.Option(
            None, "--expect-current", help="Production model id you saw: refuse if production changed since",
        ),
    ) -> None:
        """Restore the previous production model: the current one is archived, the most recently
        archived ex-production model becomes production, one audit row, an alert; the live path
        reloads on its next bar. The target's files are verified as the live path loads them, in the
        same transaction. Exits 1 with a clear message when there is nothing to roll back to, the
        target is refused, or the registry moved past --expect-version / --expect-current."""
        from usdcop_platform.adapters.artifacts import verifier_for
        from usdcop_platform.adapters.store import get_store
        from usdcop_platform.adapters.webhook import AlertDispatcher
        from usdcop_platform.app.champion import sync_champion
        from usdcop_platform.contracts.platform import get_config
        from usdcop_platform.app.lifecycle import rollback_production

        settings = get_settings()
        who = reviewer or f"cli:{getpass.getuser()}"
        with store_errors():
            if not notes.strip():
                raise ValueError("--notes must say why the rollback is needed")
            store = get_store(settings.resolved_database_url)
            cfg = get_config(str(settings.config_dir))
            dispatcher = AlertDispatcher.create(store, settings.alert_webhook_url, cfg.mlops.monitoring.alerts)
            result = rollback_production(
                store, dispatcher, reviewer=who, notes=notes, verify=verifier_for(settings),
                expected_version=expect_version, expected_production=expect_current,
            )
        alias = sync_champion(settings, store)  # best effort: MLflow mirrors the SQL registry
        console.print(
            f"[green]rolled back:[/] production is now [bold]{result['model_id']}[/] "
            f"(was {result['previous_production_model_id'] or 'none'}); audit row {result['audit_id']}, "
            f"registry version {result['registry_version']}, by {who}"
            + (f"; MLflow champion -> {alias}" if alias else ""),
            soft_wrap=True,
        )

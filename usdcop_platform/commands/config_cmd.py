"""`usdcop config validate`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from usdcop_platform.commands.common import cli_errors, console
from usdcop_platform.contracts.platform import load_platform_config
from usdcop_platform.settings import get_settings


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Configuration (config/ is the single source of truth).", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("validate")
    def validate_cmd(
        config_dir: Path = typer.Option(None, "--config-dir", help="Defaults to USDCOP_CONFIG_DIR or ./config"),
    ) -> None:
        """Load and validate every file in config/; exit 1 naming file, key and reason on error."""
        with cli_errors():
            cfg = load_platform_config(config_dir or get_settings().config_dir)
        table = Table(title=f"config OK: {cfg.config_dir}")
        table.add_column("item")
        table.add_column("value")
        table.add_row("instrument", f"{cfg.instrument.symbol} {cfg.instrument.timezone} "
                      f"{cfg.instrument.first_bar_start:%H:%M}-{cfg.instrument.last_bar_start:%H:%M} "
                      f"({cfg.instrument.bars_per_session} bars)")
        table.add_row("macro variables", ", ".join(cfg.macro.variables))
        table.add_row("feature contract", f"{cfg.features.version} ({cfg.features.n_features} features, "
                      f"hash {cfg.features.feature_order_hash[:12]})")
        for name, exp in cfg.experiments.items():
            table.add_row(f"experiment {name}", f"v{exp.version} config_hash {exp.config_hash[:12]}")
        console.print(table)

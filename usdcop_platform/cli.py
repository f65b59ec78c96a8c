"""The `usdcop` command. Each domain registers its commands from usdcop_platform/commands/."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="usdcop",
    help="USD/COP RL trading platform: ingest, features, training, backtests, approvals, live signals.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)



@app.callback()
def _main(ctx: typer.Context) -> None:
    """Route Dagster's and the libraries' logs to the log file for the whole invocation."""
    from usdcop_platform.commands.common import log_file, logs_to_file
    from usdcop_platform.settings import get_settings

    ctx.with_resource(logs_to_file(log_file(get_settings())))


# Modules under usdcop_platform.commands, each exposing register(app: typer.Typer).
COMMAND_MODULES = (
    "config_cmd",
    "db",
    "data",
    "features",
    "training",
    "tune",
    "evaluation",
    "api",
    "live",
    "monitoring",
    "bench",
    "run",
    "demo",
)

for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"usdcop_platform.commands.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"usdcop_platform.commands.{_name}":
            raise
        continue  # a domain not built yet registers nothing
    _module.register(app)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

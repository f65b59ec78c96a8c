"""Shared CLI helpers: one console, one way to turn domain errors into a clear message + exit code."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from usdcop_platform.contracts.errors import ConfigError

NON_TTY_WIDTH = 200  # piped or captured output: rich would cut tables at 80 columns (asset and check names)


def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal or os.environ.get("COLUMNS"):
        return probe
    return Console(stderr=stderr, width=NON_TTY_WIDTH)


console = _console()
err_console = _console(stderr=True)


def print_json(obj: Any) -> None:
    """One JSON object on one line of stdout, never wrapped (rich would break it at the console width)."""
    typer.echo(json.dumps(obj, default=str))


class UserFacingError(RuntimeError):
    """An error whose message is complete on its own: printed without a traceback."""


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Print ConfigError / UserFacingError / ValueError as one red line and exit 1, no traceback wall."""
    try:
        yield
    except (ConfigError, UserFacingError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)  # never wrap a path or key
        raise typer.Exit(1) from None


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s - %(message)s"
_log_handler: logging.Handler | None = None  # set while a CLI invocation routes logs to its file


def log_file(settings: Any) -> Path:
    """Where every CLI command's Dagster, MLflow and library logs go (never the terminal)."""
    return Path(settings.state_dir) / "logs" / "usdcop.log"


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[Path]:
    """For one CLI invocation: Python warnings and library loggers (root handler), and every
    Dagster run's console logger (see _route_dagster_console), write to `path`. The terminal keeps
    the command's own output and its one-line errors."""
    global _log_handler
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow's own stderr handler stays off
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    logging.captureWarnings(True)
    previous, _log_handler = _log_handler, handler
    try:
        yield path
    finally:
        _log_handler = previous
        _restore_dagster_console()
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.close()


_original_console_logger: Any = None


def _route_dagster_console() -> None:
    """Dagster runs started in this process log through `_log_handler` instead of stderr.

    Dagster builds each run's default "console" logger with dagster._loggers.create_console_logger
    (a coloredlogs StreamHandler on stderr); `dg.materialize` offers no way to pass loggers, so the
    factory is swapped while a CLI invocation runs (restored on exit)."""
    global _original_console_logger
    if _log_handler is None or _original_console_logger is not None:
        return
    import dagster._loggers as dagster_loggers

    handler = _log_handler
    _original_console_logger = dagster_loggers.create_console_logger

    def to_file(name: str, level: Any) -> logging.Logger:
        logger = logging.getLoggerClass()(name, level=level)
        logger.addHandler(handler)
        return logger

    dagster_loggers.create_console_logger = to_file  # type: ignore[assignment]


def _restore_dagster_console() -> None:
    global _original_console_logger
    if _original_console_logger is None:
        return
    import dagster._loggers as dagster_loggers

    dagster_loggers.create_console_logger = _original_console_logger  # type: ignore[assignment]
    _original_console_logger = None


def open_local_instance(settings: Any) -> Any:
    """The persistent Dagster instance under DAGSTER_HOME (default .usdcop/dagster_home), the one every
    CLI command records in, so `dagster dev` shows what the CLI did. The caller disposes it (or uses
    it in a `with`). Its event log is adapters.dagster_instance's faster SQLite storage."""
    from usdcop_platform.adapters.dagster_instance import open_instance

    _route_dagster_console()
    return open_instance(settings.resolved_dagster_home)


def run_deps(settings: Any, instance: Any) -> dict[str, Any]:
    """What the launching use cases (app.train_run, app.evaluate_run, app.pipeline) take: the config,
    the instance's experiment partitions, and a launcher of the definitions' own assets and resources."""
    from usdcop_platform import definitions
    from usdcop_platform.adapters.dagster_runs import DagsterAssetsLauncher
    from usdcop_platform.contracts.platform import load_platform_config

    return {"config": load_platform_config(settings.config_dir), "config_dir": str(settings.config_dir),
            "partitions": instance,
            "launch": DagsterAssetsLauncher(definitions.asset_def, definitions.build_resources(settings), instance)}

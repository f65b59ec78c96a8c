"""Shared CLI helpers: one console, one way to turn domain errors into a clear message + exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console

from usdcop_platform.contracts.errors import ConfigError

console = Console()
err_console = Console(stderr=True)


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


def open_local_instance(settings: Any) -> Any:
    """The persistent Dagster instance under DAGSTER_HOME (default .usdcop/dagster_home), the one every
    CLI command records in, so `dagster dev` shows what the CLI did. The caller disposes it (or uses
    it in a `with`). Its event log is adapters.dagster_instance's faster SQLite storage."""
    from usdcop_platform.adapters.dagster_instance import open_instance

    return open_instance(settings.resolved_dagster_home)

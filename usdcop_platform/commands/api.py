"""`usdcop serve`: the FastAPI sidecar (approvals API + review pages) under uvicorn."""

from __future__ import annotations

import typer

from usdcop_platform.commands.common import console, err_console
from usdcop_platform.commands.db import store_errors
from usdcop_platform.settings import get_settings


def _check_port_free(host: str, port: int) -> None:
    """Refuse a busy port before anything says "serving" (uvicorn would log startup, then exit 3)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: only a listener blocks
        try:
            probe.bind((host, port))
        except OSError as exc:
            err_console.print(f"[bold red]error:[/] cannot serve on {host}:{port}: {exc.strerror or exc} "
                              "(another process holds it: stop it, or pass --port / set USDCOP_API_PORT)")
            raise typer.Exit(2) from None


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        host: str = typer.Option(None, "--host", help="Bind address (default USDCOP_API_HOST or 127.0.0.1)"),
        port: int = typer.Option(None, "--port", min=1, max=65535, help="Port (default USDCOP_API_PORT or 8000)"),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
    ) -> None:
        """Serve the approvals API, the review pages (/experiments) and /docs."""
        import uvicorn

        settings = get_settings()
        with store_errors():
            from usdcop_platform.adapters.store import get_store

            store = get_store(settings.resolved_database_url)  # fail fast, migrated, before binding
            from usdcop_platform.api.app import create_app

            application = create_app(settings, store)
        bind_host = host or settings.api_host
        bind_port = port or settings.api_port
        _check_port_free(bind_host, bind_port)
        console.print(
            f"[green]serving[/] http://{bind_host}:{bind_port}/experiments (API docs at /docs, "
            f"database {store.masked_url})",
            soft_wrap=True,
        )
        uvicorn.run(application, host=bind_host, port=bind_port, log_level=log_level)

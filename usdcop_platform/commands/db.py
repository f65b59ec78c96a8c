"""`usdcop db upgrade|status|ddl` and `usdcop keys create|list|revoke`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.table import Table

from usdcop_platform.commands.common import cli_errors, console, err_console
from usdcop_platform.settings import Settings


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Store errors (unreachable database, conflicts, bad input) as one red line and exit 1."""
    from usdcop_platform.adapters.store import StoreError

    with cli_errors():
        try:
            yield
        except (StoreError, ValueError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
            raise typer.Exit(1) from None


def cli_actor() -> str:
    """Who acts from the terminal, as the audit log records it."""
    import getpass

    return f"cli:{getpass.getuser()}"


def _store(migrate: bool = True):  # noqa: ANN202 - Store is imported lazily to keep `usdcop --help` fast
    from usdcop_platform.adapters.store import Store

    store = Store(Settings().resolved_database_url)
    if migrate:
        store.upgrade()
    return store


def register(app: typer.Typer) -> None:
    db_app = typer.Typer(help="SQL store: migrations and the PostgreSQL DDL.", no_args_is_help=True)
    keys_app = typer.Typer(help="API keys of the approvals/inference API.", no_args_is_help=True)
    app.add_typer(db_app, name="db")
    app.add_typer(keys_app, name="keys")

    @db_app.command("upgrade")
    def upgrade_cmd() -> None:
        """Migrate the database (DATABASE_URL, or the embedded SQLite file) to the head revision."""
        with store_errors():
            store = _store(migrate=False)
            head = store.upgrade()
            console.print(f"[green]database[/] {store.masked_url} [green]is at revision[/] {head} (head)", soft_wrap=True)
            store.dispose()

    @db_app.command("status")
    def status_cmd() -> None:
        """Show the database URL (password masked), its revision and the head revision."""
        from usdcop_platform.adapters.store.migrate import head_revision

        with store_errors():
            store = _store(migrate=False)
            store.ping()
            current, head = store.revision(), head_revision()
            state = "[green]up to date[/]" if current == head else "[yellow]needs `usdcop db upgrade`[/]"
            console.print(f"{store.masked_url}: revision {current or '<none>'}, head {head}: {state}", soft_wrap=True)
            store.dispose()

    @db_app.command("ddl")
    def ddl_cmd(
        out: Path = typer.Option(None, "--out", help="Write to this file (e.g. sql/postgres_schema.sql) instead of stdout"),
    ) -> None:
        """Render the PostgreSQL DDL of the migrations (offline; no server needed)."""
        from usdcop_platform.adapters.store.migrate import postgres_ddl

        ddl = postgres_ddl()
        if out is None:
            typer.echo(ddl, nl=False)
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(ddl, encoding="utf-8")
        console.print(f"[green]wrote[/] {out} ({len(ddl.splitlines())} lines)")

    @keys_app.command("create")
    def keys_create(
        name: str = typer.Option(..., "--name", help="Unique name of the key (who or what uses it)"),
        role: str = typer.Option(..., "--role", help="viewer | reviewer | admin"),
    ) -> None:
        """Create an API key and print it ONCE (only its salted hash is stored)."""
        with store_errors():
            store = _store()
            plaintext, row = store.api_keys.create(name, role, actor=cli_actor())
            store.dispose()
        console.print(f"[green]created API key[/] {row.name!r} (role {row.role}, prefix {row.key_prefix}):")
        console.print(plaintext, markup=False, highlight=False, soft_wrap=True)
        console.print("[bold yellow]warning:[/] store it now; this key will not be shown again.")

    @keys_app.command("list")
    def keys_list() -> None:
        """List API keys (names, roles, prefixes, usage; never the keys)."""
        with store_errors():
            store = _store()
            rows = store.api_keys.list()
            store.dispose()
        table = Table(title=f"API keys ({len(rows)})")
        for col in ("name", "role", "prefix", "created", "last used", "revoked"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r.name,
                r.role,
                r.key_prefix,
                f"{r.created_at:%Y-%m-%d %H:%M}Z",
                f"{r.last_used_at:%Y-%m-%d %H:%M}Z" if r.last_used_at else "-",
                f"{r.revoked_at:%Y-%m-%d %H:%M}Z" if r.revoked_at else "-",
            )
        console.print(table)

    @keys_app.command("revoke")
    def keys_revoke(name: str = typer.Option(..., "--name", help="Name of the key to revoke")) -> None:
        """Revoke an API key (it stops working at once; the row is kept for the record)."""
        with store_errors():
            store = _store()
            row = store.api_keys.revoke(name, actor=cli_actor())
            store.dispose()
        console.print(f"[green]revoked[/] {row.name!r} at {row.revoked_at:%Y-%m-%d %H:%M:%S}Z")

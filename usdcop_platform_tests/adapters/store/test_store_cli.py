"""`usdcop db ...` and `usdcop keys ...`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from usdcop_platform.adapters.store.migrate import head_revision
from usdcop_platform.cli import app

runner = CliRunner()


def test_db_upgrade_status_and_keys(isolated_settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'cli.db').as_posix()}"
    monkeypatch.setenv("DATABASE_URL", url)
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert head_revision() in result.output and "cli.db" in result.output
    assert "up to date" in runner.invoke(app, ["db", "status"]).output

    created = runner.invoke(app, ["keys", "create", "--name", "ana", "--role", "reviewer"])
    assert created.exit_code == 0, created.output
    key = next(line.strip() for line in created.output.splitlines() if line.strip().startswith("usdcop_"))
    assert "will not be shown again" in created.output

    from usdcop_platform.adapters.store import Store

    store = Store(url)
    try:
        assert store.api_keys.verify(key).name == "ana"
    finally:
        store.dispose()
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and "ana" in listed.output and key not in listed.output
    assert runner.invoke(app, ["keys", "revoke", "--name", "ana"]).exit_code == 0
    missing = runner.invoke(app, ["keys", "revoke", "--name", "nobody"])
    assert missing.exit_code == 1 and "no API key named 'nobody'" in missing.output
    bad_role = runner.invoke(app, ["keys", "create", "--name", "eve", "--role", "root"])
    assert bad_role.exit_code == 1 and "role must be one of" in bad_role.output


def test_unreachable_database_is_one_red_line(isolated_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://usdcop:s3cret@127.0.0.1:1/usdcop")
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "database unavailable" in lines[0] and "port 1" in lines[0]
    assert "s3cret" not in result.output and "Traceback" not in result.output


def test_db_ddl(tmp_path: Path) -> None:
    from usdcop_platform.adapters.store.migrate import postgres_ddl

    out = tmp_path / "schema.sql"
    assert runner.invoke(app, ["db", "ddl", "--out", str(out)]).exit_code == 0
    assert out.read_text(encoding="utf-8") == postgres_ddl()
    printed = runner.invoke(app, ["db", "ddl"])
    assert printed.exit_code == 0 and "CREATE TABLE model_registry" in printed.output

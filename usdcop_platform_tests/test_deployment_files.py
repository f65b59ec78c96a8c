"""docker-compose.yml, Dockerfile, dagster.yaml and workspace files agree with the code.

There is no Docker engine on the development machines, so these files are kept correct by
parsing them and checking every command, module, file and env var they name against the code.
"""

from __future__ import annotations

import importlib
import re
import shlex
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from usdcop_platform.cli import app
from usdcop_platform.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
REQUIRED_SERVICES = {"postgres", "redis", "mlflow", "user_code", "webserver", "daemon", "api"}


def _settings_env_names() -> set[str]:
    return {f.alias for f in Settings.model_fields.values() if f.alias}


def _dagster_yaml_env_names() -> set[str]:
    text = (ROOT / "dagster.yaml").read_text()
    return set(re.findall(r"env:\s*([A-Z_][A-Z0-9_]*)", text))


def test_all_services_present() -> None:
    assert REQUIRED_SERVICES <= set(COMPOSE["services"])


def test_every_app_env_var_is_read_by_the_code() -> None:
    known = _settings_env_names() | _dagster_yaml_env_names() | {"DAGSTER_HOME"}
    for name, service in COMPOSE["services"].items():
        env = service.get("environment") or {}
        if name in {"postgres"}:
            continue  # the postgres image's own variables
        for var in env:
            assert var in known, f"service {name}: env var {var} is not read by Settings or dagster.yaml"


def test_dagster_yaml_env_vars_are_provided_to_dagster_services() -> None:
    for name in ("user_code", "webserver", "daemon"):
        env = COMPOSE["services"][name]["environment"]
        missing = _dagster_yaml_env_names() - set(env)
        assert not missing, f"{name} lacks {missing} needed by dagster.yaml"


def _usdcop_command_exists(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, f"`usdcop {' '.join(args)}` does not exist: {result.output}"


@pytest.mark.parametrize("service", sorted(REQUIRED_SERVICES | {"migrate"}))
def test_service_commands_exist(service: str) -> None:
    spec = COMPOSE["services"].get(service)
    if spec is None or "command" not in spec:
        return
    cmd = spec["command"]
    argv = cmd if isinstance(cmd, list) else shlex.split(cmd)
    program = argv[0]
    if program == "usdcop":
        words = [a for a in argv[1:] if not a.startswith("-")]
        # subcommand words come before the first option
        sub = []
        for a in argv[1:]:
            if a.startswith("-"):
                break
            sub.append(a)
        _usdcop_command_exists(sub or words[:1])
    elif program == "dagster":
        assert "-m" in argv
        importlib.import_module(argv[argv.index("-m") + 1])
    elif program in ("dagster-webserver", "dagster-daemon"):
        workspace = argv[argv.index("-w") + 1]
        ws = yaml.safe_load((ROOT / workspace).read_text())
        grpc = ws["load_from"][0]["grpc_server"]
        assert grpc["host"] in COMPOSE["services"], "workspace points at a service that does not exist"
        user_cmd = COMPOSE["services"]["user_code"]["command"]
        assert str(grpc["port"]) == user_cmd[user_cmd.index("-p") + 1]
    elif program == "mlflow":
        assert "--backend-store-uri" in argv
    elif program == "redis-server":
        pass
    else:
        pytest.fail(f"unchecked program {program!r} in service {service}")


def test_mounted_files_exist() -> None:
    for name, service in COMPOSE["services"].items():
        for vol in service.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name} mounts missing file {src}"


def test_dockerfile_copies_what_exists_and_pins_torch() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"
    assert "torch==2.13.0" in text
    assert "dagster.yaml" in text


def test_workspace_yaml_loads_the_definitions_module() -> None:
    ws = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = ws["load_from"][0]["python_module"]["module_name"]
    assert hasattr(importlib.import_module(module), "defs")


def test_production_dagster_yaml_loads_on_real_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """dagster.yaml yields a PostgreSQL-backed instance with the queued coordinator and retention."""
    from usdcop_platform_tests.conftest import _need

    _need("PostgreSQL", "127.0.0.1", 5432)
    import dagster as dg
    import sqlalchemy as sa

    db = f"dagster_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    try:
        (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
        for k, v in {"DAGSTER_HOME": str(tmp_path), "DAGSTER_POSTGRES_HOST": "127.0.0.1",
                     "DAGSTER_POSTGRES_USER": "postgres", "DAGSTER_POSTGRES_PASSWORD": "",
                     "DAGSTER_POSTGRES_DB": db}.items():
            monkeypatch.setenv(k, v)
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            assert instance.get_settings("retention")["sensor"]["purge_after_days"]["skipped"] == 1
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()

"""docker-compose.yml, Dockerfile, the two dagster.yaml files and workspace files agree with the code.

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


# The production instance (PostgreSQL, env vars) the Dockerfile copies into DAGSTER_HOME; the
# repo-root dagster.yaml is the local instance the Dagster CLI reads in the repo root.
PRODUCTION_DAGSTER_YAML = ROOT / "deploy" / "dagster.yaml"
LOCAL_DAGSTER_YAML = ROOT / "dagster.yaml"
STORAGE_SECTIONS = {"storage", "run_storage", "event_log_storage", "schedule_storage", "local_artifact_storage"}


def _dagster_yaml_env_names() -> set[str]:
    text = PRODUCTION_DAGSTER_YAML.read_text()
    return set(re.findall(r"env:\s*([A-Z_][A-Z0-9_]*)", text))


def test_all_services_present() -> None:
    assert REQUIRED_SERVICES <= set(COMPOSE["services"])


def test_every_app_env_var_is_read_by_the_code() -> None:
    known = _settings_env_names() | _dagster_yaml_env_names() | {"DAGSTER_HOME"}
    for name, service in COMPOSE["services"].items():
        env = service.get("environment") or {}
        if not str(service.get("image", "")).startswith("usdcop-platform"):
            continue  # a third-party image's own variables (postgres, grafana)
        for var in env:
            assert var in known, f"service {name}: env var {var} is not read by Settings or dagster.yaml"


def test_database_password_is_its_own_env_var() -> None:
    """DATABASE_URL carries no password (the Dagster UI shows the resource's URL); DATABASE_PASSWORD does."""
    env = COMPOSE["x-app-env"]
    assert "PASSWORD" not in env["DATABASE_URL"] and "://${POSTGRES_USER:-usdcop}@postgres:5432/" in env["DATABASE_URL"]
    assert env["DATABASE_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    for name in ("user_code", "webserver", "daemon", "api", "migrate"):
        assert "DATABASE_PASSWORD" in COMPOSE["services"][name]["environment"], name


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
    # the production instance goes into DAGSTER_HOME; the local root file is never copied there
    assert 'COPY deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml"' in text
    assert not re.search(r"^COPY\s+dagster\.yaml", text, re.M)


def test_workspace_yaml_loads_the_definitions_module() -> None:
    ws = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = ws["load_from"][0]["python_module"]["module_name"]
    assert hasattr(importlib.import_module(module), "defs")


def _assert_run_limits(instance: object) -> None:
    """What the run-queue daemon applies (the `concurrency.runs` section)."""
    queue = instance.get_concurrency_config().run_queue_config  # type: ignore[attr-defined]
    assert queue.max_concurrent_runs == 4
    assert [(t.get("key"), t.get("value"), t.get("limit")) for t in queue.tag_concurrency_limits] == [
        ("usdcop/workload", "training", 1)]


def test_production_dagster_yaml_loads_on_real_postgres(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """deploy/dagster.yaml yields a PostgreSQL-backed instance with the queued coordinator, its run
    limits and retention."""
    from usdcop_platform_tests.conftest import _need

    _need("PostgreSQL", "127.0.0.1", 5432)
    import dagster as dg
    import sqlalchemy as sa

    db = f"dagster_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    try:
        (tmp_path / "dagster.yaml").write_text(PRODUCTION_DAGSTER_YAML.read_text())
        for k, v in {"DAGSTER_HOME": str(tmp_path), "DAGSTER_POSTGRES_HOST": "127.0.0.1",
                     "DAGSTER_POSTGRES_USER": "postgres", "DAGSTER_POSTGRES_PASSWORD": "",
                     "DAGSTER_POSTGRES_DB": db}.items():
            monkeypatch.setenv(k, v)
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            _assert_run_limits(instance)
            assert instance.get_settings("retention")["sensor"]["purge_after_days"]["skipped"] == 1
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_local_and_production_instances_differ_only_in_storage() -> None:
    """Run limits, retention and telemetry are the same locally and in production."""
    local, prod = _yaml(LOCAL_DAGSTER_YAML), _yaml(PRODUCTION_DAGSTER_YAML)
    assert set(prod) & STORAGE_SECTIONS == {"storage"} and "postgres" in prod["storage"]
    assert {k: v for k, v in local.items() if k not in STORAGE_SECTIONS} == {
        k: v for k, v in prod.items() if k not in STORAGE_SECTIONS}
    assert "env:" not in LOCAL_DAGSTER_YAML.read_text(), "the local instance must not need env vars"


def test_local_dagster_yaml_is_the_cli_instance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Read from the repo root (as Dagster does without DAGSTER_HOME), the root dagster.yaml stores in
    the default usdcop instance with the same fast event log, SQLite only, no env var needed."""
    import dagster as dg

    from usdcop_platform.adapters.dagster_instance import INSTANCE_YAML

    for var in ("DAGSTER_HOME", "DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_DB"):
        monkeypatch.delenv(var, raising=False)
    home = Path(".usdcop/dagster_home")
    assert (ROOT / home) == Settings(_env_file=None).resolved_dagster_home  # the CLI's default instance
    cli = yaml.safe_load(INSTANCE_YAML.format(base_dir=(home / "history" / "runs").as_posix()))
    assert _yaml(LOCAL_DAGSTER_YAML)["event_log_storage"] == cli["event_log_storage"]
    config_dir = tmp_path / "root"
    config_dir.mkdir()
    (config_dir / "dagster.yaml").write_text(LOCAL_DAGSTER_YAML.read_text())
    monkeypatch.chdir(config_dir)  # relative paths resolve against the directory Dagster starts in
    from dagster._core.instance.ref import InstanceRef

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path / "temp"), config_dir=str(config_dir))) as inst:
        assert type(inst.event_log_storage).__name__ == "FastSqliteEventLogStorage"
        assert type(inst.run_storage).__name__ == "SqliteRunStorage"
        assert type(inst.run_coordinator).__name__ == "QueuedRunCoordinator"
        _assert_run_limits(inst)
        assert inst.get_settings("retention")["sensor"]["purge_after_days"]["skipped"] == 1
        assert inst.get_settings("telemetry")["enabled"] is False
    assert (config_dir / home / "history" / "runs.db").exists()
    assert (config_dir / home / "schedules" / "schedules.db").exists()


def test_dagster_cli_in_a_root_without_dagster_home(tmp_path: Path) -> None:
    """`dagster definitions validate` started where the root dagster.yaml is, DAGSTER_HOME unset:
    passes, with no warning about the instance configuration."""
    import os
    import subprocess
    import sys

    (tmp_path / "dagster.yaml").write_text(LOCAL_DAGSTER_YAML.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(USDCOP_DATA_DIR=str(tmp_path / "lake"), USDCOP_STATE_DIR=str(tmp_path / "state"))
    exe = Path(sys.executable).with_name("dagster")
    out = subprocess.run([str(exe), "definitions", "validate", "-m", "usdcop_platform.definitions"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "All code locations passed validation" in log
    # Dagster's own notice that `definitions validate` is superseded by `dg` is not about the instance
    warnings = [ln for ln in log.splitlines() if "WARNING" in ln.upper() and "SupersessionWarning" not in ln]
    assert not warnings, warnings

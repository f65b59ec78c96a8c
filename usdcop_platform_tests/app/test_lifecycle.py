"""Rollback lifecycle: `usdcop rollback` (audited, alerted; clear error without a previous model)
and rollback proposals (one open proposal per production model)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from usdcop_platform.adapters.webhook import AlertDispatcher
from usdcop_platform.app.lifecycle import (
    ROLLBACK_PROPOSED,
    open_rollback_proposal,
    propose_rollback,
    rollback_production,
)
from usdcop_platform_tests.defs.monitoring_support import make_world, register_model
from usdcop_platform_tests.webhook_receiver import webhook_receiver


@pytest.fixture
def cli_world(isolated_settings, tmp_path, monkeypatch):
    from usdcop_platform.adapters.store import clear_store_cache

    world = make_world(tmp_path, isolated_settings.resolved_database_url)
    yield world
    clear_store_cache()


def _cli(*args: str):
    from usdcop_platform.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_cli_rollback_without_previous_model_is_a_clear_error(cli_world) -> None:
    register_model(cli_world, "m1", production=True)
    r = _cli("rollback", "--notes", "bad fills today")
    assert r.exit_code == 1
    assert "no previous production model to roll back to" in r.output and "Traceback" not in r.output
    assert cli_world.store.models.production()["model_id"] == "m1"
    assert cli_world.store.audit.list(action="ROLLBACK") == []


def test_cli_rollback_restores_previous_model_with_audit_and_alert(cli_world, monkeypatch) -> None:
    from usdcop_platform.settings import get_settings

    register_model(cli_world, "m1", production=True)
    register_model(cli_world, "m2", production=True)
    with webhook_receiver() as rx:
        monkeypatch.setenv("USDCOP_ALERT_WEBHOOK_URL", rx.url)
        get_settings.cache_clear()
        r = _cli("rollback", "--notes", "realized Sharpe collapsed", "--reviewer", "ops-oncall")
        assert r.exit_code == 0, r.output
        assert "production is now m1" in r.output and "(was m2)" in r.output
        assert any("production rolled back by ops-oncall: m2 -&gt; m1" in t for t in rx.texts())  # Slack-escaped
    (alert,) = cli_world.store.alerts.list(kind="rollback")
    assert alert["message"] == "production rolled back by ops-oncall: m2 -> m1" and alert["delivered"]
    assert cli_world.store.models.production()["model_id"] == "m1"
    assert cli_world.store.models.get("m2")["stage"] == "archived"
    (audit,) = cli_world.store.audit.list(action="ROLLBACK")
    assert audit["reviewer"] == "ops-oncall" and audit["notes"] == "realized Sharpe collapsed"
    assert audit["model_id"] == "m1" and audit["previous_production_model_id"] == "m2"


def test_cli_rollback_needs_notes(cli_world) -> None:
    register_model(cli_world, "m1", production=True)
    assert _cli("rollback").exit_code != 0
    r = _cli("rollback", "--notes", "   ")
    assert r.exit_code == 1 and "--notes must say why" in r.output


def test_one_open_rollback_proposal_per_production_period(tmp_path, db_url) -> None:
    world = make_world(tmp_path, db_url)
    register_model(world, "m1", production=True)
    register_model(world, "m2", production=True)
    d = AlertDispatcher.create(world.store, None, world.cfg.mlops.monitoring.alerts)
    first = propose_rollback(world.store, d, model_id="m2", reason="drop 2.5", details={"drop": 2.5})
    assert first.created and first.target_model_id == "m1"
    second = propose_rollback(world.store, d, model_id="m2", reason="drop 2.7")
    assert not second.created and second.audit_id == first.audit_id
    assert len(world.store.audit.list(action=ROLLBACK_PROPOSED)) == 1
    assert world.store.models.production()["model_id"] == "m2"  # a proposal needs approval

    rollback_production(world.store, d, reviewer="admin", notes="approved")
    assert open_rollback_proposal(world.store, "m2") is None  # m2 is not production any more
    world.store.models.set_stage("m2", "production", reviewer="admin")  # promoted again later
    again = propose_rollback(world.store, d, model_id="m2", reason="degraded again")
    assert again.created and len(world.store.audit.list(action=ROLLBACK_PROPOSED)) == 2
    with pytest.raises(ValueError, match="notes"):
        rollback_production(world.store, d, reviewer="admin", notes=" ")


def test_cli_rollback_precondition_and_verification(cli_world) -> None:
    from pathlib import Path

    register_model(cli_world, "m1", production=True)
    register_model(cli_world, "m2", production=True)
    version = cli_world.store.registry_version()
    r = _cli("rollback", "--notes", "x", "--expect-version", str(version - 1))
    assert r.exit_code == 1 and "not the expected" in r.output and "Traceback" not in r.output
    r = _cli("rollback", "--notes", "x", "--expect-current", "m1")
    assert r.exit_code == 1 and "production is m2, not the expected 'm1'" in r.output
    onnx = Path(cli_world.store.models.get("m1")["onnx_path"])
    good = onnx.read_bytes()
    onnx.write_bytes(good[:-64] + bytes(b ^ 0xFF for b in good[-64:]))
    r = _cli("rollback", "--notes", "x", "--expect-version", str(version))
    assert r.exit_code == 1 and "refused" in r.output and "sha256" in r.output
    assert cli_world.store.models.production()["model_id"] == "m2"
    onnx.write_bytes(good)
    r = _cli("rollback", "--notes", "x", "--expect-version", str(version), "--expect-current", "m2")
    assert r.exit_code == 0, r.output
    assert cli_world.store.models.production()["model_id"] == "m1"

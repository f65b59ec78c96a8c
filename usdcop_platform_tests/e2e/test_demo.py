"""The README's main job end to end: `usdcop demo` on the embedded defaults (slow, runs in CI)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

# Imported before the test's settings exist, as in a long-lived process: the demo must not run on
# resources bound at import time to other settings (it once sent its live bars to another store).
import usdcop_platform.definitions  # noqa: F401

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_graph(isolated_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from usdcop_platform.adapters.store import clear_store_cache, get_store
    from usdcop_platform.cli import app

    monkeypatch.setenv("USDCOP_SYNTHETIC_SEED", "7")
    clear_store_cache()
    result = CliRunner().invoke(app, ["demo", "--timesteps", "512"])
    assert result.exit_code == 0, result.output + str(result.exception)
    out = result.output
    assert "5/5 live path: 60 bars → 60 signals; replay reproduced them bit for bit" in out
    assert "/experiments/prop_" in out and "/review" in out

    store = get_store(isolated_settings.resolved_database_url)
    production = store.models.production()
    assert production is not None and production["experiment_name"] == "smoke"
    (proposal,) = store.proposals.list()
    assert proposal["model_id"] == production["model_id"] and proposal["status"] == "APPROVED"
    (audit,) = store.audit.list(action="APPROVE")
    assert audit["reviewer"] == "demo-reviewer"
    assert len(store.signals.list(model_id=production["model_id"])) == 60
    # Dagster's logs went to the log file, not the terminal
    assert (isolated_settings.state_dir / "logs" / "usdcop.log").stat().st_size > 0
    assert "STEP_START" not in out and "RUN_SUCCESS" not in out
    clear_store_cache()

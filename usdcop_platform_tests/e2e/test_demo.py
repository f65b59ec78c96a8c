"""The README's main job end to end: `usdcop demo` on the embedded defaults (slow, runs in CI)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

# Imported before the test's settings exist, as in a long-lived process: the demo must not run on
# resources bound at import time to other settings (it once sent its live bars to another store).
import usdcop_platform.definitions  # noqa: F401

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_graph_and_shows_a_model_that_learned(isolated_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from usdcop_platform.adapters.store import clear_store_cache, get_store
    from usdcop_platform.cli import app
    from usdcop_platform.commands.demo import DEMO_EDGE, EDGE_ENV
    from usdcop_platform.core.actions import HOLD

    # the demo plants its edge through the environment; monkeypatch restores it after the test
    monkeypatch.setenv(EDGE_ENV, str(DEMO_EDGE))
    clear_store_cache()
    result = CliRunner().invoke(app, ["demo"])  # the demo's own budget: the model must learn
    assert result.exit_code == 0, result.output + str(result.exception)
    out = result.output
    assert "5/5 live path: 60 bars → 60 signals; replay reproduced them bit for bit" in out
    assert "/experiments/prop_" in out and "/review" in out
    assert f"planted edge {DEMO_EDGE:g}" in out and "oracle" in out

    store = get_store(isolated_settings.resolved_database_url)
    production = store.models.production()
    assert production is not None and production["experiment_name"] == "demo"
    (proposal,) = store.proposals.list()
    assert proposal["model_id"] == production["model_id"] and proposal["status"] == "APPROVED"
    # the first vote reflects what was learned: the edge pays, the rules do not reject
    assert proposal["recommendation"] in ("PROMOTE", "REVIEW"), proposal["reasons"]
    assert proposal["metrics"]["sharpe"] > 2.0
    (audit,) = store.audit.list(action="APPROVE")
    assert audit["reviewer"] == "demo-reviewer"
    signals = store.signals.list(model_id=production["model_id"])
    assert len(signals) == 60
    assert sum(int(s["action"]) != HOLD for s in signals) >= 10  # live signals trade, not all HOLD
    # the session's 60 bars went through ONE live run (the sensor's catch-up form), not one run per bar
    import dagster as dg

    from usdcop_platform.commands.common import open_local_instance
    with open_local_instance(isolated_settings) as instance:
        live_runs = instance.get_run_records(dg.RunsFilter(job_name="live_signal_job"))
    assert len(live_runs) == 1 and live_runs[0].dagster_run.is_success
    # Dagster's logs went to the log file, not the terminal
    assert (isolated_settings.state_dir / "logs" / "usdcop.log").stat().st_size > 0
    assert "STEP_START" not in out and "RUN_SUCCESS" not in out
    clear_store_cache()

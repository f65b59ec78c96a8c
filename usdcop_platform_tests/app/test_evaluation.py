"""app/evaluation.py called directly, without Dagster: the refusals of backtest-and-propose name
what is missing and what to do (the full runs are in defs/test_evaluation.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.adapters.walk_forward_reports import load_report, save_report
from usdcop_platform.app import evaluation as ev
from usdcop_platform.contracts.platform import DEFAULT_CONFIG_DIR, load_platform_config
from usdcop_platform.core.calendar import TradingCalendar


@pytest.fixture
def inputs(tmp_path: Path, sqlite_url: str) -> ev.EvaluationInputs:
    from usdcop_platform.adapters.store import get_store

    cfg = load_platform_config(DEFAULT_CONFIG_DIR)
    return ev.EvaluationInputs(store=get_store(sqlite_url), lake=ParquetLake(tmp_path / "lake"),
                               calendar=TradingCalendar(cfg.instrument), config=cfg, models_root=tmp_path / "models")


def test_backtest_without_a_model_says_how_to_make_one(inputs) -> None:
    with pytest.raises(ev.EvaluationError, match=r"no model for 'smoke': run `usdcop train -e smoke`"):
        ev.run_backtest(inputs, "smoke")
    with pytest.raises(ev.EvaluationError, match="model 'nope' is not in the registry"):
        ev.run_backtest(inputs, "smoke", model_id="nope")


def test_proposal_without_a_backtest_names_the_asset_to_materialize(inputs) -> None:
    with pytest.raises(ev.EvaluationError, match="no backtest for experiment 'smoke': materialize evaluation/backtest"):
        ev.propose(inputs, "smoke")


def test_the_vote_uses_the_walk_forward_of_this_config_only(inputs) -> None:
    smoke = inputs.config.experiment("smoke")
    folds = smoke.backtest.walk_forward.model_copy(update={"folds": 3})
    exp = smoke.model_copy(update={"backtest": smoke.backtest.model_copy(update={"walk_forward": folds})})
    walk, note = ev.vote_walk_forward(inputs.lake, exp, {"walk_forward": None})
    assert walk is not None and walk["folds"] == [] and note is not None and "has not run for this config" in note
    report = {"kind": "expanding", "folds": [{"fold": 1}], "aggregate": {}, "total_timesteps": 64}
    save_report(inputs.lake, exp.name, exp.config_hash, report)
    assert ev.vote_walk_forward(inputs.lake, exp, {}) == (report, None)
    assert load_report(inputs.lake, exp.name, exp.config_hash, total_timesteps=128) is None  # another budget
    assert load_report(inputs.lake, exp.name, "0" * 64) is None  # another config

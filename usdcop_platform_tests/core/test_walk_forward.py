"""core.walk_forward: expanding folds, each with its own train-only normalization; folds that do not fit."""

from __future__ import annotations

import pytest

from usdcop_platform.core import datasets as ds
from usdcop_platform.core import walk_forward as wf
from usdcop_platform.core.metrics import Annualization
from usdcop_platform_tests.training_synth import synthetic_features, tiny


def with_folds(exp, folds: int, test_sessions: int, min_train: int):
    raw = exp.canonical()
    raw["backtest"]["walk_forward"] = {"folds": folds, "test_sessions": test_sessions, "min_train_sessions": min_train}
    return type(exp).model_validate(raw)


def sessions_of(exp, calendar):
    return ds.source_sessions(exp, calendar.sessions(exp.date_ranges.train.start, exp.date_ranges.test.end))


def test_baseline_default_has_four_expanding_folds_that_fit(platform_config, calendar) -> None:
    exp = platform_config.experiment("baseline")
    assert exp.backtest.walk_forward.folds >= 4
    folds = wf.plan_folds(sessions_of(exp, calendar), exp, ds.effective_embargo(exp, platform_config.features),
                          calendar.bars_per_session)
    assert len(folds) == exp.backtest.walk_forward.folds
    sizes = [f.train_sessions for f in folds]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)  # expanding
    assert all(f.train[0] == exp.date_ranges.train.start for f in folds)
    for f in folds:
        assert f.train[1] < f.val[0] < f.val[1] < f.test[0] <= f.test[1]
    for a, b in zip(folds, folds[1:]):
        assert a.test[1] < b.test[0]  # disjoint blocks, in order
    assert folds[-1].test[1] == max(sessions_of(exp, calendar))
    assert platform_config.experiment("smoke").backtest.walk_forward.folds == 0  # tests and demo stay fast


def test_folds_that_do_not_fit_say_how_many_sessions_they_need(platform_config, calendar) -> None:
    exp = with_folds(platform_config.experiment("smoke"), 4, 30, 60)
    with pytest.raises(wf.WalkForwardError, match=r"walk-forward folds do not fit experiment 'smoke': 4 folds x 30 "
                                                   r"test sessions.* need 230 sessions .*holds \d+\. Use fewer"):
        wf.plan_folds(sessions_of(exp, calendar), exp, 600, calendar.bars_per_session)
    assert wf.plan_folds(sessions_of(exp, calendar), platform_config.experiment("smoke"), 600, 60) == []


def test_each_fold_trains_with_its_own_normalization_and_reports_metrics(platform_config, calendar) -> None:
    contract = platform_config.features
    exp = tiny(with_folds(platform_config.experiment("smoke"), 4, 5, 20))
    sessions = sessions_of(exp, calendar)
    frame = synthetic_features(calendar, contract, sessions[0], sessions[-1])
    folds = wf.plan_folds(sessions, exp, ds.effective_embargo(exp, contract), calendar.bars_per_session)
    report = wf.run_walk_forward(frame, folds, exp, contract, Annualization.from_calendar(calendar),
                                 total_timesteps=256)
    rows = report["folds"]
    assert [r["fold"] for r in rows] == [0, 1, 2, 3] and report["kind"] == "expanding"
    assert len({r["norm_stats_hash"] for r in rows}) == 4  # fitted on each fold's own (growing) window
    for r, f in zip(rows, folds):
        assert r["n_sessions"] == 5 and r["n_bars"] == 5 * calendar.bars_per_session
        assert (r["train_end"], r["test_start"]) == (f.train[1].isoformat(), f.test[0].isoformat())
    agg = report["aggregate"]
    assert agg["folds"] == 4 and agg["positive_share"] == sum(r["sharpe"] > 0 for r in rows) / 4

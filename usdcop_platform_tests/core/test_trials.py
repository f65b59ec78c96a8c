"""core.trials: a trial's replay equals the serving policy runner; family N/V and their source."""

from __future__ import annotations

import math

import numpy as np
import pytest

from usdcop_platform.core import trials as T
from usdcop_platform.core.actions import ACTION_TO_POSITION
from usdcop_platform.core.metrics import Annualization, probabilistic_sharpe_ratio
from usdcop_platform.core.policy_runner import run_policy_over_bars


class TablePolicy:
    """A deterministic policy whose greedy action depends on the bar and the held position."""

    def __init__(self, table: np.ndarray, position_index: int) -> None:
        self.table, self.position_index = table, position_index

    def predict_proba(self, obs: np.ndarray):
        t, held = int(obs[0, 0]), int(obs[0, self.position_index])
        p = np.zeros((1, 3), dtype=np.float32)
        p[0, self.table[held + 1, t]] = 1.0
        return p, np.zeros(1)


@pytest.mark.parametrize("flat_eod", [True, False])
def test_replay_matches_the_serving_policy_runner(flat_eod) -> None:
    rng = np.random.default_rng(0)
    n = 300
    table = rng.integers(0, 3, size=(3, n))
    sessions = np.repeat(np.arange(5), 60)
    raw = np.zeros((n, 2))
    raw[:, 0] = np.arange(n)
    run = run_policy_over_bars(TablePolicy(table, 1), None, raw, sessions, flat_at_session_end=flat_eod, position_index=1)
    np.testing.assert_array_equal(T.replay_positions(table, sessions, flat_at_session_end=flat_eod), run.positions)
    assert set(ACTION_TO_POSITION) >= set(run.positions.tolist())
    with pytest.raises(ValueError, match="action table must be"):
        T.replay_positions(table[:, :10], sessions, flat_at_session_end=True)


def test_family_without_ledger_rows_counts_this_model_and_says_so() -> None:
    fam = T.family_trials("smoke", [])
    assert fam.n_trials == 1 and fam.variance_annual is None
    assert "no trial of family 'smoke' in the trial ledger: counted as 1" in fam.source()


def test_redeflation_with_today_s_family(calendar) -> None:
    ann = Annualization.from_calendar(calendar)
    n = 3000
    metrics = {"sharpe": 2.0, "n_bars": n, "years": n / ann.bars_per_year, "skew": 0.0, "kurtosis": 3.0}
    one = T.deflate_with_family(metrics, T.family_trials("x", [{"kind": "training_seed", "experiment_version": "1",
                                                                 "test_sharpe": 1.0}]))
    sr = 2.0 / ann.bar_factor
    assert one["n_trials"] == 1 and one["dsr"] == pytest.approx(probabilistic_sharpe_ratio(sr, n, 0.0, 3.0))
    rows = [{"kind": "training_seed", "experiment_version": "1", "test_sharpe": s} for s in (0.1, 1.5, -0.7, 2.2)]
    many = T.deflate_with_family(metrics, T.family_trials("x", rows))
    assert many["n_trials"] == 4 and many["dsr"] < one["dsr"]
    assert many["variance_annual"] == pytest.approx(np.var([0.1, 1.5, -0.7, 2.2], ddof=1))
    assert T.deflate_with_family({"sharpe": math.inf, "n_bars": n, "years": 1.0}, T.family_trials("x", rows)) is None

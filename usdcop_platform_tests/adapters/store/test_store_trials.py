"""The trial ledger: append-only (database triggers), idempotent per trial id, counted per family."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from usdcop_platform.adapters.store import Store
from usdcop_platform.core.trials import family_trials


def trial(trial_id: str, family: str = "baseline", version: str = "1.0.0", sharpe: float | None = 0.5, **over):
    return {"trial_id": trial_id, "family": family, "experiment_version": version, "kind": "training_seed",
            "seed": 0, "config_hash": "c" * 64, "data_hash": "d" * 64, "val_sharpe": 0.4, "test_sharpe": sharpe,
            "test_bars": 3000, "details": {"note": "x"}, **over}


def test_every_trial_of_a_family_counts_across_versions(store: Store) -> None:
    store.trials.record([trial("a"), trial("b", sharpe=0.7)])
    store.trials.record([trial("c", version="1.1.0", sharpe=-0.2, kind="search_trial")])
    store.trials.record([trial("z", family="other")])
    rows = store.trials.family("baseline")
    assert [r.trial_id for r in rows] == ["a", "b", "c"] and store.trials.count("baseline") == 3
    fam = family_trials("baseline", rows)
    assert fam.n_trials == 3 and fam.versions == ("1.0.0", "1.1.0")
    assert fam.kinds == {"training_seed": 2, "search_trial": 1}
    assert fam.variance_annual == pytest.approx(0.67 / 3)
    assert "3 rows of family 'baseline'" in fam.source() and "versions 1.0.0, 1.1.0" in fam.source()


def test_a_retried_write_does_not_count_twice(store: Store) -> None:
    first = store.trials.record([trial("a")])
    again = store.trials.record([trial("a", sharpe=9.9)])
    assert again[0].id == first[0].id and again[0].test_sharpe == 0.5
    assert store.trials.count("baseline") == 1


def test_ledger_rows_cannot_be_updated_or_deleted(store: Store) -> None:
    [row] = store.trials.record([trial("a")])
    for stmt in ("UPDATE trial_ledger SET test_sharpe = 3 WHERE id = :id", "DELETE FROM trial_ledger WHERE id = :id"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text(stmt), {"id": row.id})
    if store.dialect == "postgresql":
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE trial_ledger"))
    assert store.trials.count("baseline") == 1
    assert {n for n in dir(store.trials) if not n.startswith("_")} == {"record", "family", "count"}


@pytest.mark.parametrize(
    ("over", "message"),
    [({"kind": "guess"}, "kind 'guess' is not one of"), ({"data_hash": ""}, "missing ['data_hash']"),
     ({"sharp": 1.0}, "unknown ledger field(s) ['sharp']")],
)
def test_bad_trials_are_refused_naming_the_field(store: Store, over, message) -> None:
    with pytest.raises(ValueError, match=r"trial 1: " + message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        store.trials.record([trial("ok"), trial("bad", **over)])
    assert store.trials.count("baseline") == 0

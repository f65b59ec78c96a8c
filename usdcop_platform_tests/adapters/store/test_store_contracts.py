"""Experiment contracts are immutable per name+version."""

from __future__ import annotations

import pytest

from usdcop_platform.adapters.store import ExperimentContractConflict, Store


def test_contract_recorded_once_and_immutable(store: Store, platform_config) -> None:
    exp = platform_config.experiment("baseline")
    foh = platform_config.features.feature_order_hash
    row = store.contracts.record(exp, foh)
    assert (row.name, row.version, row.config_hash, row.reward_config_hash) == (
        exp.name, exp.version, exp.config_hash, exp.reward_config_hash)
    assert row.content == exp.canonical()
    assert store.contracts.record(exp, foh) == row  # same content: a no-op

    changed = exp.model_copy(update={"embargo_bars": exp.embargo_bars + 1})
    assert changed.config_hash != exp.config_hash
    with pytest.raises(ExperimentContractConflict, match="bump `version`") as info:
        store.contracts.record(changed, foh)
    assert info.value.field == "config_hash"
    with pytest.raises(ExperimentContractConflict, match="feature_order_hash"):
        store.contracts.record(exp, "0" * 64)

    bumped = changed.model_copy(update={"version": exp.version + "-b"})
    store.contracts.record(bumped, foh)
    assert store.contracts.get(exp.name, exp.version).config_hash == exp.config_hash
    assert store.contracts.get(exp.name, "nope") is None
    assert [r.version for r in store.contracts.list(exp.name)] == [exp.version, bumped.version]

"""What the Dagster catalog shows for every asset: kinds, a team owner, a description, and, for
tabular assets, a column schema equal to the schema the code writes with (defs/catalog.py).

Checked twice: on the `Definitions` asset specs (fast), and through Dagster's GraphQL API on the
code location loaded in process (what the UI reads)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import dagster as dg
import numpy as np
import polars as pl
import pytest

from usdcop_platform.adapters.store.tables import PromotionProposal, TradingSignal
from usdcop_platform.contracts.platform import get_config
from usdcop_platform.core import datasets as ds
from usdcop_platform.core.backtest import evaluate
from usdcop_platform.core.cleaning import MACRO_FLAGGED_SCHEMA
from usdcop_platform.core.metrics import Annualization
from usdcop_platform.core.performance import SESSION_PNL_SCHEMA
from usdcop_platform.core.schema import BACKTEST_SERIES_SCHEMA, BACKTEST_TRADES_SCHEMA, BAR_SCHEMA
from usdcop_platform.defs import catalog
from usdcop_platform.defs.features.assets import empty_features
from usdcop_platform.app import monitoring_history as h

TEAM = re.compile(r"^team:[a-z][a-z0-9-]*$")
MAX_KINDS = 3  # Dagster refuses more
CONTRACT = get_config().features


def _polars(schema: dict[str, pl.DataType]) -> list[tuple[str, str]]:
    return [(name, catalog.dtype_name(t)) for name, t in schema.items()]


def _sql(table: object) -> list[str]:
    return [c.name for c in table.columns]  # type: ignore[attr-defined]


# Every tabular asset and the schema its column schema must equal (names, or names and types).
TABULAR: dict[str, list[object]] = {
    "raw/usdcop_m5_ohlcv": _polars(BAR_SCHEMA),
    "raw/macro_daily": _polars(MACRO_FLAGGED_SCHEMA),
    "features/m5_features": _polars(dict(empty_features(CONTRACT).schema)),
    "datasets/experiment_dataset": list(ds.dataset_columns(CONTRACT)),
    "evaluation/backtest": _polars(BACKTEST_SERIES_SCHEMA),
    "evaluation/promotion_proposal": _sql(PromotionProposal.__table__),
    "live/bar": _polars(BAR_SCHEMA),
    "live/features": ["time", *CONTRACT.names],
    "live/trading_signal": _sql(TradingSignal.__table__),
    "monitoring/feature_drift": _polars(h.DRIFT_SCHEMA),
    "monitoring/realized_performance": _polars(SESSION_PNL_SCHEMA),
    "monitoring/shadow_ab_report": _polars(h.AB_SCHEMA),
    "monitoring/shadow_signals": _sql(TradingSignal.__table__),
}
# Not tables: a model file, a study, a JSON report.
NOT_TABULAR = {"models/ppo_policy", "models/search", "evaluation/walk_forward"}


def _specs(defs: dg.Definitions) -> dict[str, dg.AssetSpec]:
    graph = defs.resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).assets_def.specs_by_key[k] for k in graph.get_all_asset_keys()}


@pytest.fixture(scope="module")
def specs() -> dict[str, dg.AssetSpec]:
    from usdcop_platform.definitions import defs

    return _specs(defs)


def _columns(spec: dg.AssetSpec) -> dg.TableSchema | None:
    value = spec.metadata.get(catalog.COLUMN_SCHEMA)
    return value.schema if isinstance(value, dg.TableSchemaMetadataValue) else value


def test_every_asset_has_kinds_a_team_owner_and_a_description(specs) -> None:
    assert set(specs) == set(TABULAR) | NOT_TABULAR, "a new asset: decide whether it is tabular (TABULAR/NOT_TABULAR)"
    for key, spec in specs.items():
        assert 1 <= len(spec.kinds) <= MAX_KINDS, f"{key}: kinds {spec.kinds}"
        assert spec.owners and all(TEAM.match(o) and o in catalog.OWNERS for o in spec.owners), f"{key}: owners {spec.owners}"
        assert spec.description and len(spec.description) > 20, f"{key}: no description"


def test_the_live_location_shows_the_same_catalog() -> None:
    from usdcop_platform.defs.live.location import defs as live_defs

    for key, spec in _specs(live_defs).items():
        assert spec.kinds and spec.owners == [catalog.OWNER_MLOPS] and spec.description, key
        assert _columns(spec) is not None, key


def test_tabular_assets_have_the_column_schema_they_write(specs) -> None:
    for key, expected in TABULAR.items():
        schema = _columns(specs[key])
        assert schema is not None, f"{key}: no {catalog.COLUMN_SCHEMA}"
        got = [(c.name, c.type) for c in schema.columns] if isinstance(expected[0], tuple) else [c.name for c in schema.columns]
        assert got == expected, key
    for key in NOT_TABULAR:
        assert _columns(specs[key]) is None, key
    trades = specs["evaluation/backtest"].metadata["trades_columns"]
    trades = trades.schema if isinstance(trades, dg.TableSchemaMetadataValue) else trades
    assert [(c.name, c.type) for c in trades.columns] == _polars(BACKTEST_TRADES_SCHEMA)


def test_feature_columns_say_their_place_in_the_observation(specs) -> None:
    cols = {c.name: c for c in _columns(specs["features/m5_features"]).columns}
    n = CONTRACT.n_features
    assert cols[CONTRACT.names[0]].description == f"feature 1 of {n} of contract {CONTRACT.version}"
    assert "state" in cols["position"].description and cols["time"].description is None
    signal = {c.name: c for c in _columns(specs["live/trading_signal"]).columns}
    assert signal["id"].constraints.unique and not signal["id"].constraints.nullable
    assert signal["failing_check"].constraints.nullable


@pytest.mark.parametrize("with_baseline", [False, True])
def test_backtest_frames_match_the_declared_schemas(with_baseline: bool) -> None:
    """core.schema's backtest schemas (the catalog's source) are what core.backtest writes."""
    n = 120
    close = 4000 + np.cumsum(np.random.default_rng(0).normal(0, 1, n))
    pos = np.tile(np.array([1, 1, 0, -1, -1, 0], dtype=np.int8), n // 6)
    sessions = np.repeat(np.arange(19700, 19702), n // 2).astype(np.int64)
    times = (np.datetime64("2024-01-02T13:00") + np.arange(n) * np.timedelta64(5, "m")).astype("datetime64[us]")
    ev = evaluate(close, pos, sessions, cost_bps=1.0, initial_capital=1e6,
                  annualization=Annualization(bars_per_year=252 * 60, sessions_per_year=252), confidence=0.95,
                  bootstrap_block_bars=60, bootstrap_samples=10, bootstrap_seed=1, times=times,
                  baseline_positions=pos[::-1].copy() if with_baseline else None)
    assert dict(ev.series_frame().schema) == BACKTEST_SERIES_SCHEMA
    assert dict(ev.candidate.trades_frame().schema) == BACKTEST_TRADES_SCHEMA


def test_table_schema_refuses_descriptions_of_unknown_columns() -> None:
    with pytest.raises(ValueError, match=r"descriptions of column\(s\) \['nope'\]"):
        catalog.table_schema(BAR_SCHEMA, {"nope": "x"})
    assert catalog.dtype_name(pl.Datetime("us", "UTC")) == "timestamp[us, UTC]"
    assert [catalog.dtype_name(t) for t in (pl.Utf8(), pl.Boolean(), pl.Float64(), pl.Date())] == [
        "string", "bool", "float64", "date"]


# ---- through Dagster's GraphQL API (what the UI reads) ----------------------------------------------
ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    description
    kinds
    owners { __typename ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    metadataEntries { label ... on TableSchemaMetadataEntry { schema { columns { name type } } } }
  }
}
"""


@pytest.fixture(scope="module")
def graphql_context() -> Iterator[object]:
    """The real definitions as an in-process code location of a test instance."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="usdcop_platform.definitions", attribute="defs"), location_name="usdcop_platform")
    with dg.instance_for_test() as instance:
        with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as process_context:
            yield process_context.create_request_context()


def test_graphql_serves_kinds_owners_descriptions_and_columns_of_every_asset(graphql_context) -> None:
    from dagster_graphql.test.utils import execute_dagster_graphql

    result = execute_dagster_graphql(graphql_context, ASSETS_QUERY)
    assert result.errors is None, result.errors
    nodes = {"/".join(n["assetKey"]["path"]): n for n in result.data["assetNodes"]}
    assert set(nodes) == set(TABULAR) | NOT_TABULAR
    for key, node in nodes.items():
        assert node["kinds"], f"{key}: no kinds in the UI"
        assert node["description"], f"{key}: no description in the UI"
        teams = [o.get("team") for o in node["owners"] if o["__typename"] == "TeamAssetOwner"]
        assert teams and all(f"team:{t}" in catalog.OWNERS for t in teams), f"{key}: owners {node['owners']}"
        columns = {m["label"]: m for m in node["metadataEntries"]}.get(catalog.COLUMN_SCHEMA)
        if key in TABULAR:
            assert columns is not None, f"{key}: no column schema in the UI"
            names = [c["name"] for c in columns["schema"]["columns"]]
            assert names == [e[0] if isinstance(e, tuple) else e for e in TABULAR[key]], key
        else:
            assert columns is None, key
    assert nodes["live/trading_signal"]["kinds"] and {o["team"] for o in nodes["live/bar"]["owners"]} == {"mlops"}

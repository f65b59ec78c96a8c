"""What the Dagster catalog shows beside the graph: asset owners and column schemas.

Owners are teams in Dagster's `team:<name>` owner format. Column schemas (`dagster/column_schema`,
definition metadata) are derived from the schemas the code writes with: core.schema's frame
schemas, the feature contract, the SQL tables of adapters.store. Never a hand-kept column list,
so the catalog cannot drift from what is stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg
import polars as pl
import sqlalchemy as sa

from usdcop_platform.contracts.features import FeatureContract
from usdcop_platform.core.schema import UTC_TIME

OWNER_DATA = "team:quant-data"  # raw market data and features
OWNER_RESEARCH = "team:quant-research"  # datasets, models, search, evaluation, promotion proposals
OWNER_MLOPS = "team:mlops"  # the live path and monitoring
OWNERS = (OWNER_DATA, OWNER_RESEARCH, OWNER_MLOPS)
COLUMN_SCHEMA = "dagster/column_schema"  # the key the UI's Columns tab reads


def dtype_name(dtype: pl.DataType) -> str:
    """Short, stable type names for the UI ("timestamp[us, UTC]", "float64", "date", ...)."""
    if isinstance(dtype, pl.Datetime):
        return f"timestamp[{dtype.time_unit}, {dtype.time_zone}]" if dtype.time_zone else f"timestamp[{dtype.time_unit}]"
    if dtype == pl.Utf8:
        return "string"
    if dtype == pl.Boolean:
        return "bool"
    return str(dtype).lower()


def table_schema(schema: Mapping[str, pl.DataType], descriptions: Mapping[str, str] | None = None) -> dg.TableSchema:
    """A polars schema (column -> dtype) as a Dagster table schema, in column order."""
    notes = descriptions or {}
    unknown = set(notes) - set(schema)
    if unknown:
        raise ValueError(f"descriptions of column(s) {sorted(unknown)} that the schema does not have")
    return dg.TableSchema(columns=[
        dg.TableColumn(name=name, type=dtype_name(dtype), description=notes.get(name)) for name, dtype in schema.items()
    ])


def sql_table_schema(table: sa.Table) -> dg.TableSchema:
    """A SQL table's columns with their nullability, uniqueness and comments."""
    unique = {c.name for c in table.columns if c.primary_key or c.unique}
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint) and len(constraint.columns) == 1:
            unique.update(c.name for c in constraint.columns)
    return dg.TableSchema(columns=[
        dg.TableColumn(
            name=c.name, type=str(c.type).lower(), description=c.comment,
            constraints=dg.TableColumnConstraints(nullable=bool(c.nullable), unique=c.name in unique),
        )
        for c in table.columns
    ])


def feature_descriptions(contract: FeatureContract) -> dict[str, str]:
    """Each contract feature's place in the observation (the order the model reads them in)."""
    n = contract.n_features
    return {
        name: f"feature {i + 1} of {n} of contract {contract.version}"
        + (" (state: set by the policy, not from market data)" if name in contract.state_features else "")
        for i, name in enumerate(contract.names)
    }


def live_feature_schema(contract: FeatureContract) -> dict[str, pl.DataType]:
    """The live path's observation of one bar: the bar time and the contract's raw values."""
    return {"time": UTC_TIME, **{name: pl.Float64() for name in contract.names}}


def columns(schema: dg.TableSchema, **extra: Any) -> dict[str, Any]:
    """Definition metadata carrying `schema` as the asset's `dagster/column_schema`."""
    return {COLUMN_SCHEMA: schema, **extra}

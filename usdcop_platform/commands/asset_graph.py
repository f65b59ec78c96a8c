"""The code location's asset graph as the CLI shows it: assets in pipeline order, checks as declared.

The order has one source, the Definitions themselves: definitions.DOMAIN_MODULES lists the domains
(market data, features, training, evaluation, live, monitoring), each domain its assets and each
asset its checks; core.ordering.pipeline_order makes it topological. No list of asset names here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table

from usdcop_platform.core.ordering import pipeline_order


@dataclass(frozen=True)
class AssetRow:
    key: str
    partitions: str  # "sessions" | "experiments" | ""
    upstream: tuple[str, ...]  # in pipeline order
    checks: tuple[str, ...]  # in declaration order


def _declared_keys(defs: Any) -> list[Any]:
    """Asset keys in the order the Definitions declare them (a multi-asset's keys: its specs' order)."""
    out: list[Any] = []
    for assets_def in defs.assets or ():
        specs = getattr(assets_def, "specs", None)
        keys = [s.key for s in specs] if specs is not None else list(assets_def.keys)
        out += [k for k in keys if k not in out]
    return out


def _declared_checks(defs: Any) -> dict[Any, int]:
    """Check key -> declaration rank: each asset's check_specs, then the standalone asset checks."""
    ranks: dict[Any, int] = {}
    for definition in [*(defs.assets or ()), *(defs.asset_checks or ())]:
        for spec in getattr(definition, "check_specs", ()):
            ranks.setdefault(spec.key, len(ranks))
    return ranks


def pipeline_rows(defs: Any | None = None) -> list[AssetRow]:
    """One row per asset of `defs` (default: usdcop_platform.definitions.defs), in pipeline order."""
    if defs is None:
        from usdcop_platform.definitions import defs as location_defs

        defs = location_defs
    graph = defs.get_repository_def().asset_graph
    declared = [k for k in _declared_keys(defs) if graph.has(k)]
    declared += sorted((k for k in graph.get_all_asset_keys() if k not in declared), key=lambda k: k.to_user_string())
    order = pipeline_order(declared, {k: graph.get(k).parent_keys for k in declared})
    position = {k: i for i, k in enumerate(order)}
    check_rank = _declared_checks(defs)
    rows = []
    for key in order:
        node = graph.get(key)
        pd = node.partitions_def
        kind = "" if pd is None else ("experiments" if "Dynamic" in type(pd).__name__ else "sessions")
        parents = sorted((k for k in node.parent_keys if k in position), key=position.__getitem__)
        checks = sorted(node.check_keys, key=lambda c: (check_rank.get(c, len(check_rank)), c.name))
        rows.append(AssetRow(key.to_user_string(), kind, tuple(p.to_user_string() for p in parents),
                             tuple(c.name for c in checks)))
    return rows


def asset_graph_table(defs: Any | None = None) -> Table:
    """The asset graph of the code location: key, partitions, upstream assets and checks."""
    table = Table(title="asset graph (usdcop_platform.definitions), in pipeline order")
    table.add_column("asset", no_wrap=True)  # names are never cut (piped output is 200 wide, see common)
    table.add_column("partitions", no_wrap=True)
    table.add_column("upstream")
    table.add_column("checks")
    for row in pipeline_rows(defs):
        table.add_row(row.key, row.partitions, ", ".join(row.upstream), ", ".join(row.checks))
    return table

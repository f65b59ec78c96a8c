"""Snapshot of the asset graph: an accidental change to assets, checks, jobs, schedules, sensors or
partitions fails here. After an intended change: USDCOP_UPDATE_SNAPSHOTS=1 pytest this file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.json"


def _partitions_name(pd: dg.PartitionsDefinition | None) -> str | None:
    if pd is None:
        return None
    if isinstance(pd, dg.DynamicPartitionsDefinition):
        return f"dynamic:{pd.name}"
    if isinstance(pd, dg.TimeWindowPartitionsDefinition):
        return f"time:{pd.cron_schedule}:{pd.timezone}:end_offset={pd.end_offset}:start={pd.start.date()}"
    return type(pd).__name__


def graph_snapshot(defs: dg.Definitions) -> dict:
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": _partitions_name(node.partitions_def),
            "checks": sorted(c.name for c in node.check_keys),
            "group": node.group_name,
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted((s.name, s.cron_schedule if isinstance(s.cron_schedule, str) else list(s.cron_schedule))
                            for s in repo.schedule_defs),
        "sensors": sorted(s.name for s in repo.sensor_defs),
    }


def test_definitions_validate() -> None:
    from usdcop_platform.definitions import defs

    dg.Definitions.validate_loadable(defs)


def test_graph_matches_snapshot() -> None:
    from usdcop_platform.definitions import defs

    current = json.loads(json.dumps(graph_snapshot(defs)))
    if os.environ.get("USDCOP_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing: create it with USDCOP_UPDATE_SNAPSHOTS=1"
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, "asset graph changed; if intended, re-run with USDCOP_UPDATE_SNAPSHOTS=1"

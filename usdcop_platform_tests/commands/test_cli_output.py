"""What the CLI prints: full-width tables when piped, the asset graph in pipeline order, JSON never
wrapped (issue 18)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from usdcop_platform.cli import app
from usdcop_platform.commands import common
from usdcop_platform.commands.asset_graph import asset_graph_table, pipeline_rows


def test_piped_output_is_wide_and_columns_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    # pytest captures stdout: not a terminal, like `usdcop ... | less`
    assert common._console().width == common.NON_TTY_WIDTH == 200
    monkeypatch.setenv("COLUMNS", "97")
    assert common._console().width == 97


@pytest.fixture(scope="module")
def rows():
    return pipeline_rows()


def test_asset_graph_rows_are_in_pipeline_order(rows) -> None:
    keys = [r.key for r in rows]
    position = {k: i for i, k in enumerate(keys)}
    for r in rows:  # topological: every upstream asset is listed before the asset
        assert all(position[u] < position[r.key] for u in r.upstream), r
        assert list(r.upstream) == sorted(r.upstream, key=position.__getitem__)
    # the domains in the order definitions.DOMAIN_MODULES declares them, not alphabetical
    domains = [k.split("/")[0] for k in keys]
    first = [d for i, d in enumerate(domains) if d not in domains[:i]]
    assert first == ["raw", "features", "datasets", "models", "evaluation", "live", "monitoring"]
    assert keys != sorted(keys)


def test_checks_are_listed_in_declaration_order(rows) -> None:
    from usdcop_platform.adapters.expectations import BAR_CHECKS, MACRO_CHECKS

    by_key = {r.key: r for r in rows}
    bars = by_key["raw/usdcop_m5_ohlcv"].checks
    assert bars[: len(BAR_CHECKS)] == tuple(c.name for c in BAR_CHECKS)
    assert set(bars[len(BAR_CHECKS):]) == {"bars_fresh_in_session"}  # the standalone check, after the gates
    assert by_key["raw/macro_daily"].checks == tuple(c.name for c in MACRO_CHECKS)


def test_asset_graph_table_cuts_no_name_when_piped(rows) -> None:
    console = Console(width=common.NON_TTY_WIDTH, record=True)
    console.print(asset_graph_table())
    text = console.export_text()
    for r in rows:
        assert r.key in text
        for name in (*r.checks, *r.upstream):
            assert name in text, f"{name} cut in\n{text}"


def _quarantine(settings) -> str:
    from usdcop_platform.adapters.lake import ParquetLake
    from usdcop_platform.core.cleaning import BARS_DATASET
    from usdcop_platform.core.schema import QUARANTINE_SCHEMA
    from usdcop_platform.app.quarantine import write_quarantine

    row = json.dumps({"time": "2024-03-04T13:05:00+00:00", "open": 3921.5, "high": 3919.0, "low": 3925.25,
                      "close": 3922.0, "volume": 0})
    frame = pl.DataFrame({"dataset": [BARS_DATASET], "partition": ["2024-03-04"], "rule": ["high_below_low"],
                          "field": ["high"], "value": ["3919.0"], "row": [row],
                          "detected_at": [datetime(2024, 3, 4, 13, 10, tzinfo=timezone.utc)]}, schema=QUARANTINE_SCHEMA)
    write_quarantine(ParquetLake(settings.data_dir), BARS_DATASET, ["2024-03-04"], frame)
    return row


def test_quarantine_list_prints_each_row_json_unwrapped_on_a_narrow_terminal(
    isolated_settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = _quarantine(isolated_settings)
    monkeypatch.setattr(common.console, "_width", 40)  # a 40-column terminal
    result = CliRunner().invoke(app, ["quarantine", "list"])
    assert result.exit_code == 0, result.output
    assert f"#1 {row}" in result.output.splitlines(), result.output  # the raw row, whole, on one line
    assert "high_below_low" in result.output and "by rule: high_below_low=1" in result.output
    assert max(len(line) for line in result.output.splitlines() if "│" in line) <= 40  # the table fits


def test_quarantine_list_json_is_one_unwrapped_object(isolated_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    row = _quarantine(isolated_settings)
    monkeypatch.setattr(common.console, "_width", 20)
    result = CliRunner().invoke(app, ["quarantine", "list", "--json"])
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    out = json.loads(line)
    assert out["count"] == 1 and out["rows"][0]["row"] == row and out["rows"][0]["rule"] == "high_below_low"

"""contracts.assets names every asset of the Dagster definitions, and nothing else."""

from __future__ import annotations

import dagster as dg

from usdcop_platform.contracts import assets


def test_the_paths_are_exactly_the_assets_of_the_definitions() -> None:
    from usdcop_platform.definitions import asset_def, defs

    paths = {getattr(assets, n) for n in dir(assets) if n.isupper() and isinstance(getattr(assets, n), tuple)}
    graph = {tuple(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert paths == graph
    for path in paths:
        assert dg.AssetKey(list(path)) in asset_def(path).keys
    assert assets.key_string(assets.RAW_BARS) == "raw/usdcop_m5_ohlcv"

"""Dagster entry point: the domain definitions under defs/ plus the shared resources.

Also the one Dagster module other shells may import (the CLI and the benchmarks launch runs): the
definitions, their resources and `asset_def(path)` for a key of contracts.assets."""

from __future__ import annotations

import importlib

import dagster as dg

from usdcop_platform.defs.resources import build_resources
from usdcop_platform.settings import Settings

# Each module exposes `defs: dg.Definitions` (assets, checks, jobs, schedules, sensors).
DOMAIN_MODULES = (
    "usdcop_platform.defs.market_data.definitions",
    "usdcop_platform.defs.features.definitions",
    "usdcop_platform.defs.training.definitions",
    "usdcop_platform.defs.evaluation.definitions",
    "usdcop_platform.defs.live.definitions",
    "usdcop_platform.defs.monitoring.definitions",
)


def _domain_defs() -> list[dg.Definitions]:
    out = []
    for name in DOMAIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not name.startswith(str(exc.name)):
                raise
            continue  # domain not built yet
        out.append(module.defs)
    return out


_DOMAIN_DEFS = _domain_defs()
defs = dg.Definitions.merge(*_DOMAIN_DEFS, dg.Definitions(resources=build_resources()))


def asset_def(path: tuple[str, ...]) -> dg.AssetsDefinition:
    """The assets definition of `path` (a contracts.assets key), to materialize or to read its op name.
    Unbound (the domain's own, not the merged `defs`' copy bound to the import-time resources): a run
    brings its resources, `dg.materialize([asset_def(p)], resources=build_resources(settings))`."""
    key = dg.AssetKey(list(path))
    for domain in _DOMAIN_DEFS:
        for asset in domain.assets or ():
            if isinstance(asset, dg.AssetsDefinition) and key in asset.keys:
                return asset
    raise KeyError(f"no asset {key.to_user_string()} in {', '.join(DOMAIN_MODULES)}")


def live_location(settings: Settings, *, sensor_interval_s: int | None = None,
                  frozen_now: str | None = None) -> dg.Definitions:
    """The live domain as a code location of its own (defs/live/location.py) on `settings`, with an
    optional sensor interval and frozen feed clock: `usdcop bench live`'s daemon loads it."""
    from usdcop_platform.defs.live.location import build_location

    return build_location(settings, sensor_interval_s=sensor_interval_s, frozen_now=frozen_now)

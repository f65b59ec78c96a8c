"""The live domain as a code location of its own (optional deployment shape, see DESIGN.md
"Scale beyond one machine": the live inference location on the default run launcher).

Each live run is a fresh process that imports its code location. Since torch, SB3, MLflow,
scipy and matplotlib load only where they are used, the default location imports in ~2.5 s
against ~2.1 s for this one (it was ~10 s before), so the split is now about isolating the live
path (its own process, deploys and failures) more than about launch time. To use it, load it as a second code
location in workspace.yaml and drop `usdcop_platform.defs.live.definitions` from the main
location's DOMAIN_MODULES (otherwise two sensors would request every bar).

    load_from:
      - python_module: {module_name: usdcop_platform.defs.live.location, location_name: usdcop_live}
"""

from __future__ import annotations

import dagster as dg

from usdcop_platform.defs.live.assets import live_signal, live_signal_job
from usdcop_platform.defs.live.definitions import defs as live_defs
from usdcop_platform.defs.live.resources import live_resources
from usdcop_platform.defs.live.sensors import build_live_sensor
from usdcop_platform.defs.monitoring.resources import alerts_resources
from usdcop_platform.defs.resources import PlatformResource
from usdcop_platform.settings import Settings, get_settings


def build_location(settings: Settings, *, sensor_interval_s: int | None = None,
                   frozen_now: str | None = None) -> dg.Definitions:
    """The live domain with only the resource keys it uses, from `settings` (build_resources would
    import MLflow for the training domain); the sensor alerts when it has to pause.
    `sensor_interval_s` (default mlops.yaml's) and `frozen_now` (the feed's clock) serve `usdcop
    bench live`, whose daemon times bar → signal on a past session."""
    live = live_defs if sensor_interval_s is None else dg.Definitions(
        assets=[live_signal], jobs=[live_signal_job], sensors=[build_live_sensor(sensor_interval_s)])
    return dg.Definitions.merge(live, dg.Definitions(resources={
        "platform": PlatformResource.from_settings(settings), **live_resources(settings, frozen_now),
        **alerts_resources(settings)}))


defs = build_location(get_settings())

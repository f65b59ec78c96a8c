"""Features domain definitions: `features/m5_features` and its in-asset checks."""

from __future__ import annotations

import dagster as dg

from usdcop_platform.defs.features.assets import m5_features

defs = dg.Definitions(assets=[m5_features])

"""An operator re-accepts a flagged macro value (a new level the rules have not confirmed yet, or a
regime outside the historical band): stored in the lake (`macro_accepted/all`), honoured by every
later flagging of the series (raw/macro_daily passes it to clean_macro_long), applied at once to
the published series, and written to the append-only audit log (issue 17)."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import polars as pl

from usdcop_platform.adapters.lake import ParquetLake
from usdcop_platform.contracts.macro import MacroSSOT
from usdcop_platform.core.cleaning import MACRO_DATASET, MACRO_PARTITION, clean_macro_long
from usdcop_platform.core.schema import MACRO_SCHEMA
from usdcop_platform.app.quarantine import write_macro_quarantine

ACCEPTED_DATASET = "macro_accepted"
AUDIT_ACTION = "MACRO_VALUE_ACCEPT"
ACCEPTED_SCHEMA = {"variable": pl.Utf8, "date": pl.Date, "value": pl.Float64, "reviewer": pl.Utf8,
                   "accepted_at": pl.Datetime("us", "UTC")}


class MacroAcceptError(ValueError):
    """The value cannot be accepted (unknown, not flagged, or outside the hard range)."""


def read_acceptances(lake: ParquetLake) -> pl.DataFrame | None:
    return lake.read(ACCEPTED_DATASET, MACRO_PARTITION)


def accept_macro_value(
    lake: ParquetLake, store: Any, ssot: MacroSSOT, *, variable: str, day: date, reviewer: str, notes: str = "",
) -> dict[str, Any]:
    """Accept the flagged value of `variable` dated `day`; re-flag and republish the series; audit.
    Returns what changed (values unflagged). A value outside the hard expected_range cannot be
    accepted: that range is a contract (change the SSOT)."""
    frame = lake.read(MACRO_DATASET, MACRO_PARTITION)
    row = None if frame is None else frame.filter((pl.col("variable") == variable) & (pl.col("date") == day))
    if row is None or row.is_empty():
        raise MacroAcceptError(f"no published value of {variable!r} dated {day}")
    r = row.row(0, named=True)
    if not r["flagged"]:
        raise MacroAcceptError(f"{variable} on {day} ({r['value']}) is not flagged: nothing to accept")
    if r["flag_reason"] == "out_of_range":
        lo, hi = ssot.variables[variable].expected_range
        raise MacroAcceptError(f"{variable} on {day} ({r['value']}) is outside its hard range [{lo}, {hi}]: "
                               "change config/macro_variables_ssot.yaml instead")
    new = pl.DataFrame([{"variable": variable, "date": day, "value": r["value"], "reviewer": reviewer,
                         "accepted_at": datetime.now(timezone.utc)}], schema=ACCEPTED_SCHEMA)
    old = read_acceptances(lake)
    accepted = new if old is None else pl.concat([old, new], how="vertical").unique(
        subset=["variable", "date"], keep="last", maintain_order=True)
    result = clean_macro_long(frame.select(list(MACRO_SCHEMA)), ssot, accepted=accepted)
    was = frame.filter(pl.col("flagged")).select("variable", "date")
    now = result.frame.filter(pl.col("flagged")).select("variable", "date")
    unflagged = was.join(now, on=["variable", "date"], how="anti").height
    lake.write(ACCEPTED_DATASET, MACRO_PARTITION, accepted)
    lake.write(MACRO_DATASET, MACRO_PARTITION, result.frame)
    write_macro_quarantine(lake, result.quarantined)
    details = {"variable": variable, "date": day.isoformat(), "value": r["value"], "flag_reason": r["flag_reason"],
               "values_unflagged": unflagged, "still_flagged": now.height}
    audit = store.audit.append(AUDIT_ACTION, reviewer, notes=notes, details=details)
    return {**details, "audit_id": audit["id"]}

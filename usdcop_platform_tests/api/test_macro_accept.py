"""An operator re-accepts a new macro level through the API, with an audit row (issue 17)."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from usdcop_platform.contracts.platform import get_config
from usdcop_platform.core.cleaning import MACRO_DATASET, MACRO_PARTITION, clean_macro_long
from usdcop_platform.app.macro_acceptance import AUDIT_ACTION, read_acceptances
from usdcop_platform.app.ingest import publish_macro


def _shifted_long() -> pl.DataFrame:
    """DXY 100 for 40 days, then a 6% shift (limit 3%) that the rules confirm at its 3rd value."""
    rng = np.random.default_rng(0)
    vals = np.r_[100 * np.exp(np.cumsum(rng.normal(0, 0.002, 40))), 106 * np.exp(np.cumsum(rng.normal(0, 0.002, 5)))]
    d0 = date(2024, 1, 1)
    return pl.DataFrame([(d0 + timedelta(days=i), "dxy", float(v), d0 + timedelta(days=i + 1))
                         for i, v in enumerate(vals)],
                        schema={"date": pl.Date, "variable": pl.Utf8, "value": pl.Float64, "available_date": pl.Date},
                        orient="row")


def test_an_admin_accepts_a_new_level_with_an_audit_row(client, store, lake, keys) -> None:
    ssot = get_config().macro
    published = clean_macro_long(_shifted_long(), ssot)
    lake.write(MACRO_DATASET, MACRO_PARTITION, published.frame)
    jump_day = published.frame.filter(pl.col("flagged"))["date"][0]
    assert published.frame.filter(pl.col("flagged"))["flag_reason"].to_list() == ["jump", "level_break"]

    body = {"variable": "dxy", "date": jump_day.isoformat(), "notes": "DXY re-based by the vendor"}
    assert client.post("/api/macro/accept", json=body, headers=keys.h("viewer")).status_code == 403
    r = client.post("/api/macro/accept", json=body, headers=keys.h("admin"))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["values_unflagged"] == 2 and out["still_flagged"] == 0 and out["flag_reason"] == "jump"
    assert not lake.read(MACRO_DATASET, MACRO_PARTITION)["flagged"].any()
    audit = store.audit.list(action=AUDIT_ACTION)
    assert len(audit) == 1 and audit[0]["id"] == out["audit_id"] and audit[0]["reviewer"] == "ada-admin"
    assert audit[0]["details"]["date"] == jump_day.isoformat() and audit[0]["notes"] == "DXY re-based by the vendor"

    # the acceptance is honoured by the next run of raw/macro_daily (it re-flags the whole series)
    assert read_acceptances(lake)["date"].to_list() == [jump_day]
    wide = _shifted_long().pivot(on="variable", index="date", values="value").rename(
        {"dxy": ssot.variables["dxy"].column})
    pub = publish_macro(wide, lake=lake, ssot=ssot, quality=get_config().quality.macro, as_of=date(2024, 2, 20))
    assert not lake.read(MACRO_DATASET, MACRO_PARTITION)["flagged"].any() and pub.report.flagged == 0

    # an unflagged value, or one outside the hard range, is refused (409); an unknown variable 404
    again = client.post("/api/macro/accept", json=body, headers=keys.h("admin"))
    assert again.status_code == 409 and "not flagged" in again.json()["error"]["message"]
    assert client.post("/api/macro/accept", json={**body, "variable": "nope"},
                       headers=keys.h("admin")).status_code == 404

"""/api/macro/accept (admin): re-accept a flagged macro value, audited (issue 17)."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from usdcop_platform.api.deps import get_lake, get_settings, get_store, write_role
from usdcop_platform.api.errors import ApiError
from usdcop_platform.api.routers.common import WRITE_ERRORS

router = APIRouter(prefix="/api/macro", tags=["macro"])


class AcceptRequest(BaseModel):
    variable: str = Field(description="SSOT variable id, e.g. dxy")
    date: date
    notes: str = Field(default="", max_length=2000)


class AcceptOut(BaseModel):
    variable: str
    date: date
    value: float
    flag_reason: str
    values_unflagged: int
    still_flagged: int
    audit_id: int


@router.post("/accept", response_model=AcceptOut, responses=WRITE_ERRORS,
             summary="Admin: accept a flagged macro value as a new level (audited; the series is re-flagged)")
def accept(body: AcceptRequest, principal: Any = Depends(write_role("admin")), store: Any = Depends(get_store),
           lake: Any = Depends(get_lake), settings: Any = Depends(get_settings)) -> AcceptOut:
    from usdcop_platform.contracts.platform import get_config
    from usdcop_platform.app.macro_acceptance import MacroAcceptError, accept_macro_value

    ssot = get_config(str(settings.config_dir)).macro
    if body.variable not in ssot.variables:
        raise ApiError(404, f"unknown macro variable {body.variable!r}")
    try:
        out = accept_macro_value(lake, store, ssot, variable=body.variable, day=body.date,
                                 reviewer=principal["name"], notes=body.notes)
    except MacroAcceptError as exc:
        raise ApiError(409, str(exc)) from None
    return AcceptOut.model_validate(out)

"""OpenAPI error declarations and row → response conversions shared by the routers."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from usdcop_platform.api.errors import ErrorResponse
from usdcop_platform.api.schemas import ProposalSummary
from usdcop_platform.contracts.platform import get_config
from usdcop_platform.settings import Settings


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting the standard error shape for these status codes."""
    text = {
        400: "Malformed request (a body that cannot be read, a bad Content-Length)",
        401: "Missing or invalid API key (checked before the body is read)",
        403: "The key's role is not allowed to do this",
        404: "Not found",
        409: "Conflicts with the current state (already decided, expired, concurrent promotion)",
        413: "Request body larger than USDCOP_MAX_BODY_BYTES (refused before it is parsed)",
        422: "Invalid request (the fields are named in `error.fields`)",
        429: "Write rate limit or failed-login throttle exceeded (see Retry-After)",
        503: "Database unavailable",
    }
    return {c: {"model": ErrorResponse, "description": text.get(c, "Error")} for c in codes}


READ_ERRORS = errors(401, 403, 422, 429)
WRITE_ERRORS = errors(400, 401, 403, 404, 409, 413, 422, 429)


def review_path(proposal_id: str) -> str:
    return f"/experiments/{quote(proposal_id, safe='')}/review"


def review_url(settings: Settings, proposal_id: str) -> str:
    """Absolute URL of a proposal's review page (what `usdcop demo` prints)."""
    return settings.public_api_url.rstrip("/") + review_path(proposal_id)


def summary(row: Any) -> ProposalSummary:
    data = dict(row)
    data["review_url"] = review_path(row["proposal_id"])
    return ProposalSummary.model_validate(data)


def market_tz(settings: Settings) -> ZoneInfo:
    """The instrument's time zone (Bogota) from config/: instants are shown in it."""
    return ZoneInfo(get_config(str(settings.config_dir)).instrument.timezone)

"""/api/models (registry), /api/audit (read-only log), /api/keys (admin), /health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from usdcop_platform.adapters.store import StoreError
from usdcop_platform.app.champion import sync_champion
from usdcop_platform.api.deps import app_state, get_settings, get_store, require_role, write_role
from usdcop_platform.api.errors import ApiError, public_store_message
from usdcop_platform.api.routers.common import READ_ERRORS, WRITE_ERRORS
from usdcop_platform.api.schemas import (
    ID_PATTERN,
    AuditList,
    AuditOut,
    DatabaseHealth,
    Health,
    KeyCreated,
    KeyCreateRequest,
    KeyOut,
    ModelList,
    ModelOut,
    RollbackOut,
    RollbackRequest,
    Stage,
)

models_router = APIRouter(prefix="/api/models", tags=["models"])
audit_router = APIRouter(prefix="/api/audit", tags=["audit"])
keys_router = APIRouter(prefix="/api/keys", tags=["keys (admin)"])
health_router = APIRouter(tags=["health"])

# Most audit rows one call returns.
MAX_AUDIT_LIMIT = 1000
DEFAULT_AUDIT_LIMIT = 100


@models_router.get("", response_model=ModelList, responses=READ_ERRORS, summary="Model registry with stages")
def list_models(
    stage: Stage | None = Query(None),
    experiment: str | None = Query(None, max_length=128, pattern=ID_PATTERN),
    _: Any = Depends(require_role("viewer")),
    store: Any = Depends(get_store),
) -> ModelList:
    rows = store.models.list(stage=stage.value if stage else None, experiment=experiment)
    production = store.models.production()
    return ModelList(
        count=len(rows),
        production_model_id=production["model_id"] if production is not None else None,
        registry_version=store.registry_version(),
        items=[ModelOut.model_validate(dict(r)) for r in rows],
    )


@models_router.post(
    "/rollback",
    response_model=RollbackOut,
    responses=WRITE_ERRORS,
    summary="Admin: restore the previous production model (audited; 409 if the registry moved since "
    "`expected_registry_version` or the target's artefacts fail verification)",
)
def rollback(
    body: RollbackRequest,
    background: BackgroundTasks,
    principal: Any = Depends(write_role("admin")),
    store: Any = Depends(get_store),
    settings: Any = Depends(get_settings),
) -> RollbackOut:
    # the same lifecycle function as `usdcop rollback`: atomic store rollback, audit row, alert
    from usdcop_platform.adapters.artifacts import verifier_for
    from usdcop_platform.adapters.webhook import AlertDispatcher
    from usdcop_platform.contracts.platform import get_config
    from usdcop_platform.app.lifecycle import rollback_production

    alerts_cfg = get_config(str(settings.config_dir)).mlops.monitoring.alerts
    dispatcher = AlertDispatcher.create(store, settings.alert_webhook_url, alerts_cfg)
    rec = rollback_production(
        store, dispatcher, reviewer=principal["name"], notes=body.notes, verify=verifier_for(settings),
        expected_version=body.expected_registry_version, expected_production=body.expected_production_model_id,
    )
    background.add_task(sync_champion, settings, store)
    return RollbackOut.model_validate(dict(rec))


@audit_router.get("", response_model=AuditList, responses=READ_ERRORS, summary="Approval audit log (append-only)")
def list_audit(
    limit: int = Query(DEFAULT_AUDIT_LIMIT, ge=1, le=MAX_AUDIT_LIMIT),
    model_id: str | None = Query(None, max_length=128, pattern=ID_PATTERN),
    proposal_id: str | None = Query(None, max_length=128, pattern=ID_PATTERN),
    _: Any = Depends(require_role("viewer")),
    store: Any = Depends(get_store),
) -> AuditList:
    """Newest first. There is no update or delete: the log is append-only (database triggers too)."""
    rows = store.audit.list(limit=limit, model_id=model_id, proposal_id=proposal_id)
    return AuditList(count=len(rows), items=[AuditOut.model_validate(dict(r)) for r in rows])


@keys_router.get("", response_model=list[KeyOut], responses=READ_ERRORS, summary="Admin: list API keys")
def list_keys(_: Any = Depends(require_role("admin")), store: Any = Depends(get_store)) -> list[KeyOut]:
    return [KeyOut.model_validate(dict(r)) for r in store.api_keys.list()]


@keys_router.post(
    "", response_model=KeyCreated, status_code=201, responses=WRITE_ERRORS, summary="Admin: create an API key"
)
def create_key(
    body: KeyCreateRequest, principal: Any = Depends(write_role("admin")), store: Any = Depends(get_store)
) -> KeyCreated:
    plaintext, row = store.api_keys.create(body.name, body.role.value, actor=principal["name"])
    return KeyCreated(key=KeyOut.model_validate(dict(row)), api_key=plaintext)


@keys_router.delete(
    "/{name}", response_model=KeyOut, responses=WRITE_ERRORS, summary="Admin: revoke an API key"
)
def revoke_key(
    name: str = Path(min_length=1, max_length=128, pattern=ID_PATTERN),
    principal: Any = Depends(write_role("admin")),
    store: Any = Depends(get_store),
) -> KeyOut:
    if name == principal["name"]:
        raise ApiError(409, "an admin key cannot revoke itself; use another admin key or `usdcop keys revoke`")
    return KeyOut.model_validate(dict(store.api_keys.revoke(name, actor=principal["name"])))


@health_router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Database unavailable"}},
    summary="Liveness and database status (no key needed)",
)
def health(request: Request) -> Any:
    try:
        store = app_state(request).store  # opening it may be what fails
        store.ping()
        db = DatabaseHealth(
            status="ok", dialect=store.dialect, revision=store.revision(), registry_version=store.registry_version()
        )
        production = store.models.production()
        pending = len(store.proposals.list("PENDING_APPROVAL"))
    except StoreError as exc:
        body = Health(status="degraded", database=DatabaseHealth(status="unavailable", detail=public_store_message(exc)))
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    return Health(
        status="ok",
        database=db,
        production_model_id=production["model_id"] if production is not None else None,
        pending_approvals=pending,
    )

"""The MLflow alias `champion` follows the production model (best effort, after the commit).

The SQL registry is the source of truth for stages; MLflow only mirrors it. So the alias is set
after the approval transaction has committed, in a background task, and a failure (MLflow down,
model never registered in MLflow) is logged and never undoes or fails the approval. The API (after
an approval or a rollback) and `usdcop rollback` both call `sync_champion` with their settings.

Which MLflow model version: the registered model is named by the training resource
(`MlflowTracking.registered_model_name(experiment)`), the version is the registry row's
`mlflow_model_version`; when only `mlflow_run_id` is known, the version created from that run.
"""

from __future__ import annotations

import logging
from typing import Any

from usdcop_platform.settings import Settings

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"  # adapters.tracking.CHALLENGER_ALIAS (imported lazily there: MLflow is heavy)


def _resolve_version(client: Any, name: str, model: Any) -> str | None:
    if model.get("mlflow_model_version"):
        return str(model["mlflow_model_version"])
    run_id = model.get("mlflow_run_id")
    if not run_id:
        return None
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    named = [v for v in versions if v.name == name] or list(versions)
    return str(named[0].version) if named else None


def _drop_challenger_of(client: Any, name: str, version: str) -> None:
    """The production model is the champion, not also a challenger: exact aliases."""
    try:
        challenger = client.get_model_version_by_alias(name, CHALLENGER_ALIAS)
    except Exception:  # noqa: BLE001 - no challenger alias set
        return
    if str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER_ALIAS)


def sync_champion(settings: Settings, store: Any) -> str | None:
    """Point `champion` at the current production model's MLflow version.

    Returns "<registered name>/<version>" when the alias was set, None when there is nothing to
    point at (no production model, or it has no MLflow identity). Never raises.
    """
    try:
        model = store.models.production()
        if model is None or not (model.get("mlflow_model_version") or model.get("mlflow_run_id")):
            return None
        from usdcop_platform.adapters.tracking import MlflowTracking

        resource = MlflowTracking.from_settings(settings)
        client = resource.client()
        name = resource.registered_model_name(model["experiment_name"])
        version = _resolve_version(client, name, model)
        if version is None:
            log.warning("champion alias not moved: model %s has no MLflow model version", model["model_id"])
            return None
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        _drop_challenger_of(client, name, version)
        log.info("MLflow alias %s -> %s version %s (model %s)", CHAMPION_ALIAS, name, version, model["model_id"])
        return f"{name}/{version}"
    except Exception:  # noqa: BLE001 - best effort by design (see module docstring)
        log.exception("could not move the MLflow alias %r to the production model", CHAMPION_ALIAS)
        return None

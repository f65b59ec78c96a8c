"""Launch one asset's run in-process (dg.materialize) and read back what it reported.

The application layer sees runs through `RunOutcome` only (success + the run's metadata), so a use
case that launches runs (app/ingest_range.py) imports no Dagster: the shells pass it a
`DagsterRunLauncher` built from `usdcop_platform.definitions`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from usdcop_platform.contracts.assets import AssetPath

RUN_LOG_LEVEL = "WARNING"  # Dagster's console logger during CLI runs (events still reach the instance)

# Errors whose message is complete on its own (file, row/key, reason): shown as is, one line.
_SELF_EXPLAINING = ("SourceError", "CleaningError", "ConfigError", "FeatureError")


class RunError(RuntimeError):
    """A step failed on an error (not a refusal): its one-line message, e.g. "macro.csv: non-numeric value ..."."""


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: `success` False when the asset refused (a blocking gate, dg.Failure), and the
    run's metadata: the refusal's metadata, or the run's range totals (`run_summary`), or the
    first materialization's."""

    success: bool
    metadata: dict[str, Any] = field(default_factory=dict)


class DagsterRunLauncher:
    """Materializes one asset per call with the given resources on `instance`."""

    def __init__(self, resolve: Callable[[AssetPath], dg.AssetsDefinition], resources: dict[str, Any], instance: Any,
                 log_level: str = RUN_LOG_LEVEL) -> None:
        self._resolve, self._resources, self._instance, self._log_level = resolve, resources, instance, log_level

    def __call__(self, path: AssetPath, *, tags: dict[str, str], op_config: dict[str, Any] | None = None,
                 partition_range: tuple[str, str] | None = None) -> RunOutcome:
        asset = self._resolve(path)
        run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": self._log_level}}}}
        if op_config is not None:
            run_config["ops"] = {asset.op.name: {"config": op_config}}
        if partition_range is not None:
            tags = {**tags, "dagster/asset_partition_range_start": partition_range[0],
                    "dagster/asset_partition_range_end": partition_range[1]}
        result = dg.materialize([asset], resources=self._resources, instance=self._instance, tags=tags,
                                run_config=run_config, raise_on_error=False)
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data.user_failure_data is None:
                    err = event.step_failure_data.error
                    raise RunError(one_line(err.cause or err))
        return RunOutcome(bool(result.success), _run_metadata(result, asset.op.name))


def _failure_metadata(result: Any) -> dict[str, Any]:
    """Metadata of a refusal (the asset's dg.Failure): the counts of what was published anyway."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data is not None:
            return {k: v.value for k, v in event.step_failure_data.user_failure_data.metadata.items()}
    return {}


def _run_metadata(result: Any, node: str) -> dict[str, Any]:
    """The run's range totals: the Failure's metadata, or the `run_summary` every partition's
    materialization shares (a partition's own numbers are not the run's)."""
    if not result.success:
        return _failure_metadata(result)
    mats = result.asset_materializations_for_node(node)
    if not mats:
        return {}
    meta = {k: v.value for k, v in mats[0].metadata.items()}
    if "run_summary" in meta:  # a range run of the bars: its totals, shared by every partition
        return json.loads(meta["run_summary"])
    return meta


def one_line(cause: Any) -> str:
    """A failed step's error as one clean line: "macro.csv: non-numeric value ...", not
    "ingest failed: usdcop_platform.adapters.sources.base.SourceError: ..." (nor a traceback)."""
    message = cause.message.strip()
    if cause.cls_name in _SELF_EXPLAINING:
        head = message.split(": ", 1)
        if len(head) == 2 and head[0].endswith(cause.cls_name):
            return head[1].strip()
        return message
    return f"ingest failed: {message.splitlines()[0] if message else cause.cls_name}"

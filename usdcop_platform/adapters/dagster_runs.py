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


@dataclass(frozen=True)
class AssetsRun:
    """A finished run of several assets of one partition: each asset's metadata by key string
    ("models/ppo_policy") and the names of the checks that did not pass; `stopped` is Dagster's
    message when it stopped the run itself (e.g. a failed blocking check), else None."""

    run_id: str
    success: bool
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)
    stopped: str | None = None


@dataclass(frozen=True)
class RangeRun:
    """A finished range run of one asset: each partition's own metadata and the checks that did not
    pass, in the asset's own check order; `error` is a failed step's message (not a check's refusal)."""

    run_id: str
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None


class DagsterAssetsLauncher:
    """Materializes several assets of one partition (train, evaluate), or one asset over a partition
    range (features), with the given resources on `instance`; the domain error of a failing step is
    re-raised as itself."""

    def __init__(self, resolve: Callable[[AssetPath], dg.AssetsDefinition], resources: dict[str, Any],
                 instance: Any) -> None:
        self._resolve, self._resources, self._instance = resolve, resources, instance

    def __call__(self, paths: list[AssetPath], *, partition_key: str, op_config: dict[AssetPath, dict[str, Any]],
                 tags: dict[str, str]) -> AssetsRun:
        ops = {self._resolve(p).op.name: {"config": c} for p, c in op_config.items()}
        try:
            result = dg.materialize([self._resolve(p) for p in paths], partition_key=partition_key,
                                    instance=self._instance, resources=self._resources, run_config={"ops": ops},
                                    tags=tags)
        except dg.DagsterExecutionStepExecutionError as exc:
            if exc.user_exception is not None:
                raise exc.user_exception from None
            raise
        except dg.DagsterError as exc:  # a failed blocking check (e.g. ONNX parity)
            return AssetsRun("", False, stopped=str(exc))
        meta = {"/".join(e.materialization.asset_key.path): {k: v.value for k, v in e.materialization.metadata.items()}
                for e in result.get_asset_materialization_events()}
        failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        return AssetsRun(result.run_id, bool(result.success), meta, failed)

    def range_run(self, path: AssetPath, keys: list[str], *, tags: dict[str, str]) -> RangeRun:
        """One run of `path` over keys[0]..keys[-1]. A blocking check refusing some partitions is in
        `failed_checks` (the rest is published); any other step failure is the run's `error`."""
        asset = self._resolve(path)
        result = dg.materialize(
            [asset], instance=self._instance, resources=self._resources, raise_on_error=False,
            tags={**tags, "dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        )
        for event in result.get_step_failure_events():
            err = event.step_failure_data.error
            if err is not None and err.cls_name == "DagsterAssetCheckFailedError":
                continue
            return RangeRun(result.run_id, error=(err.cause or err).message.strip() if err else "see the log")
        per = {m.partition: {k: v.value for k, v in m.metadata.items()}
               for m in result.asset_materializations_for_node(asset.op.name)}
        rank = {spec.name: i for i, spec in enumerate(asset.check_specs)}  # the gates' own order
        failed = sorted({e.check_name for e in result.get_asset_check_evaluations() if not e.passed},
                        key=lambda name: (rank.get(name, len(rank)), name))
        return RangeRun(result.run_id, per, failed)


@dataclass(frozen=True)
class JobRun:
    run_id: str
    success: bool


class DagsterJobLauncher:
    """Executes a job of the definitions in-process on `instance` with the given resources (the
    entry point's `defs` were bound to the settings of whichever process imported it first)."""

    def __init__(self, resolve_job: Callable[[str], Any], resources: dict[str, Any], instance: Any) -> None:
        self._resolve_job, self._resources, self._instance = resolve_job, resources, instance

    def __call__(self, job_name: str, *, run_config: dict[str, Any], partition_key: str,
                 tags: dict[str, str]) -> JobRun:
        result = self._resolve_job(job_name).execute_in_process(
            run_config=run_config, partition_key=partition_key, instance=self._instance, tags=tags,
            raise_on_error=False, resources=self._resources)
        return JobRun(result.run_id, bool(result.success))

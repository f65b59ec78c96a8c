"""What the Dagster instance's event log says is current: the freshness queries behind `usdcop run`'s
skip-if-current (bars present per session, features newer than their bars and the macro, the
experiment's model newer than its features and trained from the same config and budget)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from usdcop_platform.contracts.assets import DATASET, FEATURES, MODEL, RAW_BARS, RAW_MACRO, AssetPath


def _key(path: AssetPath) -> dg.AssetKey:
    return dg.AssetKey(list(path))


def _metadata(record: Any) -> dict[str, Any]:
    mat = record.asset_materialization
    return {k: v.value for k, v in (mat.metadata if mat else {}).items()}


class DagsterHistory:
    """Freshness queries over `instance`; `model_op` is the model asset's op name (its run config
    holds the --timesteps override the model was trained with)."""

    def __init__(self, instance: Any, model_op: str) -> None:
        self._instance, self._model_op = instance, model_op

    def _latest_ids(self, path: AssetPath, partitions: set[str]) -> dict[str, int]:
        return dict(self._instance.event_log_storage.get_latest_storage_id_by_partition(
            _key(path), dg.DagsterEventType.ASSET_MATERIALIZATION, partitions))

    def _latest_record(self, path: AssetPath, partition: str) -> Any:
        records = self._instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=_key(path), asset_partitions=[partition]), limit=1).records
        return records[0] if records else None

    def requested_timesteps(self, run_id: str) -> int | None:
        """The --timesteps override a training run was given (None: the experiment's budget)."""
        run = self._instance.get_run_by_id(run_id)
        ops = (run.run_config or {}).get("ops", {}) if run is not None else {}
        return (ops.get(self._model_op, {}).get("config") or {}).get("total_timesteps")

    def missing_bar_sessions(self, keys: list[str]) -> list[str]:
        done = self._latest_ids(RAW_BARS, set(keys))
        return [k for k in keys if k not in done]

    def stale_feature_sessions(self, keys: list[str]) -> list[str]:
        """Sessions whose features are missing or older than their bars or than the macro series."""
        bars = self._latest_ids(RAW_BARS, set(keys))
        feats = self._latest_ids(FEATURES, set(keys))
        records = self._instance.fetch_materializations(_key(RAW_MACRO), limit=1).records
        macro_id = records[0].storage_id if records else -1
        return [k for k in keys if k in bars and feats.get(k, -1) < max(bars[k], macro_id)]

    def current_model(self, experiment: str, config_hash: str, keys: list[str],
                      timesteps: int | None) -> dict[str, Any] | None:
        """The experiment's model metadata when it is newer than every feature partition of `keys`,
        its dataset was built from `config_hash` and it was trained with `timesteps`; else None."""
        model = self._latest_record(MODEL, experiment)
        dataset = self._latest_record(DATASET, experiment)
        if model is None or dataset is None or not _metadata(model).get("model_id"):
            return None
        feats = self._latest_ids(FEATURES, set(keys))
        if (feats and max(feats.values()) > dataset.storage_id) or model.storage_id < dataset.storage_id:
            return None
        if _metadata(dataset).get("config_hash") != config_hash:
            return None
        if self.requested_timesteps(model.run_id) != timesteps:
            return None
        return _metadata(model)

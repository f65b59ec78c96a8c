"""MLflow tracking (`MlflowTracking`; Dagster's "mlflow" resource is it, configured: defs/resources.py).

Everything goes through an `MlflowClient` bound to this adapter's tracking URI, with explicit
run ids: no `mlflow.start_run()`, no process-global active run, no `mlflow.set_tracking_uri()`
(one scoped exception, `_global_tracking_uri`, for a lookup MLflow's SQL registry makes globally).
Two trainings in one process therefore never share a run, a tracking URI or a metric buffer.

Locally the backend is `sqlite:///<state_dir>/mlflow.db` (MLflow 3 refuses the file store) with
artifacts under `<state_dir>/mlartifacts/<experiment>`; in production MLFLOW_TRACKING_URI names
a tracking server. Registry stages are deprecated: models get aliases (`challenger`, `champion`).

MLflow 3 objects a trained policy becomes (what `mlflow.onnx.log_model` would make, through the
client so that no global tracking URI is needed):
- a LoggedModel (onnx flavour, the packaged ONNX file's exact bytes) with the training run as its
  source and output, listed in the experiment's "Models" tab;
- a registered model version linked to that LoggedModel (its model_id), aliased `challenger`
  when servable (`champion` is set on approval by app/champion.py);
- the out-of-sample backtest's metrics on the same run, linked to the LoggedModel and the test data.
Runs and the Dagster runs that made them link both ways (`dagster_run_url` tags, `mlflow_run` metadata).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel
from typing_extensions import Self

from usdcop_platform.contracts.base import content_hash
from usdcop_platform.settings import DEFAULT_DAGSTER_UI_URL, DEFAULT_MLFLOW_UI_URL, Settings, get_settings

if TYPE_CHECKING:  # MLflow loads only in the processes that track (every run process imports this module)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Run

CHALLENGER_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"
LOGGED_MODEL_TYPE = "onnx_policy"
ONNX_FILE = "model.onnx"  # mlflow.onnx's file name inside the model directory
# MLflow limits (mlflow.utils.validation): values per param, entries per log_batch call.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
DATASET_SOURCE_TYPE = "usdcop_lake"
DIGEST_LENGTH = 16  # MLflow stores dataset digests in 36 characters


# MLflow 3's UI opens an experiment without this tag in the GenAI view; ours train models.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"
MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # LoggedModel tag: the registered versions made from it  # the run's description in the MLflow UI (markdown)


@dataclass(frozen=True)
class DatasetRef:
    """What MLflow shows as a run input and keys model metrics by: name + digest (+ where it lives)."""

    name: str
    digest: str
    source: Mapping[str, Any]
    profile: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoggedOnnxModel:
    """A policy as MLflow knows it: the LoggedModel and the registered version pointing at it."""

    model_id: str  # MLflow's LoggedModel id ("m-..."), not the platform's model id
    registered_name: str
    version: str
    url: str  # the LoggedModel's page in the MLflow UI


@dataclass(frozen=True)
class RunAnnotation:
    """What a Dagster asset wrote to a model's MLflow run."""

    run_id: str
    url: str
    logged_model_id: str | None
    metrics: int


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"} with MLflow-sized string values."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:MAX_PARAM_VALUE_LENGTH]
    return out


_GLOBAL_URI_LOCK = threading.Lock()


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's SQL model registry resolves a `models:/<id>` source with a bare `MlflowClient()`,
    i.e. through the process-global tracking URI (a TODO in mlflow/store/model_registry/
    sqlalchemy_store.py). Point it at this resource's store for that one call, then restore it."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _GLOBAL_URI_LOCK, _use_tracking_uri(uri):
        yield


def logged_model_name(model_id: str) -> str:
    """The platform's model id as a LoggedModel name (MLflow refuses / : . % and quotes in it)."""
    return re.sub(r"[/:.%\"']", "_", model_id)


def _digest(payload: Mapping[str, Any]) -> str:
    return content_hash(dict(payload))[:DIGEST_LENGTH]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _onnx_signature(model: Any) -> Any:
    """The graph's inputs and outputs as an MLflow tensor signature (-1 for a dynamic dimension)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def specs(values: Any) -> Schema:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            out.append(TensorSpec(np.dtype(tensor_dtype_to_np_dtype(t.elem_type)), shape, v.name))
        return Schema(out)

    return ModelSignature(inputs=specs(model.graph.input), outputs=specs(model.graph.output))


# ---- what a backtest report puts on the model's run ---------------------------------------------
def backtest_prefix(report: Mapping[str, Any]) -> str:
    """`test` for the test split (the backtest that votes); `period_<start>_<end>` for an explicit period."""
    if report.get("period_source") == "test_split":
        return "test"
    return f"period_{report.get('test_start')}_{report.get('test_end')}"


def split_dataset(experiment: str, dataset_hash: str | None, split: str, profile: Mapping[str, Any]) -> DatasetRef:
    """One split of an experiment dataset (datasets/<experiment> in the lake), as MLflow names it."""
    source = {"dataset": f"datasets/{experiment}", "split": split, "dataset_hash": dataset_hash}
    return DatasetRef(name=f"{experiment}/{split}", digest=_digest(source), source=source, profile=profile)


def training_datasets(experiment: str, lineage: Mapping[str, Any]) -> list[tuple[DatasetRef, str]]:
    """The train and val splits a training run reads, with their MLflow input context."""
    splits = lineage.get("splits") or {}
    return [
        (split_dataset(experiment, lineage.get("dataset_hash"), split, splits.get(split) or {}), context)
        for split, context in (("train", "training"), ("val", "validation"))
    ]


def backtest_dataset(report: Mapping[str, Any]) -> DatasetRef:
    """The bars the backtest ran on: the dataset's test split, or an explicit period of the feature lake."""
    experiment = str(report.get("experiment"))
    period = {"test_start": report.get("test_start"), "test_end": report.get("test_end"), "n_bars": report.get("n_bars")}
    if report.get("period_source") == "test_split":
        return split_dataset(experiment, (report.get("lineage") or {}).get("dataset_hash"), "test", period)
    source = {"dataset": "features/m5_features", "sessions": f"{period['test_start']}..{period['test_end']}",
              "coverage": report.get("coverage")}
    return DatasetRef(name=f"{experiment}/{backtest_prefix(report)}", digest=_digest({**source, **period}),
                      source=source, profile=period)


def backtest_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The report's scalar results under `<prefix>/`: every finite candidate metric (sharpe,
    total_return, max_drawdown, turnover, trades, psr, dsr, ...), the live rule's under
    `live_rule/`, the walk-forward aggregate under `walk_forward/`, PBO and the SPA p-value."""
    prefix = backtest_prefix(report)
    out: dict[str, float] = {}
    if _finite(report.get("n_bars")):
        out[f"{prefix}/n_bars"] = float(report["n_bars"])
    groups = {
        "": report.get("metrics") or {},
        "live_rule/": report.get("live_rule") or {},
        "walk_forward/": (report.get("walk_forward") or {}).get("aggregate") or {},
    }
    for sub, values in groups.items():
        out.update({f"{prefix}/{sub}{k}": float(v) for k, v in values.items() if _finite(v)})
    over = report.get("overfitting") or {}
    for key, value in (("pbo", (over.get("pbo") or {}).get("pbo")), ("spa_pvalue", (over.get("spa") or {}).get("pvalue"))):
        if _finite(value):
            out[f"{prefix}/{key}"] = float(value)
    return out


@dataclass
class TrackedRun:
    """One MLflow run, addressed by id. Metrics are buffered and written in batches."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    tracking_uri: str
    ui_url: str = DEFAULT_MLFLOW_UI_URL
    _metrics: list[Metric] = field(default_factory=list, repr=False)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_metrics(
        self,
        metrics: Mapping[str, float],
        step: int = 0,
        *,
        model_id: str | None = None,
        dataset: DatasetRef | None = None,
    ) -> None:
        """Buffer metrics; with `model_id` (and `dataset`) MLflow also lists them on that LoggedModel."""
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        where = {"model_id": model_id, "run_id": self.run_id} if model_id else {}
        if dataset is not None:
            where.update(dataset_name=dataset.name, dataset_digest=dataset.digest)
        self._metrics.extend(Metric(k, float(v), now, int(step), **where) for k, v in metrics.items())
        if len(self._metrics) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        while self._metrics:
            chunk, self._metrics = self._metrics[:MAX_METRICS_PER_BATCH], self._metrics[MAX_METRICS_PER_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    def log_dataset(self, dataset: DatasetRef, context: str) -> None:
        """Record `dataset` as an input of the run (`context`: training, validation, test, ...)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        entity = Dataset(
            name=dataset.name,
            digest=dataset.digest,
            source_type=DATASET_SOURCE_TYPE,
            source=json.dumps(dict(dataset.source), sort_keys=True, default=str),
            profile=json.dumps(dict(dataset.profile), sort_keys=True, default=str),
        )
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def rename(self, name: str) -> None:
        self.client.update_run(self.run_id, name=name)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_onnx_model(
        self,
        onnx_path: Path | str,
        registered_name: str,
        *,
        alias: str | None,
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        step: int = 0,
    ) -> LoggedOnnxModel:
        """The ONNX file as a LoggedModel of this run (onnx flavour), registered as a new version of
        `registered_name` linked to it, with `alias` set on that version when given.

        What `mlflow.onnx.log_model(..., registered_model_name=...)` does, minus the global tracking
        URI and the active run. The file is logged byte for byte (the parity-checked bytes that are
        served, not onnx's re-serialisation); `metrics` at `step` go on both the run and the model."""
        import mlflow.onnx
        import onnx
        import onnxruntime
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model
        from mlflow.utils.file_utils import get_total_file_size

        onnx_path = Path(onnx_path)
        proto = onnx.load(str(onnx_path))
        logged = self.client.create_logged_model(
            self.experiment_id,
            name=logged_model_name(name or onnx_path.stem),
            source_run_id=self.run_id,
            tags={k: str(v) for k, v in (tags or {}).items()},
            model_type=LOGGED_MODEL_TYPE,
        )
        try:
            self.client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=int(step))])
            # Explicit requirements: MLflow's inference spawns a subprocess and takes ~10 s.
            requirements = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "model"
                mlflow_model = Model(
                    artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=self.run_id,
                    model_id=logged.model_id,
                )
                mlflow.onnx.save_model(
                    proto, str(target), mlflow_model=mlflow_model, signature=_onnx_signature(proto),
                    save_as_external_data=False, pip_requirements=requirements,
                )
                shutil.copyfile(onnx_path, target / ONNX_FILE)
                mlflow_model.model_size_bytes = get_total_file_size(str(target))
                mlflow_model.save(str(target / "MLmodel"))
                self.client.log_model_artifacts(logged.model_id, str(target))
            if metrics:
                self.log_metrics(metrics, step=step, model_id=logged.model_id)
                self.flush()
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)

        try:
            self.client.get_registered_model(registered_name)
        except Exception:  # MlflowException(RESOURCE_DOES_NOT_EXIST)
            self.client.create_registered_model(registered_name)
        # Source `models:/<id>`, as mlflow.register_model writes it: the UI links the version to the
        # LoggedModel through it, and the LoggedModel to its versions through `mlflow.modelVersions`.
        with _global_tracking_uri(self.tracking_uri):
            version = self.client.create_model_version(
                registered_name, f"models:/{logged.model_id}", run_id=self.run_id, model_id=logged.model_id
            )
        registered = [{"name": registered_name, "version": str(version.version)}]
        self.client.set_logged_model_tags(logged.model_id, {MODEL_VERSIONS_TAG: json.dumps(registered)})
        if alias:
            self.client.set_registered_model_alias(registered_name, alias, version.version)
        return LoggedOnnxModel(
            model_id=logged.model_id,
            registered_name=registered_name,
            version=str(version.version),
            url=logged_model_url(self.ui_url, self.experiment_id, logged.model_id),
        )

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)

    @property
    def status(self) -> str:
        return self.client.get_run(self.run_id).info.status

    @property
    def url(self) -> str:
        """The run's page in the MLflow UI (`ui_url`; for a local sqlite store, `mlflow ui` serves it)."""
        return run_url(self.ui_url, self.run_id, self.experiment_id)


# MLflow 3.18's UI picks its navigation from a browser-wide switch that starts on GenAI (the
# experiment's mlflow.experimentKind tag is then ignored); this query opens our links in "Model training".
UI_VIEW = "?workflowType=machine_learning"


def run_url(ui_url: str, run_id: str, experiment_id: str | None = None) -> str:
    """The MLflow UI page of a run (MLflow redirects `#/runs/<id>` to its experiment)."""
    base, rid = ui_url.rstrip("/"), quote(run_id, safe="")
    if experiment_id is None:
        return f"{base}/#/runs/{rid}{UI_VIEW}"
    return f"{base}/#/experiments/{quote(str(experiment_id), safe='')}/runs/{rid}{UI_VIEW}"


def logged_model_url(ui_url: str, experiment_id: str, model_id: str) -> str:
    """The MLflow UI page of a LoggedModel."""
    exp, mid = quote(str(experiment_id), safe=""), quote(model_id, safe="")
    return f"{ui_url.rstrip('/')}/#/experiments/{exp}/models/{mid}{UI_VIEW}"


class MlflowTracking(BaseModel):
    """Where runs, artefacts and registered models go, and the UIs to link. No Dagster here: the
    use cases take it as it is; the Dagster resource (defs/resources.MlflowResource) adds only
    Dagster's configuration to it."""

    tracking_uri: str
    artifact_root: str
    experiment_prefix: str = "usdcop"
    ui_url: str = DEFAULT_MLFLOW_UI_URL  # MLflow UI a browser opens (run links in Dagster metadata)
    dagster_ui_url: str = DEFAULT_DAGSTER_UI_URL  # Dagster UI a browser opens (run links in MLflow tags)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Self:
        s = settings or get_settings()
        return cls(
            tracking_uri=s.resolved_mlflow_uri,
            artifact_root=str(s.mlflow_artifact_root),
            ui_url=s.resolved_mlflow_ui_url,
            dagster_ui_url=s.resolved_dagster_ui_url,
        )

    def client(self) -> MlflowClient:
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_name(self, experiment: str) -> str:
        return f"{self.experiment_prefix}/{experiment}"

    def registered_model_name(self, experiment: str) -> str:
        return f"{self.experiment_prefix}-{experiment}"

    # ---- links between the UIs ----------------------------------------------------------------
    def run_url(self, run_id: str, experiment_id: str | None = None) -> str:
        return run_url(self.ui_url, run_id, experiment_id)

    def dagster_run_url(self, dagster_run_id: str) -> str:
        return f"{self.dagster_ui_url.rstrip('/')}/runs/{quote(dagster_run_id, safe='')}"

    def dagster_tags(self, dagster_run_id: str, prefix: str = "") -> dict[str, str]:
        """Run tags naming the Dagster run that wrote to an MLflow run, and its page."""
        return {f"{prefix}dagster_run_id": dagster_run_id, f"{prefix}dagster_run_url": self.dagster_run_url(dagster_run_id)}

    def experiment_id(self, client: MlflowClient, experiment: str) -> str:
        name = self.experiment_name(experiment)
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # experiments made before the tag
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        location = (Path(self.artifact_root) / experiment).resolve()
        location.mkdir(parents=True, exist_ok=True)
        return client.create_experiment(
            name, artifact_location=location.as_uri(), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )

    def start_run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, Any] | None = None,
        *,
        dagster_run_id: str | None = None,
    ) -> TrackedRun:
        """A new run; with `dagster_run_id` it is tagged with that run's id and page and says so in its note."""
        client = self.client()
        exp_id = self.experiment_id(client, experiment)
        all_tags = {k: str(v) for k, v in (tags or {}).items()}
        if dagster_run_id:
            all_tags.update(self.dagster_tags(dagster_run_id))
            all_tags.setdefault(NOTE_TAG, f"Made by Dagster run [{dagster_run_id[:8]}]({self.dagster_run_url(dagster_run_id)}).")
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
        return TrackedRun(
            client=client, run_id=run.info.run_id, experiment_id=exp_id, tracking_uri=self.tracking_uri,
            ui_url=self.ui_url,
        )

    @contextlib.contextmanager
    def run(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, Any] | None = None,
        *,
        dagster_run_id: str | None = None,
    ) -> Iterator[TrackedRun]:
        """A run that is always ended: FINISHED on success, FAILED when the body raises."""
        from mlflow.entities import RunStatus

        tracked = self.start_run(experiment, run_name, tags, dagster_run_id=dagster_run_id)
        try:
            yield tracked
        except BaseException:
            tracked.end(RunStatus.to_string(RunStatus.FAILED))
            raise
        tracked.end(RunStatus.to_string(RunStatus.FINISHED))

    # ---- writing to a model's (finished) training run --------------------------------------------
    def _existing_run(self, client: MlflowClient, run_id: str) -> Run | None:
        """The run, or None when this tracking store has no such run (a model registered elsewhere)."""
        from mlflow.exceptions import MlflowException

        try:
            return client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _reopen(self, run_id: str) -> tuple[TrackedRun, str | None] | None:
        client = self.client()
        found = self._existing_run(client, run_id)
        if found is None:
            return None
        outputs = found.outputs.model_outputs if found.outputs is not None else []
        logged = max(outputs, key=lambda o: o.step).model_id if outputs else None
        tracked = TrackedRun(
            client=client, run_id=run_id, experiment_id=found.info.experiment_id, tracking_uri=self.tracking_uri,
            ui_url=self.ui_url,
        )
        return tracked, logged

    def log_backtest(self, run_id: str, report: Mapping[str, Any], *, dagster_run_id: str) -> RunAnnotation | None:
        """Put a backtest report on the model's training run: its metrics (`backtest_metrics`, linked to
        the run's LoggedModel and to the backtested data as a `test` input), and tags naming the backtest
        and the Dagster run that made it. None when this tracking store has no run `run_id`."""
        reopened = self._reopen(run_id)
        if reopened is None:
            return None
        tracked, logged = reopened
        prefix = backtest_prefix(report)
        dataset = backtest_dataset(report)
        tracked.log_dataset(dataset, context="test")
        metrics = backtest_metrics(report)
        tracked.log_metrics(metrics, model_id=logged, dataset=dataset)
        tracked.flush()
        tracked.set_tags({
            f"{prefix}/backtest_hash": report.get("backtest_hash") or "",
            f"{prefix}/role": report.get("role") or "",
            f"{prefix}/period": f"{report.get('test_start')}..{report.get('test_end')}",
            **self.dagster_tags(dagster_run_id, prefix=f"{prefix}/"),
        })
        return RunAnnotation(run_id=run_id, url=tracked.url, logged_model_id=logged, metrics=len(metrics))

    def tag_model_run(self, run_id: str, tags: Mapping[str, Any]) -> RunAnnotation | None:
        """Set `tags` on a model's training run; None when this tracking store has no run `run_id`."""
        reopened = self._reopen(run_id)
        if reopened is None:
            return None
        tracked, logged = reopened
        tracked.set_tags(tags)
        return RunAnnotation(run_id=run_id, url=tracked.url, logged_model_id=logged, metrics=0)

"""MLflow tracking behind a small Dagster resource.

Everything goes through an `MlflowClient` bound to this resource's tracking URI, with explicit
run ids: no `mlflow.start_run()`, no process-global active run, no `mlflow.set_tracking_uri()`.
Two trainings in one process therefore never share a run, a tracking URI or a metric buffer.

Locally the backend is `sqlite:///<state_dir>/mlflow.db` (MLflow 3 refuses the file store) with
artifacts under `<state_dir>/mlartifacts/<experiment>`; in production MLFLOW_TRACKING_URI names
a tracking server. Registry stages are deprecated: models get aliases (`challenger`, `champion`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from usdcop_platform.settings import Settings, get_settings

if TYPE_CHECKING:  # MLflow loads only in the processes that track (every run process imports this module)
    from mlflow import MlflowClient
    from mlflow.entities import Metric

CHALLENGER_ALIAS = "challenger"
MODEL_ARTIFACT_PATH = "onnx_model"
# MLflow limits (mlflow.utils.validation): values per param, entries per log_batch call.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000


# MLflow 3's UI opens an experiment without this tag in the GenAI view; ours train models.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

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


@dataclass
class TrackedRun:
    """One MLflow run, addressed by id. Metrics are buffered and written in batches."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    tracking_uri: str
    _metrics: list[Metric] = field(default_factory=list, repr=False)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        self._metrics.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
        if len(self._metrics) >= MAX_METRICS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        while self._metrics:
            chunk, self._metrics = self._metrics[:MAX_METRICS_PER_BATCH], self._metrics[MAX_METRICS_PER_BATCH:]
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    def rename(self, name: str) -> None:
        self.client.update_run(self.run_id, name=name)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_onnx_model(self, onnx_path: Path | str, registered_name: str, *, alias: str | None) -> str:
        """Log the ONNX file as an MLflow model (onnx flavor), register a version, set `alias`.

        Returns the registered model version."""
        import mlflow.onnx
        import onnx
        import onnxruntime

        # Explicit requirements: MLflow's inference spawns a subprocess and takes ~10 s.
        requirements = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / MODEL_ARTIFACT_PATH
            mlflow.onnx.save_model(
                onnx.load(str(onnx_path)), str(target), save_as_external_data=False, pip_requirements=requirements
            )
            self.client.log_artifacts(self.run_id, str(target), MODEL_ARTIFACT_PATH)
        source = f"{self.client.get_run(self.run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"
        try:
            self.client.get_registered_model(registered_name)
        except Exception:  # MlflowException(RESOURCE_DOES_NOT_EXIST)
            self.client.create_registered_model(registered_name)
        version = self.client.create_model_version(registered_name, source, run_id=self.run_id)
        if alias:
            self.client.set_registered_model_alias(registered_name, alias, version.version)
        return str(version.version)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=status)

    @property
    def status(self) -> str:
        return self.client.get_run(self.run_id).info.status

    @property
    def url(self) -> str | None:
        """Link to the run in the MLflow UI when tracking to a server; None for a local sqlite store."""
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return None


class MlflowResource(dg.ConfigurableResource):
    """Resource key "mlflow": where runs, artefacts and registered models go."""

    tracking_uri: str
    artifact_root: str
    experiment_prefix: str = "usdcop"

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "MlflowResource":
        s = settings or get_settings()
        return cls(tracking_uri=s.resolved_mlflow_uri, artifact_root=str(s.mlflow_artifact_root))

    def client(self) -> MlflowClient:
        if self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_name(self, experiment: str) -> str:
        return f"{self.experiment_prefix}/{experiment}"

    def registered_model_name(self, experiment: str) -> str:
        return f"{self.experiment_prefix}-{experiment}"

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

    def start_run(self, experiment: str, run_name: str, tags: Mapping[str, Any] | None = None) -> TrackedRun:
        client = self.client()
        exp_id = self.experiment_id(client, experiment)
        run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items()})
        return TrackedRun(client=client, run_id=run.info.run_id, experiment_id=exp_id, tracking_uri=self.tracking_uri)

    @contextlib.contextmanager
    def run(self, experiment: str, run_name: str, tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
        """A run that is always ended: FINISHED on success, FAILED when the body raises."""
        from mlflow.entities import RunStatus

        tracked = self.start_run(experiment, run_name, tags)
        try:
            yield tracked
        except BaseException:
            tracked.end(RunStatus.to_string(RunStatus.FAILED))
            raise
        tracked.end(RunStatus.to_string(RunStatus.FINISHED))

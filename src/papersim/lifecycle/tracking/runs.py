"""MLflow runs: one per stage (nested under the flow's parent run when there is one), the flow's
parent run, and the metric history of earlier runs."""

import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError

EXPERIMENT = "papersim"  # one experiment for the whole pipeline; PAPERSIM_EXPERIMENT overrides


PARENT_RUN_ENV = "PAPERSIM_PARENT_RUN_ID"


RUN_TAGS_ENV = "PAPERSIM_RUN_TAGS"  # JSON object of extra tags for stage runs (the flow's run id, a role)


MAX_TAG_CHARS = 5000  # MLflow's tag value limit is 8000; error reports are cut to this


HOST_TAG, PID_TAG, PID_STARTED_TAG = "papersim.host", "papersim.pid", "papersim.pid_started"


def process_tags() -> dict[str, str]:
    """Which process owns a run: a run left RUNNING by a process that is gone was killed."""
    import socket

    import psutil

    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PID_STARTED_TAG: f"{psutil.Process().create_time():.3f}"}


def _owner_alive(tags: Mapping[str, str]) -> bool:
    import psutil

    try:
        process = psutil.Process(int(tags[PID_TAG]))
        return abs(process.create_time() - float(tags[PID_STARTED_TAG])) < 1.0
    except (psutil.NoSuchProcess, KeyError, ValueError):
        return False


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path.cwd() / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def _artifact_location() -> str | None:
    # With the default SQLite store keep artifacts next to the database, not in the cwd's ./mlruns.
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path.cwd() / "mlruns" / "artifacts").as_uri()


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': [1, 2]}} -> {'a.b.0': 1, 'a.b.1': 2}: MLflow params and metrics are flat."""
    items: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            items.update(flatten(value, f"{prefix}{key}."))
    elif isinstance(obj, (list, tuple)) and obj and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        for i, value in enumerate(obj):
            items.update(flatten(value, f"{prefix}{i}."))
    else:
        items[prefix[:-1]] = obj
    return items


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Every finite number of a (nested) report under a flat MLflow-safe key ('@' -> '_at_')."""
    return {
        k.replace(" ", "_").replace("@", "_at_"): float(v)
        for k, v in flatten(metrics).items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


class StageRun:
    """The handle a stage logs through; thin, so stages never touch mlflow directly."""

    def __init__(self, mlflow_module, run) -> None:
        self._mlflow = mlflow_module
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log every number in a (nested) report; strings and booleans are skipped."""
        numeric = numeric_metrics(metrics)
        if numeric:
            self._mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def trainer_callback(self):
        """A transformers TrainerCallback that sends the trainer's logs (loss, lr, val metrics) to this run."""
        from transformers import TrainerCallback

        mlflow = self._mlflow

        class _Metrics(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    numeric = {k.replace("@", "_at_"): float(v) for k, v in logs.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
                    if numeric:
                        mlflow.log_metrics(numeric, step=state.global_step)

        return _Metrics()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._mlflow.set_tags({k: str(v)[:MAX_TAG_CHARS] for k, v in tags.items()})


@contextmanager
def stage_run(stage: str, params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> Iterator[StageRun]:
    """One MLflow run named after the stage, with its params section logged as params.

    An exception inside the block ends the run as FAILED with the error text as the `error` tag.
    """
    apply_offline_defaults()
    import mlflow  # slow import (~2 s): only when a stage actually runs

    mlflow.set_tracking_uri(tracking_uri())
    name = os.environ.get("PAPERSIM_EXPERIMENT", EXPERIMENT)
    experiment = mlflow.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else mlflow.create_experiment(name, artifact_location=_artifact_location())
    )
    parent = os.environ.get(PARENT_RUN_ENV) or None
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=stage, parent_run_id=parent, nested=parent is not None,
        tags={"papersim.stage": stage, **process_tags(), **json.loads(os.environ.get(RUN_TAGS_ENV) or "{}"),
              **(tags or {})},
    ) as run:
        handle = StageRun(mlflow, run)
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(dict(params)).items()})
        try:
            yield handle
        except BaseException as exc:
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:MAX_TAG_CHARS])
            raise


# ---------------------------------------------------------------------------------------------
# The retraining flow's parent run and the model registry.


FLOW_TAG = "papersim.flow"


def _client():
    apply_offline_defaults()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient()


def check_store() -> str:
    """The tracking store answers one cheap call; else a PapersimError naming it. Returns its URI."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.search_experiments(max_results=1)
    except (MlflowException, OSError) as exc:
        raise PapersimError(f"the MLflow tracking store {tracking_uri()} does not answer ({str(exc)[:300]}); "
                            "start it, or point MLFLOW_TRACKING_URI at one that runs") from None
    return tracking_uri()


def _experiment_id(client) -> str:
    name = os.environ.get("PAPERSIM_EXPERIMENT", EXPERIMENT)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location())


class FlowRun:
    """The parent run of one retrain: stage runs nest under it through PAPERSIM_PARENT_RUN_ID.

    Everything goes through an MlflowClient with this run's id, so logging works from any thread
    (Prefect may run tasks in worker threads; MLflow's active-run stack is per thread).
    """

    def __init__(self, client, run) -> None:
        self._client = client
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        numeric = numeric_metrics(metrics)
        now = int(time.time() * 1000)
        if numeric:
            self._client.log_batch(self.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in numeric.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self._client.set_tag(self.run_id, key, str(value)[:MAX_TAG_CHARS])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)


@contextmanager
def flow_run(name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> Iterator[FlowRun]:
    """A top-level run for one flow run; FAILED with an `error` tag if the block raises."""
    from mlflow.entities import Param

    client = _client()
    run = client.create_run(_experiment_id(client), run_name=name, tags={FLOW_TAG: name, **process_tags(), **tags})
    handle = FlowRun(client, run)
    flat = {k: str(v)[:6000] for k, v in flatten(dict(params)).items()}
    for start in range(0, len(flat), 100):  # log_batch takes at most 100 params
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in list(flat.items())[start:start + 100]])
    try:
        yield handle
    except BaseException as exc:
        client.set_tag(run.info.run_id, "error", f"{type(exc).__name__}: {exc}"[:MAX_TAG_CHARS])
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def flow_metric_history(name: str, keys: list[str]) -> list[dict[str, Any]]:
    """Earlier runs of flow `name`, oldest first: run id, start time and the given metrics (NaN if absent)."""
    client = _client()
    runs = client.search_runs([_experiment_id(client)], filter_string=f"tags.`{FLOW_TAG}` = '{name}'",
                              order_by=["attributes.start_time ASC"], max_results=1000)
    return [{"run_id": r.info.run_id, "start_time": r.info.start_time,
             **{k: r.data.metrics.get(k, math.nan) for k in keys}} for r in runs]


def run_status(run_id: str) -> str | None:
    """RUNNING, FINISHED, FAILED or KILLED; None for an unknown run."""
    from mlflow.exceptions import MlflowException

    try:
        return _client().get_run(run_id).info.status
    except MlflowException:
        return None


def end_orphaned_runs() -> list[str]:
    """Runs left RUNNING by a process of this host that is gone (a killed flow or stage), marked
    KILLED with the reason as their `error` tag. Returns their ids."""
    import socket

    client = _client()
    host = socket.gethostname()
    running = client.search_runs([_experiment_id(client)], filter_string=(
        f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"), max_results=1000)
    ended = []
    for run in running:
        if not _owner_alive(run.data.tags):
            client.set_tag(run.info.run_id, "error", f"its process (pid {run.data.tags.get(PID_TAG)} on {host}) "
                                                     "ended without closing the run: killed")
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
    return ended

"""MLflow tracking of stage runs. The only module of papersim that imports mlflow.

Defaults need nothing started by hand: a SQLite store at mlruns/mlflow.db under the working
directory (the repository root when run by DVC), artifacts beside it; MLFLOW_TRACKING_URI
overrides. A parent run id in PAPERSIM_PARENT_RUN_ID (set by the retraining flow) nests the
stage's run under it.
"""

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from papersim.env import apply_offline_defaults

EXPERIMENT = "papersim"  # one experiment for the whole pipeline; PAPERSIM_EXPERIMENT overrides
PARENT_RUN_ENV = "PAPERSIM_PARENT_RUN_ID"
MAX_TAG_CHARS = 5000  # MLflow's tag value limit is 8000; error reports are cut to this


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


class StageRun:
    """The handle a stage logs through; thin, so stages never touch mlflow directly."""

    def __init__(self, mlflow_module, run) -> None:
        self._mlflow = mlflow_module
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log every number in a (nested) report; strings and booleans are skipped."""
        numeric = {
            k.replace(" ", "_").replace("@", "_at_"): float(v)
            for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        if numeric:
            self._mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_sentence_transformer(self, model, name: str = "model") -> None:
        """The encoder as an MLflow sentence-transformers model (explicit requirements: no slow inference)."""
        from importlib.metadata import version

        self._mlflow.sentence_transformers.log_model(
            model, name=name,
            pip_requirements=[f"sentence-transformers=={version('sentence-transformers')}",
                              f"torch=={version('torch').split('+')[0]}"],
        )

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
        tags={"papersim.stage": stage, **(tags or {})},
    ) as run:
        handle = StageRun(mlflow, run)
        mlflow.log_params({k: str(v)[:6000] for k, v in flatten(dict(params)).items()})
        try:
            yield handle
        except BaseException as exc:
            mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:MAX_TAG_CHARS])
            raise

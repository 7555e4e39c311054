"""The MLflow model registry: the search model as a pyfunc (encoder + index), its versions, aliases and tags."""

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from papersim.lifecycle.tracking.runs import MAX_TAG_CHARS, _client

HISTORY_TAG = "papersim.champion_history"  # registered-model tag: earlier champions, oldest first
MODEL_ARTIFACT_PATH = "search_model"


def _search_pyfunc():
    """The registered model's Python class (defined here: tracking is the only part that imports mlflow).

    Defined inside a function so that cloudpickle stores it by value with the model; its methods
    import papersim at load time, so the serving process needs papersim installed.
    """
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class PapersimSearch(mlflow.pyfunc.PythonModel):
        """DataFrame of requests (query or paper_id, optional k, mode) -> top-k paper_id, title, score."""

        def load_context(self, context):
            from papersim.retrieval.serving import SearchService

            self.service = SearchService.load(Path(context.artifacts["encoder"]), Path(context.artifacts["index"]))

        def predict(self, context, model_input, params=None):
            from papersim.errors import PapersimError

            try:
                return self.service.predict(model_input)
            except PapersimError as exc:  # a bad request: HTTP 400 with the rule that failed
                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None

    return PapersimSearch()


def _search_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    inputs = Schema([ColSpec(DataType.string, "query", required=False),
                     ColSpec(DataType.string, "paper_id", required=False),
                     ColSpec(DataType.double, "k", required=False),  # double: records without k arrive as NaN
                     ColSpec(DataType.string, "mode", required=False)])
    outputs = Schema([ColSpec(DataType.long, "request"), ColSpec(DataType.long, "rank"),
                      ColSpec(DataType.string, "paper_id"), ColSpec(DataType.string, "title"),
                      ColSpec(DataType.double, "score")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def register_search_model(run_id: str, model_name: str, artifacts: Mapping[str, str | Path],
                          tags: Mapping[str, Any], workdir: Path) -> str:
    """Save the pyfunc locally, upload it to run `run_id`, then register it: returns the version.

    Registration is the last step, so a failure before it leaves no registered version behind.
    """
    from importlib.metadata import version

    import mlflow.pyfunc

    client = _client()
    local = workdir / MODEL_ARTIFACT_PATH
    requirements = [f"{pkg}=={version(pkg).split('+')[0]}" for pkg in
                    ("mlflow", "sentence-transformers", "torch", "faiss-cpu", "bm25s", "PyStemmer",
                     "pandas", "numpy", "pyarrow")]
    mlflow.pyfunc.save_model(str(local), python_model=_search_pyfunc(),
                             artifacts={k: str(v) for k, v in artifacts.items()},
                             signature=_search_signature(), pip_requirements=requirements)
    client.log_artifacts(run_id, str(local), MODEL_ARTIFACT_PATH)
    if not _registered_model(client, model_name):
        client.create_registered_model(model_name, description="papersim similar-paper search: encoder + index")
    mv = client.create_model_version(model_name, f"runs:/{run_id}/{MODEL_ARTIFACT_PATH}", run_id=run_id,
                                     tags={k: str(v)[:MAX_TAG_CHARS] for k, v in tags.items()})
    return str(mv.version)


def _registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        return None


def model_version(model_name: str, alias: str | None = None, version: str | None = None) -> dict | None:
    """A version by alias or number as {version, run_id, source, tags, aliases}; None if there is none."""
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        mv = client.get_model_version_by_alias(model_name, alias) if alias else \
            client.get_model_version(model_name, str(version))
    except MlflowException:
        return None
    return {"version": str(mv.version), "run_id": mv.run_id, "source": mv.source, "tags": dict(mv.tags),
            "aliases": list(mv.aliases), "created": mv.creation_timestamp}


def model_versions(model_name: str) -> list[dict]:
    """Every version of the model, newest first (empty if the model was never registered)."""
    client = _client()
    if not _registered_model(client, model_name):
        return []
    found = client.search_model_versions(f"name = '{model_name}'")
    return sorted((model_version(model_name, version=mv.version) for mv in found),
                  key=lambda v: -int(v["version"]))


def download_model(model_name: str, version: str, dst: Path) -> Path:
    """The version's model folder under `dst` (downloaded once; a finished download has MLmodel)."""
    import mlflow.artifacts

    _client()
    target = dst / f"{model_name}-v{version}"
    if (target / "MLmodel").is_file():
        return target
    tmp = dst / f".{model_name}-v{version}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}",
                                                     dst_path=str(tmp)))
    os.replace(local, target)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def set_alias(model_name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(model_name, alias, str(version))


def delete_alias(model_name: str, alias: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        _client().delete_registered_model_alias(model_name, alias)
    except MlflowException:
        pass  # no such alias: nothing to delete


def champion_history(model_name: str) -> list[str]:
    client = _client()
    model = _registered_model(client, model_name)
    value = model.tags.get(HISTORY_TAG, "") if model else ""
    return [v for v in value.split(",") if v]


def set_champion_history(model_name: str, versions: list[str]) -> None:
    _client().set_registered_model_tag(model_name, HISTORY_TAG, ",".join(versions))


def set_version_tags(model_name: str, version: str, tags: Mapping[str, Any]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, str(value)[:MAX_TAG_CHARS])

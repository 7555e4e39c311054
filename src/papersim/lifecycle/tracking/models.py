"""The MLflow model registry: the search model as a pyfunc (encoder + index), its versions, aliases and tags."""

import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from papersim.atomic import scratch_folder
from papersim.errors import PapersimError
from papersim.lifecycle.tracking.runs import MAX_TAG_CHARS, _client

HISTORY_TAG = "papersim.champion_history"  # registered-model tag: earlier champions, oldest first
MODEL_ARTIFACT_PATH = "search_model"
# A refresh version's folder in its run: a retrain run that refreshes the champion registers both.
REFRESH_ARTIFACT_PATH = "refresh_model"


def _search_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    from mlflow.types.schema import Array

    inputs = Schema([ColSpec(DataType.string, "query", required=False),
                     ColSpec(DataType.string, "paper_id", required=False),
                     ColSpec(DataType.double, "k", required=False),  # double: records without k arrive as NaN
                     ColSpec(DataType.string, "mode", required=False),
                     ColSpec(DataType.string, "since", required=False),  # YYYY-MM-DD, YYYY-MM or YYYY
                     ColSpec(DataType.string, "until", required=False),
                     ColSpec(DataType.string, "group", required=False)])  # one group, or several joined by ";"
    words = Array(DataType.string)
    outputs = Schema([ColSpec(DataType.long, "request"), ColSpec(DataType.long, "rank"),
                      ColSpec(DataType.string, "paper_id"), ColSpec(DataType.string, "title"),
                      ColSpec(DataType.double, "score"), ColSpec(words, "authors"),
                      ColSpec(DataType.string, "date", required=False), ColSpec(DataType.string, "url", required=False),
                      ColSpec(DataType.string, "venue", required=False), ColSpec(words, "categories"),
                      ColSpec(words, "why")])
    return ModelSignature(inputs=inputs, outputs=outputs)


INPUT_EXAMPLE = {"query": ["similar papers on graph neural networks"], "k": [5.0]}
# What the model's code imports when it loads and answers (papersim itself travels in code/): a fresh
# environment built from these alone loads it (tests/test_serving.py builds one). openvino: queries are
# encoded with it on CPUs (backend "auto"); psutil: papersim.lifecycle.processes imports it.
REQUIREMENTS = ("mlflow", "sentence-transformers", "torch", "openvino", "faiss-cpu", "bm25s", "PyStemmer", "pandas",
                "numpy", "pyarrow", "PyYAML", "psutil")


def register_search_model(run_id: str, model_name: str, artifacts: Mapping[str, str | Path],
                          tags: Mapping[str, Any], workdir: Path, description: str = "",
                          artifact_path: str = MODEL_ARTIFACT_PATH) -> str:
    """Save the model (code from search_model.py, the papersim package as its code, an input example
    it is checked against), upload it to run `run_id`, then register it: returns the version.

    Registration is the last step, so a failure before it leaves no registered version behind.
    """
    from importlib.metadata import version

    import mlflow.pyfunc
    import pandas as pd

    import papersim

    client = _client()
    local = workdir / artifact_path
    package = workdir / "code" / "papersim"  # the package without caches or bytecode
    shutil.copytree(Path(papersim.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with warnings.catch_warnings():
        # MLflow compares the example's columns with a range() when it writes the example
        # (mlflow/models/utils.py), which pandas 2 flags as deprecated: MLflow's code, not the model's.
        warnings.filterwarnings("ignore", message="Operation with range is deprecated")
        mlflow.pyfunc.save_model(str(local), python_model=str(Path(__file__).with_name("search_model.py")),
                                 artifacts={k: str(v) for k, v in artifacts.items()}, code_paths=[str(package)],
                                 signature=_search_signature(), input_example=pd.DataFrame(INPUT_EXAMPLE),
                                 pip_requirements=[f"{pkg}=={version(pkg).split('+')[0]}" for pkg in REQUIREMENTS])
    client.log_artifacts(run_id, str(local), artifact_path)
    if not _registered_model(client, model_name):
        client.create_registered_model(model_name, description="papersim similar-paper search: encoder + index")
    mv = client.create_model_version(model_name, f"runs:/{run_id}/{artifact_path}", run_id=run_id,
                                     tags={k: str(v)[:MAX_TAG_CHARS] for k, v in tags.items()},
                                     description=description)
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
            "aliases": list(mv.aliases), "created": mv.creation_timestamp, "description": mv.description or ""}


def model_versions(model_name: str) -> list[dict]:
    """Every version of the model, newest first (empty if the model was never registered)."""
    client = _client()
    if not _registered_model(client, model_name):
        return []
    found = client.search_model_versions(f"name = '{model_name}'")
    return sorted((model_version(model_name, version=mv.version) for mv in found),
                  key=lambda v: -int(v["version"]))


def _store_path(uri: str) -> Path | None:
    """The local folder of a runs:/ artifact URI when the run's artifact store is on this disk."""
    from urllib.parse import unquote, urlparse

    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    root = urlparse(_client().get_run(run_id).info.artifact_uri)
    if root.scheme not in ("file", ""):
        return None
    return Path(unquote(root.path)) / path


def local_artifact(uri: str, cache: Path) -> Path:
    """A runs:/ artifact as a local path: the artifact store's own file or folder when the store is on this
    disk (no copy), else a copy downloaded once under `cache`."""
    import hashlib

    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = _store_path(uri)
        if local is not None and local.exists():
            return local
        target = cache / hashlib.sha1(uri.encode()).hexdigest()[:16]
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        if (target / name).exists():
            return target / name
        with scratch_folder(cache, target.name) as tmp:
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp)))
            target.mkdir(parents=True, exist_ok=True)
            os.replace(got, target / name)
        return target / name
    except (MlflowException, OSError) as exc:
        raise PapersimError(f"{uri}: the artifact store does not hold this model artifact ({exc}); the version "
                            "that refers to it cannot load: promote a trained version (`papersim registry list`)") \
            from None


def download_model(model_name: str, version: str, dst: Path) -> Path:
    """The version's model folder: the artifact store's own when it is on this disk (no copy), else
    downloaded once under `dst` (a finished download has MLmodel)."""
    import mlflow.artifacts

    client = _client()
    source = client.get_model_version_download_uri(model_name, str(version))
    if source.startswith("runs:/"):
        local = _store_path(source)
        if local is not None and (local / "MLmodel").is_file():
            return local
    target = dst / f"{model_name}-v{version}"
    if (target / "MLmodel").is_file():
        return target
    with scratch_folder(dst, target.name) as tmp:  # a killed download is swept (its writer is in the name)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_name}/{version}",
                                                         dst_path=str(tmp)))
        os.replace(local, target)
    return target


def delete_version(model_name: str, version: str, dst: Path) -> None:
    """Remove a version for good: its artifacts from the store, its local copy under `dst`, then the registry
    entry (a kill in between leaves an entry without artifacts, which the next removal finishes). Its run
    stays, with its metrics and tags."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = _client()
    try:
        source = client.get_model_version_download_uri(model_name, str(version))
    except MlflowException:
        return  # already gone
    if source.startswith("runs:/"):
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        try:
            get_artifact_repository(client.get_run(run_id).info.artifact_uri).delete_artifacts(path)
        except (MlflowException, FileNotFoundError):
            pass  # removed by an earlier, interrupted removal
    shutil.rmtree(dst / f"{model_name}-v{version}", ignore_errors=True)
    client.delete_model_version(model_name, str(version))


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

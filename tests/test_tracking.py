import mlflow
import pytest
from mlflow.tracking import MlflowClient

from papersim.lifecycle import tracking as tr
from papersim.lifecycle.tracking.runs import _artifact_location


def test_flatten_nests_keys_with_dots():
    assert tr.flatten({"a": {"b": 1}, "s": [{"path": "x"}], "dims": [64, 32]}) == {
        "a.b": 1, "s.0.path": "x", "dims": [64, 32]}


def test_stage_run_logs_params_metrics_and_marks_failures(tracking):
    with tr.stage_run("demo", {"k": 3, "nested": {"x": "y"}}, {"extra": "tag"}) as run:
        run.log_metrics({"score": 0.5, "per": {"a": 2}, "label": "text", "flag": True})
    with pytest.raises(ValueError, match="bad rows"), tr.stage_run("demo", {"k": 4}) as failing:
        raise ValueError("bad rows")

    client = MlflowClient()
    done, failed = client.get_run(run.run_id), client.get_run(failing.run_id)
    assert done.data.params == {"k": "3", "nested.x": "y"}
    assert done.data.metrics == {"score": 0.5, "per.a": 2.0}
    assert done.data.tags["extra"] == "tag" and done.data.tags["papersim.stage"] == "demo"
    assert mlflow.get_experiment(done.info.experiment_id).name == tracking
    assert failed.info.status == "FAILED" and failed.data.tags["error"] == "ValueError: bad rows"


def test_default_store_is_a_sqlite_file_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tr.tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert _artifact_location() == (tmp_path / "mlruns" / "artifacts").as_uri()

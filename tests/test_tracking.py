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


KILLED_STAGE = """
import os, sys
from papersim.lifecycle import tracking
with tracking.stage_run("train", {"k": 1}) as run:
    print(run.run_id, flush=True)
    os.kill(os.getpid(), 9)  # as the OOM killer would: the run is never closed
"""


def test_runs_left_running_by_a_killed_process_are_marked_killed(tracking):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", KILLED_STAGE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9
    orphan = proc.stdout.split()[0]
    client = MlflowClient()
    assert client.get_run(orphan).info.status == "RUNNING"
    with tr.stage_run("evaluate", {"k": 2}) as alive:  # this process's own run is not touched
        assert tr.end_orphaned_runs() == [orphan]
        assert client.get_run(alive.run_id).info.status == "RUNNING"
    run = client.get_run(orphan)
    assert run.info.status == "KILLED" and "ended without closing the run" in run.data.tags["error"]
    assert tr.end_orphaned_runs() == []


def test_an_unreachable_store_is_named(monkeypatch):
    from papersim.errors import PapersimError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with pytest.raises(PapersimError, match=r"MLflow tracking store http://127.0.0.1:9 does not answer"):
        tr.check_store()

"""`python -m flows.serve` against a real Prefect server: both deployments are registered, a scheduled
retrain completes, then a scheduled refresh serves a newly added paper (the tiny model, a tiny corpus,
a SQLite MLflow store)."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, flow_repo, paper, stop_group

pytestmark = pytest.mark.slow


def _ask(api: str, call):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        # This process's Prefect settings were read before this test (another module's harness):
        # point the client at the real server explicitly, not at a temporary server of its own.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            async with get_client() as client:
                return await call(client)

    return asyncio.run(read())


def _runs(api: str, deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    return _ask(api, lambda client: client.read_flow_runs(deployment_filter=DeploymentFilter(
        name=DeploymentFilterName(any_=[deployment])), sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=50))


def _wait_for(api: str, deployment: str, served: subprocess.Popen, log: Path, done, timeout_s: float) -> list:
    """The completed runs of `deployment` for which done(run) holds, once there is one (or none by the deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert served.poll() is None, log.read_text()[-3000:]
        found = [r for r in _runs(api, deployment) if r.state and r.state.is_completed() and done(r)]
        if found:
            return found
        # A run scheduled while an earlier one holds the lock fails at once ("another retrain or refresh is
        # running": the lock timeouts are 0 here), as it should: on a slow machine one run outlasts the minute.
        time.sleep(5)
    return []


def test_scheduled_retrain_then_refresh_fire_and_complete_on_a_real_server(tmp_path, tiny_model_dir, prefect_api):
    def every_minute(params: dict) -> None:
        params["retrain"].update(schedule_cron="* * * * *", refresh_cron="* * * * *", lock_timeout_s=0,
                                 refresh_lock_timeout_s=0)

    repo = flow_repo(tmp_path / "repo", tiny_model_dir, every_minute)
    mlflow_store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a registry of its own: the first run is promoted
    assert yaml.safe_load((repo / "params.yaml").read_text())["retrain"]["refresh_cron"] == "* * * * *"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "5", "MLFLOW_TRACKING_URI": mlflow_store,
           "PAPERSIM_EXPERIMENT": "test-flows-serve"}
    env.pop("PAPERSIM_PARENT_RUN_ID", None)
    client = MlflowClient(tracking_uri=mlflow_store)

    def flow_runs(run, flow: str) -> list:
        experiment = client.get_experiment_by_name("test-flows-serve")
        return client.search_runs([experiment.experiment_id], filter_string=f"tags.`prefect.flow_run_id` = '{run.id}' "
                                                                            f"and tags.`papersim.flow` = '{flow}'") \
            if experiment else []

    def refreshed(run) -> bool:
        return any(r.data.tags.get("papersim.outcome") == "refreshed" for r in flow_runs(run, "refresh"))

    log_path = tmp_path / "serve.log"
    log = open(log_path, "w")
    served = subprocess.Popen([sys.executable, "-m", "flows.serve", "--root", str(repo), "--params",
                               str(repo / "params.yaml")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        retrained = _wait_for(prefect_api, "weekly", served, log_path, lambda run: True, 420)
        assert retrained, f"no scheduled retrain completed in time:\n{log_path.read_text()[-4000:]}"
        from prefect.client.schemas.sorting import DeploymentSort

        deployments = _ask(prefect_api, lambda c: c.read_deployments(limit=50, sort=DeploymentSort.NAME_ASC))
        assert {(d.name, d.schedules[0].schedule.cron) for d in deployments} >= {("weekly", "* * * * *"),
                                                                                ("scheduled", "* * * * *")}
        # The retrain schedule is paused now (its scheduled runs are deleted): a retrain's drift check would
        # serve the new paper through a refresh of its own, and this test is about the refresh deployment's.
        weekly, = [d for d in deployments if d.name == "weekly"]
        _ask(prefect_api, lambda c: c.pause_deployment(weekly.id))
        for run in _runs(prefect_api, "weekly"):  # and any still scheduled, whatever the server kept
            if run.state and run.state.is_scheduled():
                _ask(prefect_api, lambda c, run=run: c.delete_flow_run(run.id))
        deadline = time.monotonic() + 300
        while any(r.state and (r.state.is_running() or r.state.is_pending()) for r in _runs(prefect_api, "weekly")):
            assert time.monotonic() < deadline, "a retrain run did not end"
            time.sleep(2)
        with (repo / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl").open("a") as f:
            f.write(json.dumps(paper(77, title="A scheduled refresh study of okapi migration")) + "\n")
        fresh = _wait_for(prefect_api, "scheduled", served, log_path, refreshed, 300)
        assert fresh, f"no scheduled refresh served the new paper in time:\n{log_path.read_text()[-4000:]}"
    finally:
        stop_group(served)
        log.close()
    run = retrained[0]
    assert run.auto_scheduled and run.parameters == {"root": str(repo)}
    parent, = flow_runs(run, "retrain")
    assert parent.info.status == "FINISHED" and parent.data.tags["papersim.outcome"] == "promoted"
    assert fresh[0].auto_scheduled and fresh[0].parameters == {"root": str(repo)}
    champion = client.get_model_version_by_alias("papersim", "champion")
    assert champion.tags["papersim.refresh.added"] == "1" and champion.description.startswith("Refresh of")

"""`python -m flows.serve` against a real Prefect server: a cron schedule fires and its flow run
completes (the tiny model, a tiny corpus, a SQLite MLflow store)."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, flow_repo, stop_group

pytestmark = pytest.mark.slow


def _runs(api: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def read():
        # This process's Prefect settings were read before this test (another module's harness):
        # point the client at the real server explicitly, not at a temporary server of its own.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            async with get_client() as client:
                return await client.read_flow_runs(deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["weekly"])), sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=50)

    return asyncio.run(read())


def test_a_scheduled_run_fires_and_completes_on_a_real_server(tmp_path, tiny_model_dir, prefect_api):
    def every_minute(params: dict) -> None:
        params["retrain"]["schedule_cron"] = "* * * * *"

    repo = flow_repo(tmp_path / "repo", tiny_model_dir, every_minute)
    mlflow_store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a registry of its own: the first run is promoted
    assert yaml.safe_load((repo / "params.yaml").read_text())["retrain"]["schedule_cron"] == "* * * * *"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_RUNNER_POLL_FREQUENCY": "5", "MLFLOW_TRACKING_URI": mlflow_store,
           "PAPERSIM_EXPERIMENT": "test-flows-serve"}
    env.pop("PAPERSIM_PARENT_RUN_ID", None)
    log = open(tmp_path / "serve.log", "w")
    served = subprocess.Popen([sys.executable, "-m", "flows.serve", "--root", str(repo), "--params",
                               str(repo / "params.yaml")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline, done = time.monotonic() + 420, []
        while not done and time.monotonic() < deadline:
            assert served.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            runs = _runs(prefect_api)
            done = [r for r in runs if r.state and r.state.is_completed()]
            # A run scheduled while an earlier one still holds the lock fails at once ("another retrain
            # is running"), as it should: on a slow machine one run can outlast the minute.
            time.sleep(5)
        assert done, f"no scheduled run completed in time:\n{(tmp_path / 'serve.log').read_text()[-4000:]}"
    finally:
        stop_group(served)
        log.close()
    run = done[0]
    assert run.auto_scheduled and run.parameters == {"root": str(repo)}
    client = MlflowClient(tracking_uri=mlflow_store)
    experiment = client.get_experiment_by_name("test-flows-serve").experiment_id
    parent, = client.search_runs([experiment], filter_string=f"tags.`prefect.flow_run_id` = '{run.id}' "
                                                             "and tags.`papersim.flow` = 'retrain'")
    assert parent.info.status == "FINISHED" and parent.data.tags["papersim.outcome"] == "promoted"

"""`python -m flows.serve` against a real Prefect server: both deployments run together, one run at a
time each; refreshes that come due while a retrain runs skip at once, none fails, and a refresh after it
serves a newly added paper (the tiny model, a tiny corpus, a SQLite MLflow store)."""

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
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


def _runs(api: str, deployment: str | tuple[str, ...]) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    names = [deployment] if isinstance(deployment, str) else list(deployment)
    return _ask(api, lambda client: client.read_flow_runs(deployment_filter=DeploymentFilter(
        name=DeploymentFilterName(any_=names)), sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200))


def _wait_for(api: str, deployment: str | tuple[str, ...], served: subprocess.Popen, log: Path, done, timeout_s: float) -> list:
    """The completed runs of `deployment` for which done(run) holds, once there is one (or none by the deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert served.poll() is None, log.read_text()[-3000:]
        found = [r for r in _runs(api, deployment) if r.state and r.state.is_completed() and done(r)]
        if found:
            return found
        time.sleep(5)
    return []


def test_both_schedules_on_a_real_server_refreshes_skip_a_running_retrain_and_run_after_it(tmp_path, tiny_model_dir,
                                                                                          prefect_api):
    def every_minute(params: dict) -> None:
        # both every minute; the first retrain (the first model) must span a minute tick, or no refresh comes
        # due during it: 800 training steps sometimes ended within the minute it began, 2400 take over a minute
        params["retrain"].update(schedule_cron="* * * * *", refresh_cron="* * * * *", lock_timeout_s=600,
                                 refresh_lock_timeout_s=30)
        params["train"].update(max_steps=2400, eval_steps=2400, save_steps=2400)

    repo = flow_repo(tmp_path / "repo", tiny_model_dir, every_minute)
    mlflow_store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a registry of its own: the first run is promoted
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
        return any(r.data.tags.get("papersim.outcome") == "refreshed" for flow in ("refresh", "retrain")
                   for r in flow_runs(run, flow))

    def promoted(run) -> bool:
        return any(r.data.tags.get("papersim.outcome") == "promoted" for r in flow_runs(run, "retrain"))

    log_path = tmp_path / "serve.log"
    log = open(log_path, "w")
    served = subprocess.Popen([sys.executable, "-m", "flows.serve", "--root", str(repo), "--params",
                               str(repo / "params.yaml")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        retrained = _wait_for(prefect_api, "weekly", served, log_path, promoted, 600)
        assert retrained, f"no scheduled retrain completed in time:\n{log_path.read_text()[-4000:]}"
        from prefect.client.schemas.sorting import DeploymentSort

        deployments = _ask(prefect_api, lambda c: c.read_deployments(limit=50, sort=DeploymentSort.NAME_ASC))
        limits = {d.name: (d.schedules[0].schedule.cron, d.global_concurrency_limit.limit,
                           d.concurrency_options.collision_strategy.value) for d in deployments}
        assert limits == {"weekly": ("* * * * *", 1, "ENQUEUE"), "scheduled": ("* * * * *", 1, "CANCEL_NEW")}, limits
        with (repo / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl").open("a") as f:
            f.write(json.dumps(paper(77, title="A scheduled refresh study of okapi migration")) + "\n")
        # the next refresh, or the next retrain's drift check (both schedules keep running), serves it
        fresh = _wait_for(prefect_api, ("scheduled", "weekly"), served, log_path, refreshed, 300)
        assert fresh, f"no scheduled run served the new paper in time:\n{log_path.read_text()[-4000:]}"
        # and a scheduled refresh ran after the first retrain (the queued weekly run may have served the paper
        # before the next minute tick): wait for one
        end = retrained[0].end_time
        _wait_for(prefect_api, "scheduled", served, log_path, lambda r: r.start_time and r.start_time > end, 180)
        runs = {name: _runs(prefect_api, name) for name in ("weekly", "scheduled")}
    finally:
        stop_group(served)
        log.close()
    retrain_run = retrained[0]
    assert retrain_run.auto_scheduled and retrain_run.parameters == {"root": str(repo)}
    start, end = retrain_run.start_time, retrain_run.end_time
    # refreshes that came due (their cron tick) while the retrain ran, and ran
    during = [r for r in runs["scheduled"] if r.start_time and start < r.expected_start_time < end]
    after = [r for r in runs["scheduled"] if r.start_time and r.start_time > end and r.state.is_completed()]
    # refreshes came due at every minute tick while the retrain ran (two or more when it spans two ticks): each
    # ended at once (skipped, not failed after a wait)
    ticks = int(end.timestamp() // 60) - int(start.timestamp() // 60)
    assert ticks >= 1 and len(during) >= min(2, ticks) and all(r.state.is_completed() and r.end_time - r.start_time < timedelta(seconds=60)
                                    for r in during), [(r.start_time, r.state) for r in during]
    assert after, "no refresh ran after the retrain"
    failed = [(name, r.name, r.state.type) for name, found in runs.items() for r in found
              if r.state and (r.state.is_failed() or r.state.is_crashed())]
    assert not failed, failed
    champion = client.get_model_version_by_alias("papersim", "champion")
    assert champion.tags["papersim.refresh.added"] == "1" and champion.description.startswith("Refresh of")

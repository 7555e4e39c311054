"""The retrain flow killed with SIGKILL during each step, then run again: real `python -m flows.retrain`
processes, a real Prefect server (and once Prefect's temporary one), dvc in a temporary git
repository, a SQLite MLflow store, the tiny model."""

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
from mlflow.tracking import MlflowClient

from papersim.lifecycle import tracking as tracking_api
from tests.conftest import REPO, flow_repo

pytestmark = pytest.mark.slow
EXPERIMENT = "test-flow-faults"
NAME = "papersim"


@pytest.fixture(scope="module")
def repo(tmp_path_factory, tiny_model_dir):
    return flow_repo(tmp_path_factory.mktemp("faults") / "repo", tiny_model_dir)


@pytest.fixture(scope="module")
def store(mlflow_store):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_store)
        mp.setenv("PAPERSIM_EXPERIMENT", EXPERIMENT)
        yield mlflow_store


def flow_env(store: str, api: str | None, home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": store, "PAPERSIM_EXPERIMENT": EXPERIMENT, "PREFECT_HOME": str(home),
           "PYTHONUNBUFFERED": "1", **extra}
    env.pop("PAPERSIM_PARENT_RUN_ID", None)
    if api:
        env["PREFECT_API_URL"] = api
    else:  # Prefect starts a temporary server of its own for the run
        env.pop("PREFECT_API_URL", None)
    return env


def start_flow(repo: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.retrain", "--root", str(repo), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _dead(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_during(flow: subprocess.Popen, marker: str, delay_s: float) -> dict:
    """Read the flow's output until `marker`, wait `delay_s`, SIGKILL the flow (only it), then give
    the processes it started 10 s to disappear. Returns what was started and what is left."""
    seen = []
    for line in flow.stdout:
        seen.append(line)
        if marker in line:
            break
    else:
        raise AssertionError(f"the flow ended before {marker!r}:\n{''.join(seen)[-4000:]}")
    time.sleep(delay_s)
    started = psutil.Process(flow.pid).children(recursive=True)
    names = sorted({" ".join(p.cmdline()[1:4]) for p in started if not _dead(p)})
    flow.kill()
    flow.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_dead(p) for p in started):
        time.sleep(0.2)
    return {"started": names, "left": [p.pid for p in started if not _dead(p)], "output": "".join(seen)}


# (step, the output line it starts with, seconds after it, overrides): runs with overrides work in a
# scratch workspace, the others in the repository itself.
FAULTS = [
    ("mine_pairs", "Running stage 'mine_pairs'", 2.0, ["--set", "train.max_steps=4"]),
    ("train", "Running stage 'train'", 2.0, []),
    ("evaluate", "Running stage 'evaluate'", 2.0, ["--set", "train.max_steps=4"]),
    ("build_index", "Running stage 'build_index'", 2.0, []),
    ("register", "dvc repro build_index: ran", 0.3, []),
]


def test_sigkill_during_any_step_loses_nothing_and_the_next_run_recovers(repo, store, prefect_api, tmp_path):
    params, outputs = (repo / "params.yaml").read_bytes(), []
    for i, (step, marker, delay, overrides) in enumerate(FAULTS):
        api = None if i == 0 else prefect_api  # the first run with Prefect's temporary server
        flow = start_flow(repo, flow_env(store, api, tmp_path / "prefect"), *overrides)
        killed = kill_during(flow, marker, delay)
        assert killed["left"] == [], f"{step}: processes outlived the flow: {killed['started']}"
        assert any("stages." in name or "dvc repro" in name for name in killed["started"]) or step == "register", \
            f"{step}: the kill did not land in a stage: {killed['started']}"
        if i == 0:
            assert any("uvicorn" in name or "prefect" in name for name in killed["started"]), killed["started"]
        assert (repo / "params.yaml").read_bytes() == params, f"{step}: params.yaml changed"
        outputs.append(killed["output"])
    for i in range(1, len(FAULTS)):  # each run found what the killed one before it left, and said so
        assert "ended without releasing its hold" in outputs[i] and "KILLED" in outputs[i], outputs[i][-3000:]
        if FAULTS[i - 1][3]:
            assert "removing the scratch workspace of an interrupted run" in outputs[i], outputs[i][-3000:]

    flow = start_flow(repo, flow_env(store, prefect_api, tmp_path / "prefect"))
    out, _ = flow.communicate(timeout=900)
    assert flow.returncode == 0, out[-5000:]
    assert "retrain: promoted" in out and "ended without releasing its hold" in out and "KILLED" in out, out[-3000:]
    assert (repo / "params.yaml").read_bytes() == params
    assert not list((repo / ".papersim/runs").iterdir())
    assert subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout.count("\n") == 1
    status = subprocess.run([str(Path(sys.executable).with_name("dvc")), "status"], cwd=repo, capture_output=True,
                            text=True, env=flow_env(store, None, tmp_path / "prefect"))
    assert "up to date" in status.stdout, status.stdout
    experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = MlflowClient().search_runs([experiment], max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    assert sum(r.info.status == "KILLED" for r in runs) >= len(FAULTS)  # each killed flow's run, at least
    champion = tracking_api.model_version(NAME, alias="champion")
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    import pandas as pd

    hits = loaded.predict(pd.DataFrame({"query": ["supersonic wing flutter"], "k": [3.0]}))
    assert len(hits) == 3 and champion is not None


def test_an_unreachable_tracking_store_fails_after_retries_and_leaves_the_champion(repo, store, prefect_api,
                                                                                  tmp_path):
    before = tracking_api.model_version(NAME, alias="champion")
    env = flow_env(store, prefect_api, tmp_path / "prefect", MLFLOW_TRACKING_URI="http://127.0.0.1:9",
                   MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    proc = subprocess.run([sys.executable, "-m", "flows.retrain", "--root", str(repo), "--force"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "error: the MLflow tracking store http://127.0.0.1:9 does not answer" in proc.stderr, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("Task run failed with exception") >= 3  # the first try and 2 retries
    after = tracking_api.model_version(NAME, alias="champion")
    assert (after or {}).get("version") == (before or {}).get("version")

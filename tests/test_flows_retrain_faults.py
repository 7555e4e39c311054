"""The retrain flow killed with SIGKILL in each phase, then run again: real `python -m flows.retrain`
processes, a real Prefect server (and Prefect's temporary one while it starts), dvc in a temporary git
repository, a SQLite MLflow store, the tiny model."""

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import mlflow
import psutil
import pytest
from mlflow.tracking import MlflowClient

from papersim.lifecycle import tracking as tracking_api
from papersim.lifecycle.workspace import OWNER
from tests.conftest import REPO, flow_repo, paper

pytestmark = pytest.mark.slow
EXPERIMENT = "test-flow-faults"
NAME = "papersim"
FAULT_ENV = "PAPERSIM_FAULT_TEST"  # every process of a run inherits it: how this test finds them all


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
           "PYTHONUNBUFFERED": "1", FAULT_ENV: uuid.uuid4().hex, **extra}
    env.pop("PAPERSIM_PARENT_RUN_ID", None)
    if api:
        env["PREFECT_API_URL"] = api
    else:  # Prefect starts a temporary server of its own for the run
        env.pop("PREFECT_API_URL", None)
    return env


def start_flow(repo: Path, env: dict[str, str], *args: str, flow: str = "retrain") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", f"flows.{flow}", "--root", str(repo), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def processes_of(run: str) -> list[psutil.Process]:
    """Every live process carrying this run's FAULT_ENV value, whoever its parent is now."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(FAULT_ENV) == run and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pass
    return found


def registry_state() -> dict:
    versions = tracking_api.model_versions(NAME)
    return {"versions": [v["version"] for v in versions],
            "aliases": {a: v["version"] for v in versions for a in v["aliases"]},
            "history": tracking_api.champion_history(NAME)}


# When to kill: after an output line (and a delay), when Prefect's temporary server process appears, or
# when a new registry version appears (between registering it and setting its alias, most likely).
def after_line(marker: str, delay_s: float):
    def wait(flow: subprocess.Popen, seen: list[str]) -> None:
        for line in flow.stdout:
            seen.append(line)
            if marker in line:
                time.sleep(delay_s)
                return
        raise AssertionError(f"the flow ended before {marker!r}:\n{''.join(seen)[-4000:]}")
    return wait


def prefect_server_starting(flow: subprocess.Popen, seen: list[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for child in psutil.Process(flow.pid).children(recursive=True):
            try:
                if "uvicorn" in " ".join(child.cmdline()):
                    return
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.02)
    raise AssertionError("Prefect's temporary server never started")


def new_version(flow: subprocess.Popen, seen: list[str]) -> None:
    before = len(tracking_api.model_versions(NAME))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and flow.poll() is None:
        if len(tracking_api.model_versions(NAME)) > before:
            return
        time.sleep(0.05)
    raise AssertionError(f"no new version while the flow ran:\n{''.join(seen)[-4000:]}")


def kill(flow: subprocess.Popen, run: str, when) -> dict:
    """Wait for `when`, SIGKILL the flow process (only it), then give everything the run started 15 s
    to disappear. Returns what the run had started and what is left."""
    seen: list[str] = []
    reader = None
    if when in (prefect_server_starting, new_version):  # keep reading the output meanwhile (a full pipe blocks)
        reader = threading.Thread(target=lambda: seen.extend(flow.stdout), daemon=True)
        reader.start()
    when(flow, seen)
    started = sorted({" ".join(p.cmdline()[1:4]) for p in processes_of(run) if p.pid != flow.pid})
    flow.kill()
    flow.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and processes_of(run):
        time.sleep(0.2)
    left = [" ".join(p.cmdline()) for p in processes_of(run)]
    if reader is not None:
        reader.join(timeout=5)
    elif not left:  # nobody holds the pipe any more: the rest of the output
        seen.extend(flow.stdout.read().splitlines(keepends=True))
    return {"started": started, "left": left, "output": "".join(seen)}


# (phase, when to kill, what it must have started, overrides): runs with overrides work in a scratch workspace.
FAULTS = [
    ("Prefect's temporary server starting", prefect_server_starting, "uvicorn", []),
    ("ingest", after_line("Running stage 'ingest'", 1.0), "stages.ingest", ["--set", "train.max_steps=4"]),
    ("mine_pairs", after_line("Running stage 'mine_pairs'", 2.0), "stages.mine_pairs", []),
    ("train", after_line("Running stage 'train'", 2.0), "stages.train", ["--set", "train.max_steps=4"]),
    ("evaluate", after_line("Running stage 'evaluate'", 2.0), "stages.evaluate", []),
    ("building the index", after_line("Running stage 'build_index'", 2.0), "stages.build_index", []),
    ("registering, before the version exists", after_line("dvc repro build_index: ran", 0.3), "", []),
    ("registering, the version made but no alias yet", new_version, "", []),
]
# What a killed run may leave in the output folders and the next run must remove (paths from the repository
# root): temporary siblings and scratch folders (`.NAME.tmp-PID-START-...`), moved-aside outputs, commit
# journals, and scratch folders named by tempfile, as older versions named them (the ingest stage's spill,
# the registration's staging and the champion's re-scoring in cache/).
LEFTOVERS = re.compile(r"\.tmp-|\.old-|\.commit\.json|(^|/)\.ingest-|^cache/(registry/)?tmp[a-z0-9_]{8}(/|$)")


def test_sigkill_in_every_phase_loses_nothing_and_the_next_run_recovers(repo, store, prefect_api, tmp_path):
    params, outputs = (repo / "params.yaml").read_bytes(), []
    for i, (phase, when, stage, overrides) in enumerate(FAULTS):
        api = None if i == 0 else prefect_api  # the first run with Prefect's temporary server
        env = flow_env(store, api, tmp_path / "prefect")
        before = registry_state()
        killed = kill(start_flow(repo, env, "--force", *overrides), env[FAULT_ENV], when)
        assert killed["left"] == [], f"{phase}: processes outlived the flow 15 s: {killed['left']}"
        assert any(stage in name for name in killed["started"]), f"{phase}: not killed there: {killed['started']}"
        assert (repo / "params.yaml").read_bytes() == params, f"{phase}: params.yaml changed"
        after = registry_state()
        if after != before:  # fully updated, or a version whose alias the next run sets (checked below)
            assert after["versions"][1:] == before["versions"] and after["history"][:len(before["history"])] == \
                before["history"], f"{phase}: {before} -> {after}"
            assert after["aliases"] in (before["aliases"], {**before["aliases"], "champion": after["versions"][0]},
                                        {**before["aliases"], "challenger": after["versions"][0]}), (phase, after)
        held = (repo / OWNER).is_file()  # killed holding the retrain lock: the next run must say so
        # The first run dies before it takes the lock; the last one may finish (alias set, lock released)
        # between the new version showing and the kill landing: then it left nothing to recover.
        assert held or i == 0 or when is new_version, f"{phase}: killed, yet its hold was released"
        outputs.append((phase, killed["output"], after, held))
    for i in range(2, len(FAULTS)):  # each run found what the killed one before it left, and said so
        phase, out, _, _ = outputs[i]
        assert "ended without releasing its hold" in out and "KILLED" in out, (phase, out[-3000:])
        if FAULTS[i - 1][3]:
            assert "removing the scratch workspace of an interrupted run" in out, (phase, out[-3000:])

    env = flow_env(store, prefect_api, tmp_path / "prefect")
    flow = start_flow(repo, env)
    out, _ = flow.communicate(timeout=900)
    assert flow.returncode == 0, out[-5000:]
    if outputs[-1][3]:
        assert "ended without releasing its hold" in out and "KILLED" in out, out[-3000:]
    else:  # the last run completed before the kill: nothing to recover, and nothing said about it
        assert "ended without releasing its hold" not in out, out[-3000:]
    left = outputs[-1][2]  # the registry as the last killed run left it
    if left["versions"] and left["versions"][0] not in left["aliases"].values():
        assert f"finished the registration of v{left['versions'][0]}" in out, out[-3000:]  # the alias it did not set
    assert "retrain: " in out
    time.sleep(1)
    assert processes_of(env[FAULT_ENV]) == []  # a finished run leaves nothing either (Prefect's server included)
    assert (repo / "params.yaml").read_bytes() == params
    assert not list((repo / ".papersim/runs").iterdir())
    assert [p for folder in ("data", "models", "artifacts", "reports", "cache") for p in (repo / folder).rglob("*")
            if LEFTOVERS.search(p.relative_to(repo).as_posix())] == []
    assert subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout.count("\n") == 1
    status = subprocess.run([str(Path(sys.executable).with_name("dvc")), "status", "--json"], cwd=repo,
                            capture_output=True, text=True, env=flow_env(store, None, tmp_path / "prefect"))
    # every stage up to date; the sources stage re-reads its sources on every repro (always_changed)
    assert json.loads(status.stdout) in ({}, {"sources": ["always changed"]}), status.stdout
    experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = MlflowClient().search_runs([experiment], max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    # every run killed holding the lock (all but the first, which died before its run began, and perhaps the
    # last, which may have finished first) has its MLflow run marked KILLED by the run after it
    assert sum(r.info.status == "KILLED" for r in runs) >= sum(held for *_, held in outputs) >= len(FAULTS) - 2
    final = registry_state()
    assert all(v in final["versions"] for v in outputs[-1][2]["versions"])
    assert tracking_api.model_versions(NAME)[0]["aliases"]  # the newest version has its alias
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    import pandas as pd

    hits = loaded.predict(pd.DataFrame({"query": ["supersonic wing flutter"], "k": [3.0]}))
    assert len(hits) == 3


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


# The refresh flow's phases: (phase, when to kill, what it must have started). Before each run one more paper
# is appended, so every run has a refresh to do.
ANIMALS = ("aardvark", "bison", "cheetah", "dingo", "eland", "ferret")
REFRESH_FAULTS = [
    ("Prefect's temporary server starting", prefect_server_starting, "uvicorn"),
    ("ingest", after_line("Running stage 'ingest'", 1.0), "stages.ingest"),
    ("building the index", after_line("refresh_index: ", 2.0), "stages.build_index"),
    ("scoring", after_line("score_refresh: ", 2.0), "stages.evaluate"),
    ("registering, before the version exists", after_line("register_refresh: ", 0.0), ""),
    ("registering, the version made but no alias yet", new_version, ""),
]


def test_sigkill_in_every_phase_of_a_refresh_leaves_the_previous_champion_serving(repo, store, prefect_api, tmp_path):
    source = repo / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl"
    if tracking_api.model_version(NAME, alias="champion") is None:  # run alone: a champion to refresh first
        proc = start_flow(repo, flow_env(store, prefect_api, tmp_path / "prefect"))
        assert proc.wait(timeout=900) == 0, proc.stdout.read()[-4000:]
    params, outputs, titles = (repo / "params.yaml").read_bytes(), [], []
    for i, (phase, when, started) in enumerate(REFRESH_FAULTS):
        titles.append(f"A refresh study of {ANIMALS[i]} migration")  # a word of its own: BM25 drops digits
        with source.open("a") as f:
            f.write(json.dumps(paper(300 + i, title=titles[-1], categories=["cat0"])) + "\n")
        env = flow_env(store, None if i == 0 else prefect_api, tmp_path / "prefect")
        before = registry_state()
        killed = kill(start_flow(repo, env, flow="refresh"), env[FAULT_ENV], when)
        assert killed["left"] == [], f"{phase}: processes outlived the refresh 15 s: {killed['left']}"
        assert any(started in name for name in killed["started"]), f"{phase}: not killed there: {killed['started']}"
        assert (repo / "params.yaml").read_bytes() == params, f"{phase}: params.yaml changed"
        after = registry_state()
        if when is new_version or (phase.startswith("registering") and after != before):
            # a version without its alias (the next run promotes it), or promoted already: a refresh version
            # is small, so its registration may finish between the log line and the kill landing
            assert after["versions"][1:] == before["versions"], (phase, after)
            assert after["aliases"] in (before["aliases"], {**before["aliases"], "champion": after["versions"][0]})
        else:  # the previous champion serves, and nothing was registered
            assert after == before, f"{phase}: {before} -> {after}"
        outputs.append((phase, killed["output"], after))

    env = flow_env(store, prefect_api, tmp_path / "prefect")
    flow = start_flow(repo, env, flow="refresh")
    out, _ = flow.communicate(timeout=900)
    # the last killed run registered its version: promoted by this run, or by itself before the kill landed
    assert flow.returncode == 0 and "refresh: up to date" in out, out[-5000:]
    left = outputs[-1][2]
    if left["versions"][0] not in left["aliases"].values():
        assert f"finished the registration of v{left['versions'][0]}" in out, out[-3000:]
    time.sleep(1)
    assert processes_of(env[FAULT_ENV]) == []
    assert [p for folder in ("data", "models", "artifacts", "reports", "cache") for p in (repo / folder).rglob("*")
            if LEFTOVERS.search(p.relative_to(repo).as_posix())] == []
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")  # every paper added through the kills is served
    import pandas as pd

    hits = loaded.predict(pd.DataFrame({"query": titles, "k": [1.0] * len(titles)}))
    assert hits.sort_values("request")["title"].tolist() == titles

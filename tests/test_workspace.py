"""The flow's hold on a repository: the lock, and scratch workspaces for runs with overrides (real
git worktrees and DVC in a temporary repository)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from papersim.env import dvc_executable
from papersim.errors import PapersimError
from papersim.lifecycle.workspace import OWNER, RUNS, remove_leftovers, retrain_lock, scratch_workspace

PARAMS = "# the shipped profile\nstep:\n  size: 3        # why 3\n  label: base\n"
DVC_YAML = """stages:
  step:
    cmd: python -c "import yaml; p = yaml.safe_load(open('params.yaml'))['step']; open('out.txt', 'w').write(str(p))"
    params: [step]
    outs:
      - out.txt:
          persist: true   # as the pipeline's outputs (DVC's run cache skips persistent outputs)
"""


def sh(root: Path, *cmd: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "params.yaml").write_text(PARAMS)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "notes.md").write_text("committed\n")
    (root / ".gitignore").write_text(".papersim/\n/cache/\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["dvc", "repro", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init"]):
        sh(root, *cmd)
    return root


def test_overrides_run_in_a_scratch_worktree_and_the_repository_stays_byte_identical(repo):
    (repo / "notes.md").write_text("changed, not committed\n")
    (repo / "new.txt").write_text("untracked\n")
    logged = []
    with scratch_workspace(repo, {"step.size": 9}, dvc_executable(), logged.append) as work:
        assert work.parent == repo / RUNS
        assert "size: 9        # why 3" in (work / "params.yaml").read_text()  # comments kept
        assert (work / "notes.md").read_text() == "changed, not committed\n" and (work / "new.txt").is_file()
        assert (work / "out.txt").read_text() == str({"size": 3, "label": "base"})  # checked out from the cache
        assert (work / "cache").resolve() == (repo / "cache").resolve()
        sh(work, "dvc", "repro", "-q")
        assert (work / "out.txt").read_text() == str({"size": 9, "label": "base"})
        assert "size: 9" in (work / "dvc.lock").read_text()
    assert (repo / "params.yaml").read_text() == PARAMS and "size: 3" in (repo / "dvc.lock").read_text()
    assert not work.exists() and sh(repo, "git", "worktree", "list").count("\n") == 1
    assert "params.yaml is untouched" in logged[-1]


def test_no_overrides_means_the_repository_itself(repo):
    with scratch_workspace(repo, {}, dvc_executable()) as work:
        assert work == repo


def test_an_unknown_override_fails_before_any_worktree_exists(repo):
    with pytest.raises(PapersimError, match="step has no key 'sise'"):
        with scratch_workspace(repo, {"step.sise": 9}, dvc_executable()):
            pass
    assert not (repo / RUNS).exists()


KILLED = """
import sys, time
from pathlib import Path
from papersim.env import dvc_executable
from papersim.lifecycle.workspace import retrain_lock, scratch_workspace
with retrain_lock(Path(sys.argv[1]), 0), scratch_workspace(Path(sys.argv[1]), {"step.size": 7}, dvc_executable()):
    print("inside", flush=True)
    time.sleep(120)
"""


def test_a_killed_run_leaves_params_intact_and_the_next_one_clears_its_leftovers(repo):
    run = subprocess.Popen([sys.executable, "-c", KILLED, str(repo)], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    while (line := run.stdout.readline()) and line.strip() != "inside":
        pass
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert (repo / "params.yaml").read_text() == PARAMS
    assert len(list((repo / RUNS).iterdir())) == 1 and json.loads((repo / OWNER).read_text())["pid"] == run.pid
    logged = []
    with retrain_lock(repo, 0, logged.append):  # the dead holder's lock died with it
        removed = remove_leftovers(repo, logged.append)
    assert len(removed) == 1 and not removed[0].exists()
    assert "ended without releasing its hold" in logged[0] and "interrupted run" in logged[1]
    assert sh(repo, "git", "worktree", "list").count("\n") == 1 and not (repo / OWNER).exists()


def test_a_refresh_behind_a_retrain_says_whom_it_waits_for_then_runs(repo):
    import threading

    logged, order = [], []
    with retrain_lock(repo, 0, flow="retrain"):
        def refresh() -> None:
            with retrain_lock(repo, 30, logged.append, flow="refresh"):
                order.append("refresh")
        waiting = threading.Thread(target=refresh)
        waiting.start()
        time.sleep(0.5)
        order.append("retrain done")
    waiting.join(timeout=30)
    assert order == ["retrain done", "refresh"]  # it waited, and was not lost
    assert logged[0].startswith("refresh: waiting up to 30 s") and '"flow": "retrain"' in logged[0]


def test_a_live_holder_is_named_when_the_lock_is_taken(repo):
    with retrain_lock(repo, 0):
        start = time.monotonic()
        with pytest.raises(PapersimError, match=rf"another retrain or refresh is running .*\"pid\": {os.getpid()}"):
            with retrain_lock(repo, 0.5):
                pass
        assert time.monotonic() - start >= 0.5


# Scratch folders as a killed run left them: named by tempfile (as before names carried their writer: the
# ingest stage's spill, the registration's staging, the champion's re-scoring) and by scratch_folder.
KILLED_SCRATCH = """
import sys, tempfile, time
from pathlib import Path
from papersim.atomic import scratch_folder
root = Path(sys.argv[1])
folders = [tempfile.TemporaryDirectory(dir=root / "data/processed", prefix=".ingest-"),
           tempfile.TemporaryDirectory(dir=root / "cache/registry"), tempfile.TemporaryDirectory(dir=root / "cache")]
with scratch_folder(root / "cache", "rescore") as stamped:
    for folder in [Path(f.name) for f in folders] + [stamped]:
        (folder / "part.bin").write_text("half")
    print("inside", flush=True)
    time.sleep(120)
"""


def test_scratch_folders_of_a_killed_run_are_removed_under_the_lock(tmp_path):
    from papersim.atomic import scratch_folder

    for folder in ("data/processed", "cache/registry/papersim-v1", "cache/tmpnotes1"):  # a version, a user's folder
        (tmp_path / folder).mkdir(parents=True)
    run = subprocess.Popen([sys.executable, "-c", KILLED_SCRATCH, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert run.stdout.readline().strip() == "inside"
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert len(list(tmp_path.rglob("part.bin"))) == 4
    logged = []
    with scratch_folder(tmp_path / "cache", "rescore") as live, retrain_lock(tmp_path, 0, logged.append):
        remove_leftovers(tmp_path, logged.append)
        assert live.is_dir()  # its writer runs
    assert list(tmp_path.rglob("part.bin")) == [] and len(logged) == 4, logged
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_dir()) == [
        ".papersim", "cache", "cache/registry", "cache/registry/papersim-v1", "cache/tmpnotes1", "data",
        "data/processed"]

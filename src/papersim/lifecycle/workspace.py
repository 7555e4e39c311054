"""The retraining flow's hold on a repository: one run at a time, and a scratch workspace for a run
with params overrides.

A file lock serialises runs (its owner file names the holder's pid and start time). A run with
overrides never edits the repository's params.yaml: it runs in a scratch git worktree under
`.papersim/runs/` holding the repository's current files (uncommitted changes included), the
overrides applied to its params.yaml, DVC outputs checked out from the repository's own cache and
the embedding cache shared. Its dvc.lock and params.yaml record what the stages used and go into
the registered version; the repository's files stay byte-identical whatever happens to the run.
A scratch workspace left by a killed run is found and removed by the next run, and so are the
scratch folders it left in the output folders.
"""

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from papersim.atomic import sweep
from papersim.config import override_params
from papersim.errors import PapersimError

LOCK = ".papersim/retrain.lock"
OWNER = ".papersim/retrain.owner.json"
RUNS = ".papersim/runs"  # scratch workspaces of runs with overrides (one at a time: the lock)
OUTPUT_FOLDERS = ("data", "models", "artifacts", "reports", "cache")  # where stages and caches write atomically
SHARED = ("cache",)  # side stores the scratch workspace shares with the repository (embeddings, registry copies)
# Scratch folders named by tempfile before their names carried their writer (the ingest stage's spill, the
# registration's staging, the champion's re-scoring): (folder, glob, tempfile's name: prefix + 8 characters).
UNSTAMPED_SCRATCH = (("data", "**/.ingest-*", re.compile(r"\.ingest-[a-z0-9_]{8}")),
                     ("cache", "tmp*", re.compile(r"tmp[a-z0-9_]{8}")),
                     ("cache/registry", "tmp*", re.compile(r"tmp[a-z0-9_]{8}")))


class LockHeld(PapersimError):
    """The repository is held by a run the caller does not wait for (retrain_lock's `skip_behind`)."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"held by {holder}")
        self.holder = holder


def _holder_flow(holder: str) -> str | None:
    try:
        return json.loads(holder).get("flow")
    except (ValueError, AttributeError):
        return None


@contextmanager
def retrain_lock(root: Path, timeout_s: float, log: Callable[[str], None] = print,
                 flow: str = "retrain", skip_behind: tuple[str, ...] = ()) -> Iterator[None]:
    """One writer at a time per repository (a retrain or a refresh); the holder's flow, pid and start time
    name the culprit. A run that finds the lock held says whom it waits for, then waits up to `timeout_s`;
    held by a flow in `skip_behind`, it does not wait: LockHeld names the holder.
    An owner file whose process is gone (a killed run; the lock itself died with it) is reported."""
    lock_path, owner = root / LOCK, root / OWNER
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = owner.read_text(encoding="utf-8").strip() if owner.is_file() else "unknown holder"
        if _holder_flow(holder) in skip_behind:
            raise LockHeld(holder) from None
        if timeout_s > 0:
            log(f"{flow}: waiting up to {timeout_s:.0f} s for the run holding {root} ({holder})")
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise PapersimError(f"another retrain or refresh is running in {root} ({holder}); waited "
                                f"{timeout_s:.0f} s. Wait for it, or raise retrain.lock_timeout_s "
                                "(retrain.refresh_lock_timeout_s for a refresh)") from None
    try:
        if owner.is_file():
            log(f"an earlier run ended without releasing its hold ({owner.read_text(encoding='utf-8').strip()}):"
                " it was killed; recovering")
        owner.write_text(json.dumps({"flow": flow, "pid": os.getpid(),
                                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise PapersimError(f"git {' '.join(args)} in {root} failed: {proc.stderr.strip()}")
    return proc.stdout


def _dvc(root: Path, dvc: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([dvc, *args], cwd=root, capture_output=True, text=True)


def remove_leftovers(root: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Remove scratch workspaces and scratch folders left by killed runs and finish the output commits
    they interrupted (papersim.atomic.sweep of the outputs' folders; call under the lock). Returns the
    workspaces removed."""
    for line in sweep(root / name for name in OUTPUT_FOLDERS):
        log(line)
    _remove_unstamped_scratch(root, log)
    runs = root / RUNS
    found = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    for folder in found:
        log(f"removing the scratch workspace of an interrupted run: {folder}")
        shutil.rmtree(folder, ignore_errors=True)
    if found:
        _git(root, "worktree", "prune")
    return found


def _remove_unstamped_scratch(root: Path, log: Callable[[str], None]) -> None:
    """Scratch folders without their writer in their name: only the lock (no other run, so no live
    writer of this repository) makes removing them safe."""
    for folder, pattern, name in UNSTAMPED_SCRATCH:
        for path in sorted((root / folder).glob(pattern)):
            if name.fullmatch(path.name) and path.is_dir() and not path.is_symlink():
                log(f"removing the scratch folder of an interrupted run: {path}")
                shutil.rmtree(path, ignore_errors=True)


def _copy_workspace_changes(root: Path, scratch: Path) -> None:
    """Make the worktree (at HEAD) hold root's git-visible files: modified, deleted and untracked."""
    changed = [p for p in _git(root, "diff", "--name-only", "-z", "HEAD").split("\0") if p]
    untracked = [p for p in _git(root, "ls-files", "--others", "--exclude-standard", "-z").split("\0") if p]
    for rel in changed + untracked:
        if Path(rel).parts[0] in (*SHARED, Path(RUNS).parts[0]):  # shared, not copied; never the runs themselves
            continue
        src, dst = root / rel, scratch / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        elif dst.is_file():
            dst.unlink()


@contextmanager
def scratch_workspace(root: Path, overrides: dict[str, Any], dvc: str,
                      log: Callable[[str], None] = print) -> Iterator[Path]:
    """`root` itself without overrides; else a scratch worktree of root's current files with the
    overrides in its params.yaml, removed when the block ends (the next run removes it if this
    one is killed). Unknown override keys fail here, before anything runs."""
    if not overrides:
        yield root
        return
    changed = override_params((root / "params.yaml").read_text(encoding="utf-8"), overrides,
                              str(root / "params.yaml"))
    _git(root, "rev-parse", "--verify", "HEAD")  # a worktree needs a commit: a clear error if none
    scratch = root / RUNS / f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    _git(root, "worktree", "add", "--detach", "-q", str(scratch), "HEAD")
    try:
        _copy_workspace_changes(root, scratch)
        (scratch / "params.yaml").write_text(changed, encoding="utf-8")
        cache_dir = _dvc(root, dvc, "cache", "dir").stdout.strip()
        if (root / ".dvc/config.local").is_file():
            shutil.copy2(root / ".dvc/config.local", scratch / ".dvc/config.local")
        configured = _dvc(scratch, dvc, "config", "--local", "cache.dir", cache_dir)
        if configured.returncode:
            raise PapersimError(f"dvc config in {scratch} failed: {configured.stderr.strip()}")
        for name in SHARED:
            (root / name).mkdir(exist_ok=True)
            (scratch / name).symlink_to(root / name, target_is_directory=True)
        checkout = _dvc(scratch, dvc, "checkout", "--quiet")
        if checkout.returncode:  # an output missing from the cache: its stage runs again
            log(f"dvc checkout in the scratch workspace: {checkout.stderr.strip()[-500:]}")
        log(f"running with overrides {overrides} in a scratch workspace ({scratch}); params.yaml is untouched")
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _git(root, "worktree", "prune")


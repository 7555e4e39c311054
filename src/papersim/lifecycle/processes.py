"""Processes started by the retraining flow, and what stops them when the flow is gone.

Each stage runs in its own process group (a timeout stops the stage's children too), its output
passed on line by line as it comes (a user sees each stage's progress). A watchdog, a process of
its own, kills everything a run started when the run's process dies, however it died: SIGKILL, the
OOM killer or a preempted node never reach a `finally`. A SIGTERM to the watchdog itself kills them too
before it exits (the run then stops before its next stage).

How the watchdog finds a run's processes without depending on when it looks:
- a run marker: `watchdog()` puts PAPERSIM_RUN=<unique id> into the process's environment before
  anything is started, so every process the run starts (dvc, a stage, its workers, Prefect's
  temporary server, and what they start in turn) inherits it, whoever its parent is by then. When
  the run's process is gone the watchdog kills every process carrying that marker (read from
  /proc/<pid>/environ), including orphans reparented to init between two looks;
- the run's descendants and their process groups, noted every 0.5 s, for a process that cleared
  its environment (a group survives its leader, and its members keep it after reparenting);
- the run's death is seen at once: the watchdog reads a pipe only the run's process holds, and its
  end of file means the process is gone.
flows.retrain's command starts the watchdog before Prefect starts its temporary server and keeps it
until the process exits (Prefect stops that server at exit), so no moment of a run is unwatched; a
watchdog that cannot start, or dies, stops the run before the next stage with a clear error.

    python -m papersim.lifecycle.processes WATCHED_PID RUN_ID   # the watchdog (started by `watchdog()`)
"""

import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from papersim.errors import PapersimError

WATCH_INTERVAL_S = 0.5  # how often the watchdog notes descendants (the run marker does not depend on it)
RUN_ENV = "PAPERSIM_RUN"  # the run marker every process of a run inherits
READY_TIMEOUT_S = 60  # the watchdog imports psutil and says "ready" (well under a second when idle)


class StageFailed(RuntimeError):
    """A stage process failed or ran out of time; the message ends with its output's tail."""


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_process(cmd: list[str], root: Path, env: dict[str, str], timeout_s: float, what: str,
                on_line: Callable[[str], None] | None = None) -> str:
    """Run `cmd` in `root` in a new process group; each output line goes to `on_line` as it arrives.
    A timeout, or anything raised while waiting (a Prefect task timeout, a cancellation), stops
    the whole group before it propagates, so a retry never overlaps the stage. Returns the output."""
    dog = active_watchdog()
    if dog is not None:
        dog.check(what)
        env = {**env, RUN_ENV: dog.run_id}  # the marker the watchdog finds the stage's processes by
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, bufsize=1)
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None and line.strip():
                on_line(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        reader.join(timeout=10)
        raise StageFailed(f"{what}: no result after {timeout_s:.0f} s; stopped\n{''.join(lines)[-4000:]}") from None
    except BaseException:
        _stop_group(proc)
        raise
    reader.join(timeout=10)
    out = "".join(lines)
    if proc.returncode != 0:
        raise StageFailed(f"{what} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return out


class WatchdogUnavailable(PapersimError):
    """The watchdog did not start, or died: a run must not go on without it."""


class Watchdog:
    """The watchdog process of one run: its marker, and the pipe whose end of file tells it the run died."""

    def __init__(self, watched: int, run_id: str) -> None:
        self.watched, self.run_id = watched, run_id
        self.process = subprocess.Popen([sys.executable, "-m", "papersim.lifecycle.processes", str(watched), run_id],
                                        start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.process.stdout], [], [], READY_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.process.kill()
            _, err = self.process.communicate()
            reason = (err or line).strip()[-2000:] or "none"
            raise WatchdogUnavailable(
                "the watchdog did not start, so nothing was started: a killed run would leave its processes "
                f"(dvc, stages, Prefect's temporary server) running. Its error: {reason}")
        self.process.stdout.close()  # nothing more comes (the watchdog writes to /dev/null from here)
        self.process.stderr.close()

    def check(self, before: str) -> None:
        """Raise before `before` is started when the watchdog died (a killed helper)."""
        if self.process.poll() is not None:
            raise WatchdogUnavailable(f"the watchdog (pid {self.process.pid}) exited with {self.process.returncode}: "
                                      f"stopping before {before}, which a kill of this run would then leave running")

    def stand_down(self) -> None:
        """The run finished: the watchdog exits without killing anything."""
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.process.wait()


_ACTIVE: list[Watchdog] = []  # the watchdog over this process, if any (run_process checks it is alive)


def active_watchdog() -> Watchdog | None:
    dog = _ACTIVE[-1] if _ACTIVE else None
    return dog if dog is not None and dog.watched == os.getpid() else None


@contextmanager
def watchdog(until_exit: bool = False) -> Iterator[Watchdog]:
    """A watchdog over this process for the block: if the process dies inside it, the watchdog kills every
    process the block started (see the module's docstring). Leaving the block normally stands it down;
    `until_exit` keeps it until the process exits (a command's whole life, Prefect's shutdown included).
    Under a watchdog already watching this process, the block uses that one. Raises WatchdogUnavailable
    if it cannot start."""
    current = active_watchdog()
    if current is not None:
        yield current
        return
    run_id = uuid.uuid4().hex
    previous = os.environ.get(RUN_ENV)
    os.environ[RUN_ENV] = run_id  # before the watchdog exists: everything from here on carries it
    try:
        dog = Watchdog(os.getpid(), run_id)
    except BaseException:
        _restore(previous)
        raise
    _ACTIVE.append(dog)
    if until_exit:
        yield dog
        return
    try:
        yield dog
    finally:
        _ACTIVE.remove(dog)
        dog.stand_down()
        _restore(previous)


def _restore(previous: str | None) -> None:
    if previous is None:
        os.environ.pop(RUN_ENV, None)
    else:
        os.environ[RUN_ENV] = previous


def _descendants(process: psutil.Process) -> dict[int, float]:
    found = {}
    for child in process.children(recursive=True):
        try:
            found[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            pass
    return found


def kill_leftovers(seen: dict[int, float]) -> list[int]:
    """SIGKILL the processes in `seen` (pid -> start time) still running, and their descendants;
    a pid reused by a newer process is left alone. Returns the pids killed."""
    targets: dict[int, psutil.Process] = {}
    for pid, created in seen.items():
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - created) > 1e-3:
                continue
            targets[pid] = process
            for child in process.children(recursive=True):
                targets[child.pid] = child
        except psutil.NoSuchProcess:
            pass
    kill_all(targets.values())
    return sorted(targets)


def kill_all(processes) -> None:
    """SIGKILL each process; one already gone is fine."""
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def marked(run_id: str, exclude: set[int] = frozenset()) -> list[psutil.Process]:
    """Every process whose environment carries run marker `run_id` (those this user may read)."""
    found = []
    for process in psutil.process_iter():
        if process.pid in exclude:
            continue
        try:
            if process.environ().get(RUN_ENV) == run_id and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            pass
    return found


def kill_run(run_id: str, seen: dict[int, float], groups: dict[int, float], exclude: set[int]) -> list[int]:
    """SIGKILL the run's processes: those carrying its marker, those seen (pid -> start time), the members
    of its stages' process groups (pgid -> the leader's start time; a reused group id is left alone);
    again until none is found (a dying parent may have started one meanwhile). Returns the pids killed."""
    killed: set[int] = set(kill_leftovers(seen))
    for _ in range(5):
        targets = {p.pid: p for p in marked(run_id, exclude | killed)}
        for pgid, created in groups.items():
            try:
                leader = psutil.Process(pgid)
                if abs(leader.create_time() - created) > 1e-3:
                    continue  # the group id now names another group
            except psutil.NoSuchProcess:
                pass  # a group outlives its leader: its members keep its id
            for process in psutil.process_iter():
                try:
                    if process.pid not in exclude and os.getpgid(process.pid) == pgid:
                        targets[process.pid] = process
                except (ProcessLookupError, psutil.NoSuchProcess):
                    pass
        kill_all(targets.values())
        killed |= set(targets)
        if not targets:
            break
        time.sleep(0.1)
    return sorted(killed)


class _Terminated(Exception):
    """SIGTERM reached the watchdog."""


def _terminated(*_) -> None:
    raise _Terminated


def watch(pid: int, run_id: str = "", interval_s: float = WATCH_INTERVAL_S) -> None:
    """Until `pid` dies (or its pipe on stdin ends), note its descendants and their process groups every
    `interval_s`; then kill what the run left. A "stop" line on stdin stands the watchdog down. SIGTERM
    (a shutdown, a user) kills what the run started too before the watchdog exits: a run without its
    watchdog must not go on (its next stage would refuse to start anyway)."""
    me = os.getpid()
    seen: dict[int, float] = {}
    groups: dict[int, float] = {}
    signal.signal(signal.SIGTERM, _terminated)
    try:
        if not _follow(pid, me, seen, groups, interval_s):
            return
    except _Terminated:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup runs to its end
    kill_run(run_id, seen, groups, {me, pid})


def _follow(pid: int, me: int, seen: dict[int, float], groups: dict[int, float], interval_s: float) -> bool:
    """Note `pid`'s descendants (pid -> start time) and their groups in `seen` and `groups` until it dies:
    True; False when it was gone from the start, or the watchdog was stood down."""
    try:
        watched = psutil.Process(pid)
        own_groups = {os.getpgid(pid), os.getpgid(me)}  # never signal these groups: the caller's shell may be in one
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    print("ready", flush=True)
    quiet = os.open(os.devnull, os.O_WRONLY)  # the caller stops reading: nothing written may fail or block
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], interval_s)
        if readable:
            line = sys.stdin.readline()
            if line.strip() == "stop":
                return False
            if line == "":  # end of file: the run's process is gone (only it held the pipe)
                return True
        try:
            if not watched.is_running() or watched.status() == psutil.STATUS_ZOMBIE:
                return True
            for child, created in _descendants(watched).items():
                if child == me:  # the watchdog is the watched process's child too
                    continue
                seen[child] = created
                try:
                    group = os.getpgid(child)
                    if group not in own_groups and group not in groups:
                        groups[group] = psutil.Process(group).create_time()
                except (ProcessLookupError, psutil.NoSuchProcess):
                    pass
        except psutil.NoSuchProcess:
            return True


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")

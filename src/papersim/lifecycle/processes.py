"""Processes started by the retraining flow, and what stops them when the flow is gone.

Each stage runs in its own process group (a timeout stops the stage's children too), its output
passed on line by line as it comes (a user sees each stage's progress). A watchdog, a process of
its own, notes the flow's descendants while the flow lives (dvc, the stage, its workers, Prefect's
temporary server) and kills them when the flow dies, however it died: SIGKILL, the OOM killer or
a preempted node never reach a `finally`.

    python -m papersim.lifecycle.processes WATCHED_PID   # the watchdog (started by `watchdog()`)
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

WATCH_INTERVAL_S = 0.5  # how often the watchdog notes descendants: a stage lives for seconds at least


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


@contextmanager
def watchdog(pid: int | None = None) -> Iterator[subprocess.Popen]:
    """A watchdog over `pid` (this process) for the block: if the process dies inside it, the
    watchdog kills every descendant it saw. Leaving the block normally stands the watchdog down."""
    dog = subprocess.Popen([sys.executable, "-m", "papersim.lifecycle.processes", str(pid or os.getpid())],
                           start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        yield dog
    finally:
        dog.terminate()  # SIGTERM: the watched process is alive and finished; kill nothing
        dog.wait()


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
    for process in targets.values():
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return sorted(targets)


def watch(pid: int, interval_s: float = WATCH_INTERVAL_S) -> None:
    """Until `pid` dies, note its descendants every `interval_s`; then kill those still alive."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        watched = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    seen: dict[int, float] = {}
    while True:
        try:
            if not watched.is_running() or watched.status() == psutil.STATUS_ZOMBIE:
                break
            seen.update(_descendants(watched))
            seen.pop(os.getpid(), None)  # the watchdog is the watched process's child too
        except psutil.NoSuchProcess:
            break
        time.sleep(interval_s)
    kill_leftovers(seen)


if __name__ == "__main__":
    watch(int(sys.argv[1]))

"""Stage processes started by the retraining flow: each in its own process group (a timeout stops its
children too), its output passed on line by line as it comes (a user sees each stage's progress)."""

import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path


class StageFailed(RuntimeError):
    """A stage process failed or ran out of time; the message ends with its output's tail."""


def run_process(cmd: list[str], root: Path, env: dict[str, str], timeout_s: float, what: str,
                on_line: Callable[[str], None] | None = None) -> str:
    """Run `cmd` in `root` in a new process group (a timeout stops the stage's children too); each
    output line goes to `on_line` as it arrives. Returns the whole output."""
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
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        reader.join(timeout=10)
        raise StageFailed(f"{what}: no result after {timeout_s:.0f} s; stopped\n{''.join(lines)[-4000:]}") from None
    reader.join(timeout=10)
    out = "".join(lines)
    if proc.returncode != 0:
        raise StageFailed(f"{what} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return out

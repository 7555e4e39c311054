"""Stage processes started by the retraining flow: each in its own process group, stopped with it."""

import os
import signal
import subprocess
from pathlib import Path


class StageFailed(RuntimeError):
    """A stage process failed or ran out of time; the message ends with its output's tail."""


def run_process(cmd: list[str], root: Path, env: dict[str, str], timeout_s: float, what: str) -> str:
    """Run `cmd` in `root` in a new process group (a timeout stops the stage's children too); its output."""
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate()
        raise StageFailed(f"{what}: no result after {timeout_s:.0f} s; stopped\n{out[-4000:]}") from None
    if proc.returncode != 0:
        raise StageFailed(f"{what} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return out

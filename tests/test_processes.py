"""Stage processes: output line by line as it comes, failures and timeouts with the output's tail."""

import sys
import time

import psutil
import pytest

from papersim.lifecycle.processes import StageFailed, run_process

ENV = {"PYTHONUNBUFFERED": "1", "PATH": ""}


def test_lines_arrive_while_the_process_runs(tmp_path):
    seen = []
    script = "import time\nfor i in range(3):\n    print(f'step {i}')\n    time.sleep(0.3)\n"
    out = run_process([sys.executable, "-c", script], tmp_path, ENV, 30, "steps",
                      on_line=lambda line: seen.append((line, time.monotonic())))
    assert [line for line, _ in seen] == ["step 0", "step 1", "step 2"] and out == "step 0\nstep 1\nstep 2\n"
    assert seen[-1][1] - seen[0][1] >= 0.5  # delivered as printed, not all at the end


def test_a_failure_names_the_command_and_ends_with_its_output(tmp_path):
    with pytest.raises(StageFailed, match=r"(?s)dvc repro x failed \(exit 3\):\n.*boom"):
        run_process([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path, ENV, 30, "dvc repro x")


def test_a_timeout_stops_the_whole_process_group(tmp_path):
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(child.pid, flush=True)\ntime.sleep(60)\n")
    pids = []
    with pytest.raises(StageFailed, match="no result after 2 s; stopped"):
        run_process([sys.executable, "-c", script], tmp_path, ENV, 2, "slow", on_line=pids.append)
    time.sleep(0.5)
    child = int(pids[0])
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE

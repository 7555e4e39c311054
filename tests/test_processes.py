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


def test_anything_raised_while_waiting_stops_the_group_first(tmp_path):
    # Prefect's task timeout raises inside the waiting thread, as this alarm does: the stage must not
    # outlive the attempt (a retry would overlap it).
    import signal

    def timeout(*_):
        raise TimeoutError("task timed out")

    pids = []
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(2)
    try:
        with pytest.raises(TimeoutError):
            run_process([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"],
                        tmp_path, ENV, 60, "stage", on_line=pids.append)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(0.3)
    assert not psutil.pid_exists(int(pids[0])) or psutil.Process(int(pids[0])).status() == psutil.STATUS_ZOMBIE


FLOW = """
import subprocess, sys, time
from papersim.lifecycle.processes import watchdog
with watchdog():
    group = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
                              "time.sleep(120)"],
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(group.pid, flush=True)
    time.sleep(float(sys.argv[1]))
print("done", flush=True)
"""


def _gone(pids: list[int]) -> bool:
    return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE for p in pids)


def test_the_watchdog_kills_what_a_killed_process_started(tmp_path):
    import subprocess

    flow = subprocess.Popen([sys.executable, "-c", FLOW, "120"], stdout=subprocess.PIPE, text=True)
    group = int(flow.stdout.readline())
    time.sleep(1.5)  # the watchdog has seen the group and its child
    started = [group] + [c.pid for c in psutil.Process(group).children(recursive=True)]
    assert len(started) == 2
    flow.kill()  # SIGKILL: no finally runs in the flow
    flow.wait()
    deadline = time.monotonic() + 5
    while not _gone(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(started)


def test_leaving_the_block_stands_the_watchdog_down(tmp_path):
    import subprocess

    flow = subprocess.run([sys.executable, "-c", FLOW, "1.5"], capture_output=True, text=True, timeout=60)
    group = int(flow.stdout.split()[0])
    assert flow.stdout.split()[1] == "done"
    time.sleep(1)
    try:
        assert psutil.Process(group).is_running()  # left running on purpose by the block: not killed
    finally:
        for p in [group] + [c.pid for c in psutil.Process(group).children(recursive=True)]:
            psutil.Process(p).kill()


# A child that starts a grandchild in a session of its own and exits at once: the grandchild is reparented
# to init before the watchdog's first look (0.5 s), and the flow is killed right then.
ORPHANING_FLOW = """
import subprocess, sys, time
from papersim.lifecycle.processes import watchdog
with watchdog(until_exit=sys.argv[1] == "until_exit"):
    middle = subprocess.run([sys.executable, "-c", "import subprocess, sys; print(subprocess.Popen([sys.executable, "
                             "'-c', 'import time; time.sleep(120)'], start_new_session=True, "
                             "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"],
                            capture_output=True, text=True)
    print(middle.stdout.strip(), flush=True)
    if sys.argv[1] == "sleep":
        time.sleep(120)
"""


def test_a_grandchild_orphaned_between_two_looks_dies_with_the_killed_flow(tmp_path):
    import subprocess

    flow = subprocess.Popen([sys.executable, "-c", ORPHANING_FLOW, "sleep"], stdout=subprocess.PIPE, text=True)
    orphan = int(flow.stdout.readline())
    assert psutil.Process(orphan).ppid() == 1 or psutil.Process(orphan).ppid() != flow.pid  # not the flow's
    flow.kill()
    flow.wait()
    deadline = time.monotonic() + 5
    while not _gone([orphan]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone([orphan])


def test_until_exit_keeps_the_watchdog_after_the_block_and_clears_what_the_process_left(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, "-c", ORPHANING_FLOW, "until_exit"], capture_output=True, text=True,
                          timeout=60)
    orphan = int(done.stdout.split()[0])  # the process exited normally, leaving its grandchild behind
    deadline = time.monotonic() + 5
    while not _gone([orphan]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone([orphan])


def test_a_watchdog_that_cannot_start_stops_the_run_with_the_reason(tmp_path, monkeypatch):
    import os

    from papersim.lifecycle.processes import RUN_ENV, WatchdogUnavailable, watchdog

    (tmp_path / "psutil.py").write_text("raise ImportError('a broken psutil for this test')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the watchdog's interpreter imports this one
    with pytest.raises(WatchdogUnavailable, match=r"(?s)did not start, so nothing was started.*broken psutil"):
        with watchdog():
            raise AssertionError("the block ran without a watchdog")
    assert RUN_ENV not in os.environ


def test_a_dead_watchdog_stops_the_run_before_the_next_stage(tmp_path):
    from papersim.lifecycle.processes import WatchdogUnavailable, watchdog

    with watchdog() as dog:
        dog.process.kill()
        dog.process.wait()
        with pytest.raises(WatchdogUnavailable, match="stopping before dvc repro x"):
            run_process([sys.executable, "-c", "print('ran')"], tmp_path, ENV, 30, "dvc repro x")


def test_stages_carry_the_run_marker_and_the_marker_ends_with_the_block(tmp_path):
    import os

    from papersim.lifecycle.processes import RUN_ENV, watchdog

    with watchdog() as dog:
        out = run_process([sys.executable, "-c", f"import os; print(os.environ['{RUN_ENV}'])"], tmp_path, ENV, 30, "x")
        assert out.strip() == dog.run_id == os.environ[RUN_ENV]
    assert RUN_ENV not in os.environ and dog.process.returncode == 0  # stood down, nothing killed


# FLOW, also printing its watchdog's pid.
FLOW_AND_DOG = FLOW.replace("with watchdog():", "with watchdog() as dog:").replace(
    "print(group.pid, flush=True)", "print(group.pid, dog.process.pid, flush=True)")


def test_sigterm_to_the_watchdog_kills_what_the_run_started_then_it_exits(tmp_path):
    import os
    import signal
    import subprocess

    flow = subprocess.Popen([sys.executable, "-c", FLOW_AND_DOG, "120"], stdout=subprocess.PIPE, text=True)
    started = []
    try:
        group, dog = map(int, flow.stdout.readline().split())
        time.sleep(1.5)  # the watchdog has seen the group and its child
        started = [psutil.Process(group)] + psutil.Process(group).children(recursive=True)
        assert len(started) == 2
        os.kill(dog, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not _gone([p.pid for p in started] + [dog]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone([p.pid for p in started]) and _gone([dog])  # the watchdog, the flow's child: a zombie
        assert flow.poll() is None  # the watched process itself is left to stop (before its next stage)
    finally:
        flow.kill()
        flow.wait()
        for process in started:  # what a watchdog that failed this test left
            try:
                process.kill()  # psutil checks it is still the process it was (not a reused pid)
            except psutil.NoSuchProcess:
                pass

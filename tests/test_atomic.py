import pytest

from papersim.atomic import atomic_outputs


def test_outputs_replace_previous_files_and_folders_on_success(tmp_path):
    out_file, out_dir = tmp_path / "a.parquet", tmp_path / "model"
    out_file.write_text("old")
    out_dir.mkdir()
    (out_dir / "old.bin").write_text("old")

    with atomic_outputs(out_file, out_dir) as (tmp_file, tmp_dir):
        tmp_file.write_text("new")
        tmp_dir.mkdir()
        (tmp_dir / "weights.bin").write_text("new")

    assert out_file.read_text() == "new"
    assert sorted(p.name for p in out_dir.iterdir()) == ["weights.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "model"]  # no temp leftovers


def test_a_failure_keeps_every_previous_output_and_cleans_up(tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text("good 1")
    second.write_text("good 2")

    with pytest.raises(ValueError, match="boom"), atomic_outputs(first, second) as (tmp1, _):
        tmp1.write_text("half")
        raise ValueError("boom")

    assert first.read_text() == "good 1" and second.read_text() == "good 2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.json", "second.json"]


def test_an_output_left_unwritten_is_an_error_and_commits_nothing(tmp_path):
    first, second = tmp_path / "first.json", tmp_path / "sub" / "second.json"
    first.write_text("good")
    with pytest.raises(RuntimeError, match="second.json"), atomic_outputs(first, second) as (tmp1, _):
        tmp1.write_text("new")
    assert first.read_text() == "good"
    assert not second.exists()


# Writes a new set of three outputs (a file, a folder, a file) and is SIGKILLed at move number `argv[2]`
# (0: while writing, before the journal).
KILLED_COMMIT = """
import os, signal, sys
from pathlib import Path
from papersim import atomic

root, at = Path(sys.argv[1]), int(sys.argv[2])
moves = []
real_move = atomic._move

def move(*args):
    moves.append(args)
    if len(moves) == at:
        os.kill(os.getpid(), signal.SIGKILL)
    real_move(*args)

atomic._move = move
with atomic.atomic_outputs(root / "report.json", root / "index", root / "table.md") as (report, index, table):
    report.write_text("new")
    index.mkdir()
    (index / "vectors.bin").write_text("new")
    if at == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    table.write_text("new")
"""


def _old_set(root):
    (root / "report.json").write_text("old")
    (root / "index").mkdir()
    (root / "index/vectors.bin").write_text("old")
    (root / "table.md").write_text("old")


def _contents(root):
    return [(root / "report.json").read_text(), (root / "index/vectors.bin").read_text(),
            (root / "table.md").read_text()]


@pytest.mark.parametrize("at", [2, 3])
def test_a_commit_killed_between_two_moves_is_finished_by_the_sweep(tmp_path, at):
    import subprocess
    import sys

    from papersim.atomic import sweep

    _old_set(tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILLED_COMMIT, str(tmp_path), str(at)], capture_output=True)
    assert killed.returncode == -9
    assert "new" in _contents(tmp_path) or not (tmp_path / "index").exists()  # a mix: some moved, some not
    assert (tmp_path / ".report.json.commit.json").is_file()
    done = sweep([tmp_path])
    assert done and _contents(tmp_path) == ["new", "new", "new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "report.json", "table.md"]


def test_a_kill_before_the_commit_leaves_the_old_set_and_the_next_writer_clears_the_leftovers(tmp_path):
    import subprocess
    import sys

    from papersim.atomic import atomic_outputs, sweep

    _old_set(tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILLED_COMMIT, str(tmp_path), "0"], capture_output=True)
    assert killed.returncode == -9 and _contents(tmp_path) == ["old", "old", "old"]
    assert len(list(tmp_path.glob(".*.tmp-*"))) == 2  # the report and the index, half-written
    assert len(sweep([tmp_path])) == 2 and _contents(tmp_path) == ["old", "old", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "report.json", "table.md"]
    # The stage writing the set again finishes an interrupted commit before its own.
    subprocess.run([sys.executable, "-c", KILLED_COMMIT, str(tmp_path), "2"], capture_output=True)
    with atomic_outputs(tmp_path / "report.json", tmp_path / "index", tmp_path / "table.md") as (r, i, t):
        assert _contents(tmp_path) == ["new", "new", "new"]  # what a reader sees while the stage runs
        r.write_text("newer")
        i.mkdir()
        (i / "vectors.bin").write_text("newer")
        t.write_text("newer")
    assert _contents(tmp_path) == ["newer"] * 3


def _killed_commit_journal(root):
    """The journal a writer SIGKILLed between two moves left in `root`, as a dict, and its path."""
    import json
    import subprocess
    import sys

    root.mkdir()
    _old_set(root)
    killed = subprocess.run([sys.executable, "-c", KILLED_COMMIT, str(root), "2"], capture_output=True)
    assert killed.returncode == -9
    journal = root / ".report.json.commit.json"
    return json.loads(journal.read_text()), journal


def _journal_alone(folder, record):
    """A journal `record` in `folder`, the files it moves absent (its writer has them)."""
    import json

    folder.mkdir()
    journal = folder / ".report.json.commit.json"
    journal.write_text(json.dumps(record))
    return journal


def test_a_journal_whose_pid_now_names_another_process_is_recovered(tmp_path):
    import json
    import os

    import psutil

    from papersim.atomic import sweep

    record, journal = _killed_commit_journal(tmp_path / "set")
    own_start = psutil.Process().create_time()
    assert isinstance(record["started"], float)  # the writer's start time is recorded
    live = _journal_alone(tmp_path / "live", {**record, "pid": os.getpid(), "started": own_start})
    assert sweep([tmp_path / "live"]) == [] and live.is_file()  # this very process: still committing
    journal.write_text(json.dumps({**record, "pid": os.getpid(), "started": own_start - 3600}))  # a reused pid
    assert sweep([tmp_path / "set"]) and _contents(tmp_path / "set") == ["new"] * 3 and not journal.exists()


def test_a_journal_without_a_start_time_is_judged_by_its_pid_alone(tmp_path):
    import json
    import os

    from papersim.atomic import sweep

    record, journal = _killed_commit_journal(tmp_path / "set")
    record.pop("started", None)  # as journals were written before start times were recorded
    live = _journal_alone(tmp_path / "live", {**record, "pid": os.getpid()})
    assert sweep([tmp_path / "live"]) == [] and live.is_file()
    journal.write_text(json.dumps(record))  # the killed writer's pid
    assert sweep([tmp_path / "set"]) and _contents(tmp_path / "set") == ["new"] * 3 and not journal.exists()


# Opens a scratch folder as the ingest stage, the registration and a model download do, writes into it
# and waits to be SIGKILLed.
KILLED_SCRATCH = """
import sys, time
from pathlib import Path
from papersim.atomic import scratch_folder
with scratch_folder(Path(sys.argv[1]), sys.argv[2]) as scratch:
    (scratch / "part.bin").write_text("half")
    print(scratch, flush=True)
    time.sleep(120)
"""


def _killed_scratch(parent, label):
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    writer = subprocess.Popen([sys.executable, "-c", KILLED_SCRATCH, str(parent), label], stdout=subprocess.PIPE,
                              text=True)
    scratch = Path(writer.stdout.readline().strip())
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert (scratch / "part.bin").is_file()
    return scratch, writer.pid


def test_scratch_folders_of_killed_writers_are_swept_and_a_live_writers_stays(tmp_path):
    import os

    import psutil

    from papersim.atomic import scratch_folder, sweep

    registry = tmp_path / "cache/registry"
    download, dead_pid = _killed_scratch(registry, "papersim-v3")
    staging, _ = _killed_scratch(registry, "staging")
    assert download.name.startswith(f".papersim-v3.tmp-{dead_pid}-")
    reused = registry / f".staging.tmp-{os.getpid()}-{round(psutil.Process().create_time() * 100) - 500}-0123abcd"
    reused.mkdir()  # this process's pid, another start time: a dead writer whose pid was given again
    legacy_dead, legacy_live = registry / f".papersim-v2.tmp-{dead_pid}", registry / f".papersim-v2.tmp-{os.getpid()}"
    legacy_dead.mkdir()  # a download folder as named before start times (pid only)
    legacy_live.mkdir()
    with scratch_folder(tmp_path / "data/processed", "ingest") as live:
        (live / "pass1.arrow").write_text("being written")
        done = sweep([tmp_path / "cache", tmp_path / "data"])
        assert (live / "pass1.arrow").is_file() and legacy_live.is_dir()
    assert not live.exists()  # the block removed its own
    assert sorted(os.listdir(registry)) == [legacy_live.name] and len(done) == 4

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

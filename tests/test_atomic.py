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

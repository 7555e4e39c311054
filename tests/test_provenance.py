from papersim.provenance import data_version, file_md5, git_commit, path_md5
from tests.conftest import REPO


def test_file_md5_is_the_hash_dvc_records_in_its_lock_file():
    from dvc_data.hashfile.hash import file_md5 as dvc_file_md5

    path = REPO / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl"
    assert file_md5(path) == dvc_file_md5(str(path))


def test_folder_hash_changes_with_any_file_and_data_version_combines_inputs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a.txt").write_text("a")
    before = path_md5(tmp_path / "d")
    (tmp_path / "d/b.txt").write_text("b")
    assert path_md5(tmp_path / "d") != before
    tags = data_version({"d": tmp_path / "d", "a": tmp_path / "d/a.txt"})
    assert set(tags) == {"data_version", "data_md5.a", "data_md5.d"}
    assert tags["data_md5.a"] == "0cc175b9c0f1b6a831c399e269772661"  # md5("a")


def test_git_commit_outside_a_repo_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"

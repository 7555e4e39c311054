"""The sources stage through `main()`: the manifest and the digest cache it writes, and a missing source."""

import json
import os

import yaml

from stages.sources import main
from tests.conftest import paper, write_jsonl, write_page


def test_writes_the_manifest_and_reuses_the_digests_of_unchanged_files(tmp_path, monkeypatch, stage_argv, capsys):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data/raw/a.jsonl", [paper(1)])
    write_page(tmp_path / "data/raw/pages/p.txt", [("A listed paper", "Its abstract, long enough to pass.")])
    for name in ("data/raw/a.jsonl", "data/raw/pages/p.txt"):
        os.utime(tmp_path / name, (1_600_000_000, 1_600_000_000))  # written long ago: their digests are cached
    sources = [{"path": "data/raw/a.jsonl"}, {"path": "data/raw/pages", "name": "pages"}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"sources": sources}}))
    assert main(stage_argv("sources")) == 0
    manifest = json.loads((tmp_path / "data/interim/sources.json").read_text())
    assert [[f["path"] for f in s["files"]] for s in manifest["sources"]] == [["data/raw/a.jsonl"],
                                                                               ["data/raw/pages/p.txt"]]
    assert "2 hashed, 0 unchanged" in capsys.readouterr().out
    assert main(stage_argv("sources")) == 0
    assert "0 hashed, 2 unchanged" in capsys.readouterr().out
    assert json.loads((tmp_path / "data/interim/sources.json").read_text()) == manifest


def test_a_missing_source_is_one_line_and_the_manifest_stays(tmp_path, monkeypatch, stage_argv, capsys):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data/raw/a.jsonl", [paper(1)])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"sources": [{"path": "data/raw/a.jsonl"}]}}))
    assert main(stage_argv("sources")) == 0
    before = (tmp_path / "data/interim/sources.json").read_bytes()
    sources = [{"path": "data/raw/a.jsonl"}, {"path": "data/raw/new.csv", "name": "new"}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"sources": sources}}))
    capsys.readouterr()
    assert main(stage_argv("sources")) == 1
    assert capsys.readouterr().err == ("error: data/raw/new.csv: no such file or folder (source 'new' in params.yaml "
                                       "ingest.sources)\n")
    assert (tmp_path / "data/interim/sources.json").read_bytes() == before

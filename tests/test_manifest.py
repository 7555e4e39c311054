"""The sources manifest: what makes DVC rerun ingest (content, the list of sources, a folder's files) and what
must not (a touched file), and the digest cache that spares re-reading an unchanged corpus."""

import json
import os

import pytest
import yaml

from papersim.config import load_section
from papersim.data.ingest import IngestConfig
from papersim.data.manifest import DigestCache, source_manifest
from papersim.errors import PapersimError
from tests.conftest import paper, write_jsonl, write_page

LONG_AGO = 1_600_000_000  # an mtime far from "now": the file's digest may be cached


def sources(tmp_path, extra: list[dict]) -> IngestConfig:
    """params.yaml's ingest section as a user edits it: the bundled-like source plus `extra`."""
    params = {"ingest": {"sources": [{"path": "data/raw/a.jsonl", "name": "arxiv"}, *extra]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return load_section(tmp_path / "params.yaml", "ingest", IngestConfig)


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as params.yaml gives them
    write_jsonl(tmp_path / "data/raw/a.jsonl", [paper(1), paper(2)])
    write_jsonl(tmp_path / "elsewhere/fresh.jsonl", [paper(10)])
    return tmp_path


def files_of(manifest: dict, name: str) -> list[dict]:
    return next(s["files"] for s in manifest["sources"] if s["name"] == name)


def test_appending_to_a_source_added_through_params_changes_only_its_digest(corpus):
    fresh = str(corpus / "elsewhere/fresh.jsonl")  # anywhere on disk: an absolute path
    before = source_manifest(sources(corpus, [{"path": fresh, "name": "fresh"}]).sources)
    assert [(s["name"], s["path"], s["format"]) for s in before["sources"]] == [
        ("arxiv", "data/raw/a.jsonl", "jsonl"), ("fresh", fresh, "jsonl")]
    assert [f["path"] for f in files_of(before, "arxiv")] == ["data/raw/a.jsonl"]  # as given: relative
    with open(fresh, "a", encoding="utf-8") as f:
        f.write(json.dumps(paper(11)) + "\n")
    after = source_manifest(sources(corpus, [{"path": fresh, "name": "fresh"}]).sources)
    assert files_of(after, "fresh")[0]["md5"] != files_of(before, "fresh")[0]["md5"]
    assert files_of(after, "arxiv") == files_of(before, "arxiv")
    assert source_manifest(sources(corpus, []).sources) != before  # a source removed from params


def test_a_touched_but_unchanged_source_gives_the_same_manifest(corpus):
    specs = sources(corpus, [{"path": "elsewhere/fresh.jsonl", "name": "fresh"}]).sources
    cache = DigestCache()
    before = json.dumps(source_manifest(specs, cache.digest))
    os.utime(corpus / "elsewhere/fresh.jsonl", (LONG_AGO + 5, LONG_AGO + 5))
    assert json.dumps(source_manifest(specs, cache.digest)) == before
    assert json.dumps(source_manifest(specs)) == before  # the cache gives what hashing gives


def test_a_folder_source_changes_with_its_set_of_pages_and_ignores_other_files(corpus):
    write_page(corpus / "pages/one.txt", [("A listed paper", "Its abstract, long enough to pass.")])
    specs = sources(corpus, [{"path": "pages", "name": "pages"}]).sources
    before = source_manifest(specs)
    assert [f["path"] for f in files_of(before, "pages")] == ["pages/one.txt"]
    (corpus / "pages/notes.md").write_text("not a listing page")  # the reader reads *.txt only
    assert source_manifest(specs) == before
    write_page(corpus / "pages/zero.txt", [("Another paper", "Another abstract, long enough.")])
    assert [f["path"] for f in files_of(source_manifest(specs), "pages")] == ["pages/one.txt", "pages/zero.txt"]
    (corpus / "pages/zero.txt").unlink()
    assert source_manifest(specs) == before


def test_a_missing_source_is_named_before_anything_is_hashed(corpus):
    hashed = []
    specs = sources(corpus, [{"path": "data/raw/gone.jsonl", "name": "gone"}]).sources
    with pytest.raises(PapersimError, match=r"data/raw/gone.jsonl: no such file or folder \(source 'gone' in "
                                            r"params.yaml ingest.sources\)"):
        source_manifest(specs, lambda path: hashed.append(path) or "x")
    assert hashed == []


def test_the_cache_reads_an_unchanged_file_once_and_sees_a_same_size_edit(corpus):
    path = corpus / "data/raw/a.jsonl"
    os.utime(path, (LONG_AGO, LONG_AGO))
    cache = DigestCache()
    first = cache.digest(path)
    assert (cache.digest(path), cache.hashed, cache.reused) == (first, 1, 1)
    (corpus / "cache.json").write_text("{not json")
    assert DigestCache.read(corpus / "cache.json").entries == DigestCache.read(corpus / "none.json").entries == {}
    (corpus / "cache.json").write_text(json.dumps(cache.to_dict()))
    reloaded = DigestCache.read(corpus / "cache.json")
    assert (reloaded.digest(path), reloaded.hashed) == (first, 0)
    text = path.read_text()
    path.write_text(text.replace("part 1", "part 9"))  # same size, and the mtime set back: a copy with `cp -p`
    os.utime(path, (LONG_AGO, LONG_AGO))
    assert (reloaded.digest(path) != first, reloaded.hashed) == (True, 1)


def test_a_file_written_just_now_is_not_cached(corpus):
    # Its mtime may not move on a second write within the filesystem's timestamp resolution.
    cache = DigestCache()
    cache.digest(corpus / "data/raw/a.jsonl")
    assert cache.to_dict()["files"] == {}
    (corpus / "data/raw/a.jsonl").unlink()
    assert DigestCache({str(corpus / "data/raw/a.jsonl"): {"stat": [], "md5": "x"}}).to_dict()["files"] == {}

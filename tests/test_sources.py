"""A source as params.yaml names it: its format found from the path, the files it reads, BEIR's own field
names."""

from pathlib import Path

import pytest

from papersim.data.sources import SourceSpec, resolve_format, source_files
from papersim.errors import PapersimError
from tests.conftest import paper, read_all, write_jsonl, write_page


def test_beir_folder_uses_its_id_title_text_fields(tmp_path):
    write_jsonl(tmp_path / "cran" / "corpus.jsonl", [{"_id": "7", "title": "wing", "text": "wing flutter"}])
    spec = SourceSpec(str(tmp_path / "cran"), id_prefix="cran:")
    assert resolve_format(spec) == "beir"
    _, (batch,) = read_all(spec)
    assert batch.paper_id == ["cran:7"] and batch.abstract == ["wing flutter"]


def test_missing_path_and_unknown_extension_are_errors(tmp_path):
    with pytest.raises(PapersimError, match=r"nope.jsonl: no such file or folder \(source 'nope'"):
        resolve_format(SourceSpec(str(tmp_path / "nope.jsonl")))
    (tmp_path / "a.xml").write_text("<a/>")
    with pytest.raises(PapersimError, match="does not know the extension '.xml'"):
        resolve_format(SourceSpec(str(tmp_path / "a.xml")))


def test_the_files_a_source_reads_keep_the_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "cran/corpus.jsonl", [{"_id": "7", "title": "wing", "text": "wing flutter"}])
    write_page(tmp_path / "pages/b.txt", [("Title", "An abstract.")])
    write_page(tmp_path / "pages/a.txt", [("Title", "An abstract.")])
    assert source_files(SourceSpec("cran")) == ("beir", [Path("cran/corpus.jsonl")])
    assert source_files(SourceSpec("pages")) == ("hf_pages", [Path("pages/a.txt"), Path("pages/b.txt")])
    assert source_files(SourceSpec(str(tmp_path / "pages/a.txt")))[1] == [tmp_path / "pages/a.txt"]
    write_jsonl(tmp_path / "many/part1.jsonl", [paper(1)])
    with pytest.raises(PapersimError, match="many: a jsonl source is one file, not a folder"):
        source_files(SourceSpec("many", format="jsonl"))


def test_metadata_fields_can_be_mapped_and_year_is_checked(tmp_path):
    spec = SourceSpec("a.jsonl", columns={"id": "arxiv_id", "arxiv_id": "arxiv_id", "date": "published", "url": "link"})
    assert spec.columns["date"] == "published" and spec.year == 0
    with pytest.raises(ValueError, match="columns: unknown field.* published; mappable fields: id, title, abstract"):
        SourceSpec("a.jsonl", columns={"published": "date"})
    for year in (24, 3000, "2024"):
        with pytest.raises(ValueError, match="year must be 0 \\(unknown\\) or within \\[1000, 2100\\]"):
            SourceSpec("pages", year=year)


def test_a_beir_corpus_has_no_metadata(tmp_path):
    from papersim.data.normalise import normalise_batch
    from papersim.data.sources import read_source

    write_jsonl(tmp_path / "cran" / "corpus.jsonl", [{"_id": "7", "title": "wing", "text": "wing flutter"}])
    spec = SourceSpec(str(tmp_path / "cran"))
    (raw,) = read_source(spec, 10)
    batch = normalise_batch(raw, spec)
    assert batch.authors.to_pylist() == batch.categories.to_pylist() == [[]]
    assert batch.date.to_pylist() == batch.url.to_pylist() == batch.venue.to_pylist() == [None]

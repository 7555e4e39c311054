"""Normalised text (NFKC, one space, trimmed), the content hash that finds the same paper twice and the record
hash that sees any stored edit, metadata included."""

import pyarrow as pa

from papersim.data.ingest import PAPERS_SCHEMA
from papersim.data.metadata import parse_authors, parse_categories
from papersim.data.normalise import normalise_list, normalise_text, record_hashes
from papersim.data.sources import SourceSpec
from tests.conftest import paper, read_all, write_jsonl


def test_normalisation_nfkc_collapses_unicode_whitespace_and_trims():
    values = ["  ﬁne\u00a0tuning \t\n of\u2028BERT  ", None, "a \x85 b\u1680c", "clean text"]
    assert normalise_text(values).to_pylist() == ["fine tuning of BERT", "", "a b c", "clean text"]


def test_content_hash_ignores_title_case_but_not_abstract_text(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        paper(1, title="Attention Is All You Need", abstract="Same abstract text."),
        paper(2, title="attention is all you need", abstract="Same  abstract\ttext."),
        paper(3, title="Attention Is All You Need", abstract="Other abstract text."),
    ])
    _, (batch,) = read_all(SourceSpec(str(path)))
    assert batch.content_hash[0] == batch.content_hash[1] != batch.content_hash[2]
    assert len(batch.content_hash[0]) == 32


def test_record_hash_sees_every_stored_field_and_fields_cannot_run_together():
    base = {"paper_id": "p1", "title": "Wing flutter", "abstract": "At supersonic speed.", "source": "arxiv",
            "groups": ["cs.LG", "page:a"], "authors": ["Ada Lovelace"], "date": "2019-03-12", "updated": None,
            "url": "https://example.org/p1", "venue": None, "categories": ["cs.LG"]}
    variants = [base, {**base, "title": "wing flutter"}, {**base, "source": "pages"}, {**base, "groups": ["cs.LG"]},
                {**base, "groups": ["cs.LGpage:a"]}, {**base, "groups": []}, {**base, "groups": [""]},
                {**base, "title": "Wing flutterAt", "abstract": " supersonic speed."}, {**base, "paper_id": "p2"},
                {**base, "date": "2019-03-13"}, {**base, "date": None}, {**base, "updated": "2019-03-12"},
                {**base, "date": None, "updated": "2019-03-12"}, {**base, "venue": ""}, {**base, "venue": "-"},
                {**base, "authors": []}, {**base, "authors": ["Ada", "Lovelace"]}, {**base, "categories": []},
                {**base, "categories": [], "authors": ["Ada Lovelace", "cs.LG"]}, {**base, "url": None}]
    hashes = record_hashes(pa.Table.from_pylist(variants)).to_pylist()
    assert len(set(hashes)) == len(variants) and all(len(h) == 32 for h in hashes)
    assert record_hashes(pa.Table.from_pylist([base, base]).slice(1)).to_pylist() == hashes[:1]


def test_a_batch_without_any_metadata_hashes_like_one_with_nulls_spelled_out():
    empty = {"paper_id": "p1", "title": "T", "abstract": "A", "source": "s", "groups": [], "authors": [],
             "date": None, "updated": None, "url": None, "venue": None, "categories": []}
    mixed = [empty, {**empty, "paper_id": "p2", "date": "2019", "authors": ["Ada"]}]
    alone = record_hashes(pa.Table.from_pylist([empty], schema=PAPERS_SCHEMA.remove(PAPERS_SCHEMA.get_field_index(
        "record_hash"))))
    assert alone.to_pylist() == record_hashes(pa.Table.from_pylist(mixed)).to_pylist()[:1]


def test_author_names_are_normalised_like_titles_and_categories_trimmed():
    authors = normalise_list(pa.array(["Ada  Lovelace;\u00a0Alan\tTuring ; ", None, "ﬁrst Author"]), parse_authors,
                             normalise_text)
    assert authors.to_pylist() == [["Ada Lovelace", "Alan Turing"], [], ["first Author"]]
    categories = normalise_list(pa.array([[" cs.LG", "", None, "stat.ML "], []], pa.list_(pa.string())),
                                parse_categories)
    assert categories.to_pylist() == [["cs.LG", "stat.ML"], []]

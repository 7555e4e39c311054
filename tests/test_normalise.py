"""Normalised text (NFKC, one space, trimmed), the content hash that finds the same paper twice and the record
hash that sees any stored edit."""

import pyarrow as pa

from papersim.data.normalise import normalise_text, record_hashes
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
            "groups": ["cs.LG", "page:a"]}
    variants = [base, {**base, "title": "wing flutter"}, {**base, "source": "pages"}, {**base, "groups": ["cs.LG"]},
                {**base, "groups": ["cs.LGpage:a"]}, {**base, "groups": []}, {**base, "groups": [""]},
                {**base, "title": "Wing flutterAt", "abstract": " supersonic speed."}, {**base, "paper_id": "p2"}]
    hashes = record_hashes(pa.Table.from_pylist(variants)).to_pylist()
    assert len(set(hashes)) == len(variants) and all(len(h) == 32 for h in hashes)
    assert record_hashes(pa.Table.from_pylist([base, base]).slice(1)).to_pylist() == hashes[:1]

"""Normalised text (NFKC, one space, trimmed) and the content hash that finds the same paper twice."""

from papersim.data.normalise import normalise_text
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

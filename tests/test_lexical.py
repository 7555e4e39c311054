"""BM25 over passages, as rankings and as scored hits."""

import pytest

from papersim.errors import PapersimError
from papersim.retrieval.lexical import BM25, lexical_hits

DOCS = {"d1": "supersonic wing flutter in a wind tunnel", "d2": "heat transfer in laminar boundary layers",
        "d3": "contrastive learning of sentence embeddings", "d4": "flutter of panels at supersonic speeds"}


def test_bm25_ranks_term_matches_and_drops_docs_without_shared_terms(tmp_path):
    bm25 = BM25(list(DOCS), list(DOCS.values()))
    ranked = bm25.rankings(["q1", "q2"], ["supersonic flutter", "zebra"], k=4)
    assert set(ranked["q1"][:2]) == {"d1", "d4"} and "d3" not in ranked["q1"]
    assert ranked["q2"] == []
    bm25.save(tmp_path / "bm25")
    assert BM25.load(tmp_path / "bm25").rankings(["q1"], ["supersonic flutter"], 4) == {"q1": ranked["q1"]}


def test_bm25_needs_documents_and_one_text_per_id():
    with pytest.raises(PapersimError, match="BM25 needs one text per doc id and at least one document"):
        BM25([], [])
    with pytest.raises(PapersimError, match="BM25 needs one text per doc id"):
        BM25(["d1", "d2"], ["only one text"])


def test_lexical_hits_keep_scores_best_first_and_a_query_of_stop_words_matches_nothing():
    bm25 = BM25(list(DOCS), list(DOCS.values()))
    hits = lexical_hits(bm25, ["q1", "q2", "q3"], ["supersonic flutter", "the of and", "1234"], depth=4)
    ids, scores = hits["q1"]
    assert set(ids) == {"d1", "d4"} and scores == sorted(scores, reverse=True) and min(scores) > 0
    assert hits["q2"] == ([], []) and hits["q3"] == ([], [])


def test_bm25_indexes_documents_that_tokenise_to_nothing():
    bm25 = BM25(["a", "b"], ["the and of", "wing flutter"])
    assert bm25.rankings(["q"], ["flutter"], 2) == {"q": ["b"]}


@pytest.mark.parametrize("stemmer", ["english", ""])
def test_the_chunked_build_gives_bm25s_own_scores_from_a_list_or_a_stream(stemmer, monkeypatch):
    import bm25s
    import numpy as np

    import papersim.retrieval.lexical as lexical

    texts = [f"Paper {i}: graph networks for molecules, proteins and {'speech ' * (i % 4)}recognition"
             for i in range(60)] + ["the of and", "Wings, flutter and the aeroelastic wings of aircraft"]
    reference = bm25s.BM25()
    reference.index(bm25s.tokenize(texts, stopwords="en", stemmer=lexical._stemmer(stemmer), show_progress=False),
                    show_progress=False)
    ids = [str(i) for i in range(len(texts))]
    monkeypatch.setattr(lexical._PackedTokens.__init__, "__defaults__", (7,))  # tokenised 7 texts at a time
    monkeypatch.setattr(lexical._bm25_matrix, "__defaults__", (5,))  # scored 5 documents at a time
    for built in (BM25(ids, texts, stemmer), BM25(ids, iter(texts), stemmer)):
        for query in ["graph molecules", "wing aircraft speech", "recognition"]:
            tokens = bm25s.tokenize([query], stopwords="en", stemmer=built.stemmer, return_ids=False,
                                    show_progress=False)[0]
            np.testing.assert_allclose(built.retriever.get_scores(tokens), reference.get_scores(tokens), rtol=1e-6)

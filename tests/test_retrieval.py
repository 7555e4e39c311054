"""Retrieval systems: BM25 and exact dense search, as rankings and as scored hits."""

import numpy as np
import pytest

from papersim.errors import PapersimError
from papersim.retrieval.dense import dense_hits, dense_rankings, dense_search
from papersim.retrieval.lexical import BM25, lexical_hits
from papersim.retrieval.passage import passage_text

DOCS = {"d1": "supersonic wing flutter in a wind tunnel", "d2": "heat transfer in laminar boundary layers",
        "d3": "contrastive learning of sentence embeddings", "d4": "flutter of panels at supersonic speeds"}


def test_passage_is_title_then_abstract():
    assert passage_text(" Wing flutter ", "We study it. ") == "Wing flutter. We study it."
    assert passage_text("", "Only an abstract.") == "Only an abstract."


def test_bm25_ranks_term_matches_and_drops_docs_without_shared_terms(tmp_path):
    bm25 = BM25(list(DOCS), list(DOCS.values()))
    ranked = bm25.rankings(["q1", "q2"], ["supersonic flutter", "zebra"], k=4)
    assert set(ranked["q1"][:2]) == {"d1", "d4"} and "d3" not in ranked["q1"]
    assert ranked["q2"] == []
    bm25.save(tmp_path / "bm25")
    assert BM25.load(tmp_path / "bm25").rankings(["q1"], ["supersonic flutter"], 4) == {"q1": ranked["q1"]}


def test_bm25_needs_documents():
    with pytest.raises(PapersimError):
        BM25([], [])


def test_dense_search_orders_by_score_breaks_ties_by_row_and_can_exclude_a_row():
    docs = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)  # rows 0 and 2 are equal
    rows, scores = dense_search(docs, np.array([[1, 0]], dtype=np.float32), k=3)
    assert rows.tolist() == [[0, 2, 3]] and scores[0].tolist() == pytest.approx([1.0, 1.0, 0.6])
    rows, _ = dense_search(docs, docs[[0]], k=2, exclude=np.array([0]))
    assert rows.tolist() == [[2, 3]]
    ranked = dense_rankings(["a", "b", "c", "d"], docs, ["q"], np.array([[0, 1]], dtype=np.float32), k=2)
    assert ranked == {"q": ["b", "d"]}


def test_hits_keep_scores_best_first_and_a_query_of_stop_words_matches_nothing():
    bm25 = BM25(list(DOCS), list(DOCS.values()))
    hits = lexical_hits(bm25, ["q1", "q2", "q3"], ["supersonic flutter", "the of and", "1234"], depth=4)
    ids, scores = hits["q1"]
    assert set(ids) == {"d1", "d4"} and scores == sorted(scores, reverse=True) and min(scores) > 0
    assert hits["q2"] == ([], []) and hits["q3"] == ([], [])
    docs = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    dense = dense_hits(["a", "b", "c"], docs, ["q"], np.array([[0, 1]], dtype=np.float32), depth=2)
    assert dense["q"][0] == ["b", "c"] and dense["q"][1] == pytest.approx([1.0, 0.8])


def test_bm25_indexes_documents_that_tokenise_to_nothing():
    bm25 = BM25(["a", "b"], ["the and of", "wing flutter"])
    assert bm25.rankings(["q"], ["flutter"], 2) == {"q": ["b"]}

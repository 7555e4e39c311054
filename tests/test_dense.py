"""Exact dense search over unit vectors, as rankings and as scored hits."""

import numpy as np
import pytest

from papersim.retrieval.dense import dense_hits, dense_rankings, dense_search


def test_dense_search_orders_by_score_breaks_ties_by_row_and_can_exclude_a_row():
    docs = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8]], dtype=np.float32)  # rows 0 and 2 are equal
    rows, scores = dense_search(docs, np.array([[1, 0]], dtype=np.float32), k=3)
    assert rows.tolist() == [[0, 2, 3]] and scores[0].tolist() == pytest.approx([1.0, 1.0, 0.6])
    rows, _ = dense_search(docs, docs[[0]], k=2, exclude=np.array([0]))
    assert rows.tolist() == [[2, 3]]
    ranked = dense_rankings(["a", "b", "c", "d"], docs, ["q"], np.array([[0, 1]], dtype=np.float32), k=2)
    assert ranked == {"q": ["b", "d"]}


def test_equal_scores_cut_at_k_keep_the_lowest_rows():
    # Duplicate texts have equal vectors: which of them a top-k keeps decides mined negatives, so it is the
    # lowest rows, not whichever the partition happened to leave in front.
    docs = np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (40, 1))
    docs[::7] = [1, 0]  # rows 0, 7, ..., 35 differ; the other 34 rows tie
    rows, scores = dense_search(docs, np.array([[0.6, 0.8]], dtype=np.float32), k=5)
    assert rows.tolist() == [[1, 2, 3, 4, 5]] and scores[0].tolist() == pytest.approx([1.0] * 5)


def test_dense_hits_keep_cosine_scores_best_first():
    docs = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    dense = dense_hits(["a", "b", "c"], docs, ["q"], np.array([[0, 1]], dtype=np.float32), depth=2)
    assert dense["q"][0] == ["b", "c"] and dense["q"][1] == pytest.approx([1.0, 0.8])

"""Hard negatives: the miners' rankings and the filters, on hand-made data."""

import numpy as np
import pandas as pd

from papersim.training.negatives import (Candidates, bm25_candidates, dense_candidates, select_negatives,
                                         top_k_matches)
from papersim.training.pairs import MinePairsConfig


def test_relative_margin_and_filters_are_counted_on_hand_made_rankings():
    corpus = pd.DataFrame({"content_hash": ["a", "b", "b", "c", "d", "e"],
                           "similarity_groups": [["g"], [], [], ["g"], [], []]})
    pairs = pd.DataFrame({"anchor_row": [0], "positive_row": [1]})
    ranked = Candidates(indices=np.array([[5, 0, 1, 2, 3, 4]]), scores=np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0]]),
                        positive_scores=np.array([6.0]))
    cfg = MinePairsConfig(num_negatives=2, range_min=1, range_max=6, relative_margin=0.9, miners=["bm25"])
    chosen, removed = select_negatives(pairs, corpus, {"bm25": ranked}, None, cfg, np.random.default_rng(0))
    # rank 0 (row 5) is skipped by range_min; rows 0 and 1 are the pair itself; row 2 duplicates the
    # positive's text; row 3 shares group g with the anchor; row 4 (5.0 <= 0.9 * 6.0) is kept.
    assert chosen[0][0] == 4
    assert removed["self"] == 2 and removed["duplicate"] == 1 and removed["same_group"] == 1
    assert removed["random_fill"] == 1 and chosen[0][1] not in (0, 1, 3)
    strict = MinePairsConfig(num_negatives=1, range_min=0, range_max=6, relative_margin=0.5, miners=["bm25"])
    _, removed = select_negatives(pairs, corpus, {"bm25": ranked}, None, strict, np.random.default_rng(0))
    assert removed["relative_margin"] == 2  # rows 5 (9.0) and 4 (5.0) both exceed 0.5 * 6.0


def test_bm25_ranks_the_lexical_match_first():
    corpus = ["graph neural networks for molecules", "speech recognition", "robot control policies"]
    ranked = bm25_candidates(["molecules graph"], corpus, np.array([0]), k=3)
    assert ranked.indices[0][0] == 0 and ranked.positive_scores[0] == ranked.scores[0][0] > 0


def test_bm25_gives_no_candidates_to_an_anchor_of_only_stop_words():
    ranked = bm25_candidates(["the of and"], ["graph neural networks", "speech recognition"], np.array([0]), k=2)
    assert (ranked.indices[0] == -1).all()


def test_dense_candidates_rank_by_cosine_and_score_the_positive():
    corpus = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    anchors = np.array([[0.8, 0.6]], dtype=np.float32)
    ranked, recall = dense_candidates(anchors, corpus, np.array([2]), k=2, exact_max=10)
    assert ranked.indices.tolist() == [[1, 0]] and recall == 1.0  # cosines 0.96, 0.8 (row 2: 0.6)
    np.testing.assert_allclose(ranked.scores, [[0.96, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(ranked.positive_scores, [0.6], rtol=1e-6)


def test_beyond_exact_max_the_dense_miner_searches_hnsw_and_reports_its_recall():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(2_000, 16)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    anchors = corpus[:300] + 0.05 * rng.normal(size=(300, 16)).astype(np.float32)
    anchors /= np.linalg.norm(anchors, axis=1, keepdims=True)
    exact, _ = dense_candidates(anchors, corpus, np.arange(300), k=10, exact_max=10_000)
    approx, recall = dense_candidates(anchors, corpus, np.arange(300), k=10, exact_max=1_000)
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.indices, exact.indices)])
    assert recall >= 0.95 and overlap >= 0.95
    assert (approx.indices[:, 0] == np.arange(300)).mean() >= 0.95  # each anchor's own paper is its nearest
    np.testing.assert_allclose(approx.positive_scores, exact.positive_scores)


def test_top_k_matches_keeps_matching_rows_only_and_breaks_ties_by_row():
    scores = np.array([0.0, 2.0, 5.0, 2.0, 0.0, 2.0, 1.0], dtype=np.float32)
    assert top_k_matches(scores, 3).tolist() == [2, 1, 3]  # three rows tie at 2.0: the lowest two of them
    assert top_k_matches(scores, 10).tolist() == [2, 1, 3, 5, 6]  # only the five matching rows
    assert top_k_matches(np.zeros(4, dtype=np.float32), 2).tolist() == []


def test_bm25_leaves_ranks_past_the_matching_documents_empty():
    corpus = ["graph neural networks", "speech recognition", "robot control", "graph theory"]
    ranked = bm25_candidates(["graph"], corpus, np.array([0]), k=4)
    assert sorted(ranked.indices[0][:2].tolist()) == [0, 3] and ranked.indices[0][2:].tolist() == [-1, -1]
    assert (ranked.scores[0][2:] == 0).all()

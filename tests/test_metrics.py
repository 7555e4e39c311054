import math

import numpy as np
import pytest

from papersim.errors import PapersimError
from papersim.evaluation.metrics import (
    SetScores,
    average_precision_at_k,
    ndcg_at_k,
    precision_at_k,
    rank_by_score,
    recall_at_k,
    recall_curve,
    reciprocal_rank_at_k,
    score_rankings,
    top_k_ids,
)

GRADED = {"a": 3, "b": 2, "c": 1, "x": 0}  # x judged non-relevant
# Ideal order a, b, c: IDCG = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3 + 1.2619 + 0.5 = 4.7619
IDCG = 3 + 2 / math.log2(3) + 0.5
BINARY = {"a": 1, "b": 1, "c": 1, "x": 0}


def test_graded_ndcg_uses_linear_gains_and_the_ideal_over_all_relevant_docs():
    # DCG = 2/log2(2) + 0/log2(3) + 3/log2(4) = 2 + 1.5 = 3.5
    assert ndcg_at_k(["b", "x", "a"], GRADED, 10) == pytest.approx(3.5 / IDCG)  # 0.7350
    assert ndcg_at_k(["a", "b", "c", "x"], GRADED, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y", "z"], GRADED, 10) == 0.0
    # Ideal cut at k = 1 too: DCG@1 = 2, IDCG@1 = 3
    assert ndcg_at_k(["b", "a"], GRADED, 1) == pytest.approx(2 / 3)


def test_ndcg_cut_at_k_ignores_later_hits():
    assert ndcg_at_k(["x", "y", "a"], GRADED, 2) == 0.0
    # DCG@3 = 3/log2(4) = 1.5; IDCG@3 = 4.7619
    assert ndcg_at_k(["x", "y", "a"], GRADED, 3) == pytest.approx(1.5 / IDCG)


def test_recall_counts_relevant_in_top_k_over_all_relevant():
    ranking = ["a", "x", "y", "b", "c"]
    assert [recall_at_k(ranking, BINARY, k) for k in (1, 3, 4, 5)] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1.0])
    assert recall_at_k(["a"], {**BINARY, "d": 2}, 10) == pytest.approx(1 / 4)  # never-retrieved d still counts


def test_reciprocal_rank_is_one_over_the_first_relevant_rank_within_k():
    assert reciprocal_rank_at_k(["x", "y", "b", "a"], BINARY, 10) == pytest.approx(1 / 3)
    assert reciprocal_rank_at_k(["x", "y", "b", "a"], BINARY, 2) == 0.0
    assert reciprocal_rank_at_k([], BINARY, 10) == 0.0


def test_average_precision_divides_by_all_relevant_docs_including_those_beyond_k():
    ranking = ["a", "x", "b", "y", "z", "c"]
    # Hits at ranks 1, 3, 6: AP = (1/1 + 2/3 + 3/6) / 3 = 2.1667 / 3 = 0.7222
    assert average_precision_at_k(ranking, BINARY, 10) == pytest.approx((1 + 2 / 3 + 1 / 2) / 3)
    # Cut at 4: c (rank 6) is missed but stays in the denominator: (1 + 2/3) / 3 = 0.5556
    assert average_precision_at_k(ranking, BINARY, 4) == pytest.approx((1 + 2 / 3) / 3)


def test_precision_divides_by_k_even_when_fewer_docs_were_returned():
    ranking = ["a", "x", "b", "y", "z", "c"]
    assert precision_at_k(ranking, BINARY, 4) == pytest.approx(2 / 4)
    assert precision_at_k(ranking, BINARY, 10) == pytest.approx(3 / 10)


def test_a_repeated_doc_id_keeps_its_slot_but_counts_once():
    judged = {"a": 1, "b": 1}
    ranking = ["a", "a", "b"]
    assert recall_at_k(ranking, judged, 2) == pytest.approx(1 / 2)  # the repeat uses up rank 2
    assert precision_at_k(ranking, judged, 3) == pytest.approx(2 / 3)
    # DCG = 1/log2(2) + 0 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.6309
    assert ndcg_at_k(ranking, judged, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert average_precision_at_k(ranking, judged, 10) == pytest.approx((1 + 2 / 3) / 2)
    assert ndcg_at_k(["a"] * 5, {"a": 3, "b": 1}, 10) < 1.0


def test_k_below_one_is_rejected():
    with pytest.raises(ValueError, match="k must be >= 1"):
        recall_at_k(["a"], BINARY, 0)


def test_ties_are_broken_by_doc_id_ascending():
    scores = {"b": 1.0, "d": 0.5, "a": 1.0, "c": 2.0}
    assert rank_by_score(scores) == ["c", "a", "b", "d"]
    assert rank_by_score(scores, k=2) == ["c", "a"]  # the tie at the cut goes to the smaller id
    assert top_k_ids(list(scores), np.array(list(scores.values())), 2) == ["c", "a"]
    assert top_k_ids(["b", "a"], np.array([0.0, 0.0])) == ["a", "b"]


def test_top_k_ids_agrees_with_a_full_sort_on_random_data():
    rng = np.random.default_rng(0)
    ids = [f"d{i:03d}" for i in rng.permutation(500)]
    scores = rng.integers(0, 20, size=500).astype(float)  # many ties
    full = sorted(range(500), key=lambda i: (-scores[i], ids[i]))
    for k in (1, 7, 50, 499, 500, 600):
        assert top_k_ids(ids, scores, k) == [ids[i] for i in full[:k]]
    with pytest.raises(ValueError, match="one score per doc id"):
        top_k_ids(ids, scores[:10], 5)
    with pytest.raises(ValueError, match="NaN"):
        top_k_ids(["a", "b"], np.array([1.0, np.nan]), 1)


def test_queries_without_relevant_docs_are_skipped_and_counted():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0, "c": 0}, "q3": {"d": 2, "e": 0}}
    rankings = {"q1": ["a"], "q2": ["b"], "q3": ["e", "d"]}
    result = score_rankings(rankings, qrels)
    assert (result.n_queries, result.n_skipped) == (2, 1)
    assert result.metrics["recall@1"] == pytest.approx((1 + 0) / 2)  # q2 not scored as 0: means over q1, q3
    assert result.metrics["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    assert list(result.metrics) == ["ndcg@10", "recall@1", "recall@10", "recall@100", "mrr@10", "map@100"]
    assert recall_curve(rankings, qrels, [1, 2]) == pytest.approx({1: 0.5, 2: 1.0})


def test_a_judged_query_without_a_ranking_scores_zero_and_unjudged_rankings_are_ignored():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    result = score_rankings({"q1": ["a"], "unjudged": ["z"]}, qrels, ndcg_k=5, recall_ks=(3,), mrr_k=5, map_k=5)
    assert result == SetScores(
        metrics={"ndcg@5": 0.5, "recall@3": 0.5, "mrr@5": 0.5, "map@5": 0.5}, n_queries=2, n_skipped=0
    )


@pytest.mark.parametrize("qrels", [{}, {"q1": {"a": 0, "b": -1}}])
def test_no_scorable_query_is_an_error(qrels):
    with pytest.raises(PapersimError, match="no query can be scored"):
        score_rankings({"q1": ["a"]}, qrels)
    with pytest.raises(PapersimError, match="no query can be scored"):
        recall_curve({"q1": ["a"]}, qrels, [1])


def random_run(rng: np.random.Generator, n_queries: int, n_docs: int, max_relevance: int):
    """Random qrels (some queries without any relevant doc) and per-query scores with many ties."""
    docs = [f"doc{i}" for i in range(n_docs)]
    qrels, scores = {}, {}
    for q in range(n_queries):
        judged = rng.choice(n_docs, size=int(rng.integers(1, 30)), replace=False)
        qrels[f"q{q}"] = {docs[i]: int(rng.integers(0, max_relevance + 1)) for i in judged}
        scores[f"q{q}"] = dict(zip(docs, rng.integers(0, 50, size=n_docs).astype(float)))
    return qrels, scores


def test_ndcg_matches_a_direct_implementation_on_random_graded_data():
    def reference_ndcg(ranking, judged, k):
        gains = np.array([max(judged.get(d, 0), 0) for d in ranking[:k]], dtype=float)
        ideal = np.array(sorted((r for r in judged.values() if r > 0), reverse=True)[:k], dtype=float)
        dcg = np.sum(gains / np.log2(np.arange(len(gains)) + 2))
        return dcg / np.sum(ideal / np.log2(np.arange(len(ideal)) + 2))

    qrels, scores = random_run(np.random.default_rng(1), n_queries=60, n_docs=40, max_relevance=3)
    rankings = {q: rank_by_score(s) for q, s in scores.items()}
    expected = [reference_ndcg(rankings[q], j, 10) for q, j in qrels.items() if any(r > 0 for r in j.values())]
    result = score_rankings(rankings, qrels)
    assert result.n_queries == len(expected) and result.n_skipped == len(qrels) - len(expected) > 0
    assert result.metrics["ndcg@10"] == pytest.approx(np.mean(expected))


def test_binary_metrics_match_sentence_transformers_evaluator():
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    qrels, scores = random_run(np.random.default_rng(2), n_queries=40, n_docs=150, max_relevance=1)
    relevant = {q: {d for d, r in j.items() if r > 0} for q, j in qrels.items()}
    evaluator = evaluation.InformationRetrievalEvaluator(
        queries={q: q for q in qrels}, corpus={d: d for d in scores["q0"]}, relevant_docs=relevant,
        accuracy_at_k=[1], precision_recall_at_k=[1, 10, 100], mrr_at_k=[10], ndcg_at_k=[10], map_at_k=[100],
    )
    theirs = evaluator.compute_metrics(
        [[{"corpus_id": d, "score": s} for d, s in scores[q].items()] for q in evaluator.queries_ids]
    )
    ours = score_rankings({q: rank_by_score(s, k=100) for q, s in scores.items()}, qrels)
    assert ours.n_queries == len(evaluator.queries_ids)
    # MAP agrees here only because no query has more than 100 relevant docs (see the module docstring).
    assert ours.metrics == pytest.approx({
        "ndcg@10": theirs["ndcg@k"][10], "recall@1": theirs["recall@k"][1], "recall@10": theirs["recall@k"][10],
        "recall@100": theirs["recall@k"][100], "mrr@10": theirs["mrr@k"][10], "map@100": theirs["map@k"][100],
    })


def test_metrics_match_trec_eval_on_real_rankings():
    """BM25 and a degraded run on Cranfield's real judgments: every metric equals trec_eval's (pytrec_eval)."""
    import pytrec_eval

    from papersim.evaluation.sets import load_beir_set
    from papersim.retrieval.lexical import BM25
    from tests.conftest import REPO

    s = load_beir_set(REPO / "data/raw/beir/cranfield")
    bm25 = BM25(s.doc_ids, s.doc_texts).rankings(s.query_ids, s.query_texts, 100)
    shuffled = {q: docs[5:] + docs[:5] for q, docs in bm25.items()}  # another real-looking run
    scored = [q for q, judged in s.qrels.items() if any(r > 0 for r in judged.values())]

    def run(rankings: dict, cut: int) -> dict:
        # Distinct descending scores: trec_eval orders by score, so the ranking is kept as given.
        # Judged queries without a retrieved document get an empty run: trec_eval -c scores them 0.
        return {q: {d: float(cut - i) for i, d in enumerate(rankings.get(q, [])[:cut])} for q in scored}

    def mean(result: dict, measure: str) -> float:
        return sum(result.get(q, {}).get(measure, 0.0) for q in scored) / len(scored)

    for rankings in (bm25, shuffled):
        ours = score_rankings(rankings, s.qrels, ndcg_k=10, recall_ks=(1, 10, 100), mrr_k=10, map_k=100)
        qrels = {q: dict(s.qrels[q]) for q in scored}
        measures = {"ndcg_cut.10", "recall.1,10,100", "map_cut.100"}
        full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run(rankings, 100))
        # MRR@10: the run cut at 10
        top10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run(rankings, 10))

        assert ours.metrics["ndcg@10"] == pytest.approx(mean(full, "ndcg_cut_10"), abs=1e-9)
        for k in (1, 10, 100):
            assert ours.metrics[f"recall@{k}"] == pytest.approx(mean(full, f"recall_{k}"), abs=1e-9)
        assert ours.metrics["map@100"] == pytest.approx(mean(full, "map_cut_100"), abs=1e-9)
        assert ours.metrics["mrr@10"] == pytest.approx(mean(top10, "recip_rank"), abs=1e-9)
        assert ours.n_queries == len(scored) == 225

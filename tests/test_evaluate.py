"""The systems compared on a judged set, on the same queries, and the config that names them."""

import math

import pytest

from papersim.evaluation.evaluate import EvaluateConfig, evaluate_set
from papersim.evaluation.sets import held_out_set, load_beir_set
from papersim.retrieval.fusion import Fusion
from tests.conftest import held_out_corpus, write_beir


def test_all_systems_scored_on_the_same_queries_and_unjudged_ones_skipped(tmp_path, tiny_encoder):
    s = load_beir_set(write_beir(tmp_path / "mini"))
    cfg = EvaluateConfig(beir_sets=[], systems=["bm25", "base", "trained", "hybrid"], recall_ks=[1, 10])
    result = evaluate_set(s, {"base": tiny_encoder.encode, "trained": _beir_oracle}, cfg)
    assert list(result.scores) == ["bm25", "base", "trained", "hybrid"]
    assert (result.n_queries, result.n_skipped) == (2, 1)  # query 3 judges its only doc 0
    # BM25 ranks d3 (rel 1, the shorter passage) above d1 (rel 2) for query 1 and d2 first for query 2:
    # nDCG@10 = mean((1 + 2/log2 3) / (2 + 1/log2 3), 1), recall@1 = mean(1/2, 1), MRR@10 = 1.
    bm25 = result.scores["bm25"]
    assert bm25["ndcg@10"] == pytest.approx(((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)) + 1) / 2)
    assert (bm25["recall@1"], bm25["recall@10"], bm25["mrr@10"]) == (0.75, 1.0, 1.0)
    assert result.curves["bm25"] == {1: 0.75, 10: 1.0}
    # Each system is scored with its own encoder: the oracle ranks ideally (d1, d3 for query 1; d2 for query 2),
    # and `base` has the numbers of the tiny encoder scored alone.
    trained = result.scores["trained"]
    assert (trained["ndcg@10"], trained["recall@1"], trained["mrr@10"]) == (pytest.approx(1.0), 0.75, 1.0)
    alone = evaluate_set(s, {"trained": tiny_encoder.encode}, EvaluateConfig(beir_sets=[], systems=["trained"],
                                                                            recall_ks=[1, 10]))
    assert result.scores["base"] == alone.scores["trained"] != trained
    assert set(result.curves["hybrid"]) == {1, 10}
    assert result.scores["hybrid"]["recall@10"] == 1.0  # all four documents ranked: each within the top 10
    assert result.content_hash == s.content_hash != ""  # the gate compares sets by it


def _beir_oracle(texts):
    """An encoder that knows BEIR_DOCS' judgments: query 1 (flutter) finds d1 (wing), then d3 (panel); query 2
    (boundary layers) finds d2; the sentence-embeddings document d4 is near neither."""
    import numpy as np

    def vector(text: str) -> list[float]:
        if "panel" in text:
            return [0.8, 0.6, 0.0]
        if "flutter" in text:
            return [1.0, 0.0, 0.0]
        if "boundary" in text:
            return [0.0, 1.0, 0.0]
        return [0.0, 0.0, 1.0]

    return np.array([vector(text) for text in texts], dtype=np.float32)


def test_served_fuses_bm25_with_the_served_encoder_and_is_compared_query_by_query(tmp_path, tiny_encoder):
    s = load_beir_set(write_beir(tmp_path / "mini"))
    cfg = EvaluateConfig(beir_sets=[], systems=["bm25", "base", "base_hybrid", "served"], recall_ks=[1])
    embed = tiny_encoder.encode
    lexical_only = Fusion(method="convex", alpha=0.0)
    result = evaluate_set(s, {"base": embed, "served": embed}, cfg, served=lexical_only)
    assert list(result.scores) == ["bm25", "base", "base_hybrid", "served"]
    assert result.scores["served"]["ndcg@10"] == result.scores["bm25"]["ndcg@10"]  # alpha 0: BM25's order
    assert result.query_ids == ["1", "2"] and result.per_query["served"]["ndcg@10"].shape == (2,)
    assert {"ndcg@10", "recall@100"} <= set(result.per_query["served"])
    versus = result.served_versus()
    assert set(versus) == {"bm25", "base", "base_hybrid"}
    assert versus["bm25"].mean == 0.0 and versus["bm25"].p_value == 1.0
    assert "served" not in evaluate_set(s, {"base": embed, "served": embed}, cfg).scores  # no fusion given


def test_colisted_precision_is_the_share_of_neighbours_listed_with_the_paper(tiny_encoder):
    papers, split = held_out_corpus()
    s = held_out_set(papers, split, max_group_size=2)
    cfg = EvaluateConfig(beir_sets=[], systems=["bm25", "trained", "hybrid"])
    result = evaluate_set(s, {"trained": tiny_encoder.encode}, cfg)
    # a's neighbours (itself excluded): b shares page1 -> 1 of 10 slots; same for b.
    assert result.scores["bm25"]["colisted_precision@10"] == pytest.approx(0.1)


def test_config_rejects_unknown_systems_and_hybrid_without_parts():
    with pytest.raises(ValueError, match="unknown systems"):
        EvaluateConfig(systems=["bm25", "gpt"])
    with pytest.raises(ValueError, match="hybrid"):
        EvaluateConfig(systems=["hybrid", "bm25"])
    with pytest.raises(ValueError, match="base_hybrid system fuses bm25 and base"):
        EvaluateConfig(systems=["base_hybrid", "bm25"])
    assert EvaluateConfig(systems=["bm25", "served"]).systems == ["bm25", "served"]


def _listed_papers():
    """Thirty papers on three pages (ten each, the page's topic word in the text), plus an exact duplicate
    of p0 (its own id, p0's content hash) on p0's page."""
    import pandas as pd

    topics = ["flutter", "boundary", "embedding"]
    rows = [{"paper_id": f"p{i}", "title": f"On {topics[i % 3]} case {i}",
             "abstract": f"A note on {topics[i % 3]} with setting {i} and remark {i * 7}.",
             "groups": [f"page{i % 3}"], "content_hash": f"h{i}"} for i in range(30)]
    rows.append({**rows[0], "paper_id": "p0-copy"})
    return pd.DataFrame(rows)


def _page_oracle(texts):
    """An encoder that knows the page: the topic word, one-hot (cosine 1 within a page, 0 across)."""
    import numpy as np

    topics = ["flutter", "boundary", "embedding"]
    return np.array([[float(t in text) for t in topics] for text in texts], dtype=np.float32)


def test_the_similar_task_scores_every_system_on_papers_asking_for_their_page(tiny_encoder):
    from papersim.evaluation.evaluate import evaluate_similar
    from papersim.evaluation.sets import colisting_set
    from papersim.retrieval.similar import Similar

    papers = _listed_papers()
    s = colisting_set(papers, {"p0", "p1", "p4"}, set(papers["paper_id"]), 100, "similar")
    assert s.qrels["p0"] == {f"p{i}": 1 for i in range(3, 30, 3)}  # its copy is not an answer
    cfg = EvaluateConfig(beir_sets=[], recall_ks=[10])
    dense_only = Similar("trained", Fusion(alpha=1.0), terms=25)
    result = evaluate_similar(s, {"base": tiny_encoder.encode, "trained": _page_oracle,
                                  "served_similar": _page_oracle}, cfg, dense_only)
    assert list(result.scores) == ["bm25", "mlt", "base", "trained", "hybrid", "base_hybrid", "served"]
    oracle = result.scores["trained"]  # the nine page-mates first, the copy left out: known values
    assert (oracle["precision@10"], oracle["recall@10"], oracle["mrr@10"], oracle["ndcg@10"]) == \
        (pytest.approx(0.9), 1.0, 1.0, pytest.approx(1.0))
    assert result.scores["served"] == oracle  # alpha 1: the dense neighbours' order
    assert result.compared_metric == "precision@10" and result.facts["papers"] == 3
    versus = result.served_versus()
    assert versus["trained"].mean == 0.0 and versus["base"].mean > 0  # the tiny random model knows no page
    assert set(result.intervals()) == {"precision@10", "ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"}
    low, high = result.intervals()["precision@10"]["trained"]
    assert low == high == pytest.approx(0.9)  # every paper scores 0.9: no spread
    # Papers of one listing share their relevant papers: comparisons resample listings, not papers.
    assert result.clusters == ["page0", "page1", "page1"]  # p0 on page0; p1 and p4 on page1
    assert result.served_versus()["base"].n == 3
    lexical_only = evaluate_similar(s, {"trained": _page_oracle, "served_similar": _page_oracle}, cfg,
                                    Similar("trained", Fusion(alpha=0.0), terms=25))
    assert lexical_only.scores["served"] == lexical_only.scores["mlt"]  # alpha 0: more-like-this's order

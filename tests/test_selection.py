"""What a candidate serves: pseudo-queries from the val split, the encoder choice and the fusion weight."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from papersim.retrieval.fusion import Fusion
from papersim.training.selection import Serving, pseudo_queries, select_serving
from tests.conftest import TOPICS


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A real, if simple, embedder: hashed word counts, L2-normalised (lexical overlap as cosine)."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace(".", " ").replace(",", " ").split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 256] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def noise(texts: list[str]) -> np.ndarray:
    """An encoder that learned nothing useful: vectors unrelated to the text."""
    vectors = np.random.default_rng(len(texts)).normal(size=(len(texts), 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def corpus(n: int = 40) -> pd.DataFrame:
    """Papers on the four TOPICS; unlike papers_frame, every third is untitled and each abstract has three
    sentences that name their paper, so a sentence pseudo-query has one right answer."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % 4]
        rows.append({"paper_id": f"p{i}", "title": f"Notes on {topic} number {i}" if i % 3 else "",
                     "abstract": f"We examine {topic} in setting {i}. The apparatus {i} was calibrated twice. "
                                 f"Results for case {i} agree with theory {i * 7}."})
    return pd.DataFrame(rows)


def test_each_query_paper_asks_for_the_rest_of_itself_and_the_others_are_distractors():
    papers = corpus()
    pq = pseudo_queries(papers, {f"p{i}" for i in range(10)}, seed=13, max_queries=8, max_docs=30)
    assert len(pq.query_ids) == 8 and len(pq.doc_ids) == 30 and sum(pq.kinds.values()) == 8
    assert set(pq.kinds) == {"title", "sentence"}  # titled papers go both ways, untitled ones by a sentence
    for qid, query in zip(pq.query_ids, pq.query_texts):
        pid = pq.relevant[qid]
        doc = pq.doc_texts[pq.doc_ids.index(pid)]
        assert query not in doc  # the document no longer holds what asks for it
        title, abstract = papers.set_index("paper_id").loc[pid, ["title", "abstract"]]
        assert query == title and doc == abstract or query in abstract and doc.startswith(title)
    again = pseudo_queries(papers, {f"p{i}" for i in range(10)}, seed=13, max_queries=8, max_docs=30)
    assert again == pq  # seeded: the same queries every run


def test_the_trained_encoder_serves_only_when_it_beats_the_base_on_the_pseudo_queries():
    pq = pseudo_queries(corpus(), {f"p{i}" for i in range(20)}, 13, 500, 20_000)
    template = Fusion(method="convex", normalisation="zscore")
    kept = select_serving(pq, {"trained": noise, "base": bag_of_words}, template, True, True, 0.0, "english", "")
    assert kept.encoder == "base" and "the base encoder serves" in kept.reason
    assert kept.evidence["base/ndcg@10"] > kept.evidence["trained/ndcg@10"]
    chosen = select_serving(pq, {"trained": bag_of_words, "base": noise}, template, True, True, 0.0, "english", "")
    assert chosen.encoder == "trained" and chosen.fusion.alpha == float(max(
        chosen.evidence["alpha_ndcg@10"], key=lambda a: (chosen.evidence["alpha_ndcg@10"][a], -abs(float(a) - .5))))
    # A useless dense model gets little weight; the served system is never below BM25 on these queries.
    assert kept.fusion.alpha <= 0.5 or kept.evidence["base/ndcg@10"] >= kept.evidence["bm25/ndcg@10"]
    assert kept.evidence["served/ndcg@10"] >= max(kept.evidence["bm25/ndcg@10"], kept.evidence["base/ndcg@10"])
    off = select_serving(pq, {"trained": noise}, template, True, False, 0.0, "english", "")
    assert off.encoder == "trained" and "select_encoder is off" in off.reason


def test_a_fixed_alpha_or_rrf_is_kept_and_round_trips_through_json():
    pq = pseudo_queries(corpus(), {f"p{i}" for i in range(20)}, 13, 500, 20_000)
    fixed = select_serving(pq, {"trained": bag_of_words, "base": noise}, Fusion(alpha=0.8), False, True, 0.0,
                           "english", "")
    assert fixed.fusion == Fusion(alpha=0.8) and "alpha_ndcg@10" not in fixed.evidence
    rrf = select_serving(pq, {"trained": bag_of_words, "base": noise}, Fusion(method="rrf"), True, True, 0.0,
                         "english", "")
    assert rrf.fusion.method == "rrf"
    assert Serving.from_dict(rrf.to_dict()) == rrf
    assert rrf.encoder_folder("models/encoder") == "models/encoder"
    assert Serving("base", "some/base", rrf.fusion, "").encoder_folder("models/encoder") == "some/base"


def test_without_pseudo_queries_the_base_model_serves():
    papers = pd.DataFrame({"paper_id": ["a", "b"], "title": ["", ""], "abstract": ["too short", "also short"]})
    pq = pseudo_queries(papers, {"a"}, 13, 10, 10)
    assert pq.query_ids == []
    serving = select_serving(pq, {"trained": noise, "base": noise}, Fusion(), True, True, 0.0, "english", "")
    assert serving.encoder == "base" and "no validation paper gave a pseudo-query" in serving.reason


def test_unknown_encoder_in_a_serving_file_is_an_error():
    from papersim.errors import PapersimError

    with pytest.raises(PapersimError, match="rerun the train stage"):
        Serving.from_dict({"encoder": "mystery", "fusion": {}})

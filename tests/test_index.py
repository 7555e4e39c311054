"""build_index's library: full and incremental builds, and what they report."""

import numpy as np
import pandas as pd
import pytest

from papersim.encoders.cache import encode_cached
from papersim.encoders.encode import load_text_encoder
from papersim.retrieval.index import BuildIndexConfig, build_index, choose_factory, new_papers


def corpus(n: int, start: int = 0) -> pd.DataFrame:
    topics = ["wing flutter", "boundary layer heat transfer", "sentence embeddings", "graph neural networks"]
    rows = [{"paper_id": f"p{i}", "title": f"{topics[i % 4]} study {i}",
             "abstract": f"We study {topics[i % 4]} in setting {i} and report measurements {i * 7}.",
             "content_hash": f"h{i}"} for i in range(start, start + n)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return load_text_encoder(str(tiny_model_dir), "torch", max_seq_length=32)


def test_incremental_build_adds_only_new_papers_and_matches_a_full_build(encoder, tmp_path):
    counts = []

    def embed(texts):
        result = encode_cached(encoder, texts, tmp_path / "cache")
        counts.append(result.n_encoded)
        return result.vectors

    cfg = BuildIndexConfig(recall_queries=5)
    queries = encoder.encode(["wing flutter", "graph networks"])
    first = build_index(corpus(40), embed, queries, cfg, encoder.key)
    assert first.info["mode"] == "full" and first.info["factory"] == "Flat" and counts == [40]
    grown = pd.concat([corpus(40), corpus(3, start=40)], ignore_index=True)
    second = build_index(grown, embed, queries, cfg, encoder.key, previous=first)
    assert second.info["mode"] == "incremental" and second.info["papers_added"] == 3
    assert counts[-1] == 3  # exactly the new papers were encoded
    assert second.index.ntotal == 43 and second.ids["paper_id"].tolist()[-3:] == ["p40", "p41", "p42"]
    full = build_index(grown, embed, queries, cfg, encoder.key)
    np.testing.assert_array_equal(second.index.search(queries, 5)[1], full.index.search(queries, 5)[1])
    assert second.info["recall@10"] == 1.0 and second.info["queries_per_second"] > 0
    assert second.info["memory_bytes"] > 43 * 32 * 4  # the Flat index holds every vector


def test_rebuild_when_papers_change_or_the_model_changes(encoder):
    papers = corpus(10)
    previous_ids, info = papers[["paper_id", "title", "content_hash"]], {"encoder_key": "k", "factory": "Flat"}
    added, why = new_papers(previous_ids, info, corpus(12), "k", "Flat")
    assert len(added) == 2 and why == "2 new papers"
    edited = corpus(10).assign(content_hash=lambda f: f["content_hash"].where(f.index != 3, "new"))
    assert new_papers(previous_ids, info, edited, "k", "Flat") == (None, "1 indexed papers were removed or edited")
    assert new_papers(previous_ids, info, corpus(9), "k", "Flat")[0] is None
    assert new_papers(previous_ids, info, papers, "other", "Flat")[1] == "the model or encoder settings changed"
    assert new_papers(previous_ids, info, papers, "k", "HNSW32")[0] is None
    assert new_papers(None, None, papers, "k", "Flat") == (None, "no previous index")


def test_auto_factory_follows_corpus_size():
    cfg = BuildIndexConfig(flat_max=100, hnsw_max=1000)
    assert choose_factory(100, 384, cfg) == "Flat"
    assert choose_factory(101, 384, cfg) == "HNSW32"
    assert choose_factory(1001, 384, cfg).startswith("IVF")
    assert choose_factory(5, 384, BuildIndexConfig(factory="HNSW16")) == "HNSW16"


def test_hnsw_is_tuned_to_the_target_recall(encoder, tmp_path):
    papers = corpus(300)
    embed = lambda texts: encode_cached(encoder, texts, tmp_path / "cache").vectors  # noqa: E731
    queries = encoder.encode([f"study {i}" for i in range(30)])
    built = build_index(papers, embed, queries, BuildIndexConfig(factory="HNSW8", target_recall=0.9), encoder.key)
    assert built.info["factory"] == "HNSW8" and built.info["recall@10"] >= 0.9 and built.info["search_effort"] >= 16

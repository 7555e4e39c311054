"""build_index's library: full and incremental builds, and what they report."""

import numpy as np
import pandas as pd

from papersim.encoders.cache import encode_cached
from papersim.retrieval.index import (
    IDS_FILE,
    BuildIndexConfig,
    build_index,
    choose_factory,
    indexed_papers,
    new_papers,
)
from papersim.retrieval.passage import passage_text
from tests.conftest import papers_frame


def test_incremental_build_adds_only_new_papers_and_matches_a_full_build(tiny_encoder, tmp_path):
    counts = []

    def embed(texts):
        result = encode_cached(tiny_encoder, texts, tmp_path / "cache")
        counts.append(result.n_encoded)
        return result.vectors

    cfg = BuildIndexConfig(recall_queries=5)
    queries = tiny_encoder.encode(["wing flutter", "graph networks"])
    first = build_index(papers_frame(40), embed, queries, cfg, tiny_encoder.key)
    assert first.info["mode"] == "full" and first.info["factory"] == "Flat" and counts == [40]
    grown = pd.concat([papers_frame(40), papers_frame(3, start=40)], ignore_index=True)
    second = build_index(grown, embed, queries, cfg, tiny_encoder.key, previous=first)
    assert second.info["mode"] == "incremental" and second.info["papers_added"] == 3
    assert counts[-1] == 3  # exactly the new papers were encoded
    assert second.index.ntotal == 43 and second.ids["paper_id"].tolist()[-3:] == ["p40", "p41", "p42"]
    full = build_index(grown, embed, queries, cfg, tiny_encoder.key)
    np.testing.assert_array_equal(second.index.search(queries, 5)[1], full.index.search(queries, 5)[1])
    assert second.info["recall@10"] == 1.0
    assert second.info["memory_bytes"] > 43 * 32 * 4  # the Flat index holds every vector
    # An added paper's own passage finds it first: its vector went in at the row its id was given.
    added = grown.iloc[41]
    rows = second.index.search(tiny_encoder.encode([passage_text(added["title"], added["abstract"])]), 1)[1]
    assert second.ids["paper_id"][rows[0, 0]] == "p41"


def test_the_ids_carry_each_paper_as_the_corpus_holds_it_now_and_an_older_index_has_no_record_hash(
        tiny_encoder, tmp_path):
    def embed(texts):
        return encode_cached(tiny_encoder, texts, tmp_path / "cache").vectors

    cfg, queries = BuildIndexConfig(recall_queries=5), tiny_encoder.encode(["wing flutter"])
    older = build_index(papers_frame(6), embed, queries, cfg, tiny_encoder.key)  # papers.parquet before record_hash
    older.ids.to_parquet(tmp_path / IDS_FILE, index=False)
    assert "record_hash" not in indexed_papers(tmp_path).columns  # compare content hashes with such an index
    papers = papers_frame(8).assign(record_hash=[f"r{i}" for i in range(8)])
    grown = build_index(papers, embed, queries, cfg, tiny_encoder.key, previous=older)
    assert grown.info["mode"] == "incremental" and grown.ids["record_hash"].tolist() == [f"r{i}" for i in range(8)]
    # A title's case and the groups changed: the same content hash (no re-encoding), a new record hash.
    edited = papers.assign(title=papers["title"].where(papers.index != 2, papers["title"].str.upper()),
                           groups=[g if i != 5 else ["page1", "page9"] for i, g in enumerate(papers["groups"])],
                           record_hash=papers["record_hash"].replace({"r2": "e2", "r5": "e5"}))
    again = build_index(edited, embed, queries, cfg, tiny_encoder.key, previous=grown)
    assert again.info["mode"] == "incremental" and again.info["papers_added"] == 0
    assert again.ids["record_hash"].tolist() == ["r0", "r1", "e2", "r3", "r4", "e5", "r6", "r7"]
    assert again.ids.loc[2, "title"] == papers.loc[2, "title"].upper()


def test_rebuild_when_papers_change_or_the_model_changes():
    papers = papers_frame(10)
    previous_ids, info = papers[["paper_id", "title", "content_hash"]], {"encoder_key": "k", "factory": "Flat"}
    added, why = new_papers(previous_ids, info, papers_frame(12), "k", "Flat")
    assert len(added) == 2 and why == "2 new papers"
    edited = papers_frame(10).assign(content_hash=lambda f: f["content_hash"].where(f.index != 3, "new"))
    assert new_papers(previous_ids, info, edited, "k", "Flat") == (None, "1 indexed papers were removed or edited")
    assert new_papers(previous_ids, info, papers_frame(9), "k", "Flat")[0] is None
    assert new_papers(previous_ids, info, papers, "other", "Flat")[1] == "the model or encoder settings changed"
    assert new_papers(previous_ids, info, papers, "k", "HNSW32")[0] is None
    assert new_papers(None, None, papers, "k", "Flat") == (None, "no previous index")


def test_auto_factory_follows_corpus_size():
    cfg = BuildIndexConfig(flat_max=100, hnsw_max=1000)
    assert choose_factory(100, 384, cfg) == "Flat"
    assert choose_factory(101, 384, cfg) == "HNSW32"
    assert choose_factory(1001, 384, cfg).startswith("IVF")
    assert choose_factory(5, 384, BuildIndexConfig(factory="HNSW16")) == "HNSW16"


def test_hnsw_is_tuned_to_the_target_recall(tiny_encoder, tmp_path):
    papers = papers_frame(300)

    def embed(texts):
        return encode_cached(tiny_encoder, texts, tmp_path / "cache").vectors

    queries = tiny_encoder.encode([f"study {i}" for i in range(30)])
    built = build_index(papers, embed, queries, BuildIndexConfig(factory="HNSW8", target_recall=0.9), tiny_encoder.key)
    assert built.info["factory"] == "HNSW8" and built.info["recall@10"] >= 0.9 and built.info["search_effort"] >= 16

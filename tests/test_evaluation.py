"""Judged sets and the systems compared on them."""

import json

import pandas as pd
import pytest

from papersim.encoders.encode import load_text_encoder
from papersim.errors import PapersimError
from papersim.evaluation.evaluate import EvaluateConfig, evaluate_set
from papersim.evaluation.report import comparison_lines, curve_table, eval_report, markdown_table, per_query_table
from papersim.evaluation.sets import held_out_set, load_beir_set
from papersim.retrieval.fusion import Fusion
from tests.conftest import write_jsonl

DOCS = [("d1", "wing flutter", "supersonic wing flutter measured in a wind tunnel"),
        ("d2", "boundary layers", "heat transfer in laminar boundary layers on flat plates"),
        ("d3", "panel flutter", "flutter of thin panels at supersonic speeds"),
        ("d4", "sentence embeddings", "contrastive learning of sentence embeddings for retrieval")]


def write_beir(folder, qrels="query-id\tcorpus-id\tscore\n1\td1\t2\n1\td3\t1\n2\td2\t1\n3\td4\t0\n"):
    write_jsonl(folder / "corpus.jsonl", [{"_id": i, "title": t, "text": a} for i, t, a in DOCS])
    write_jsonl(folder / "queries.jsonl", [{"_id": "1", "text": "supersonic flutter"},
                                           {"_id": "2", "text": "heat transfer boundary layers"},
                                           {"_id": "3", "text": "embeddings"}, {"_id": "4", "text": "unjudged"}])
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def embed(tiny_model_dir):
    return load_text_encoder(str(tiny_model_dir), "torch", max_seq_length=32).encode


def test_beir_set_reads_judged_queries_and_passages(tmp_path):
    s = load_beir_set(write_beir(tmp_path / "mini"))
    assert s.name == "mini" and s.doc_ids == ["d1", "d2", "d3", "d4"]
    assert s.doc_texts[0] == "wing flutter. supersonic wing flutter measured in a wind tunnel"
    assert s.query_ids == ["1", "2", "3"]  # query 4 has no judgments
    assert s.qrels["1"] == {"d1": 2, "d3": 1}
    assert load_beir_set(tmp_path / "mini").content_hash == s.content_hash


def test_beir_errors_name_file_and_line(tmp_path):
    with pytest.raises(PapersimError, match=r"test.tsv, line 3: expected"):
        load_beir_set(write_beir(tmp_path / "bad", qrels="query-id\tcorpus-id\tscore\n1\td1\t2\n1\td3\n"))
    with pytest.raises(PapersimError, match=r"queries.jsonl: not found"):
        folder = write_beir(tmp_path / "noq")
        (folder / "queries.jsonl").unlink()
        load_beir_set(folder)
    folder = write_beir(tmp_path / "badjson")
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(PapersimError, match=r"corpus.jsonl, line 2: not valid JSON"):
        load_beir_set(folder)


def test_all_systems_scored_on_the_same_queries_and_unjudged_ones_skipped(tmp_path, embed):
    s = load_beir_set(write_beir(tmp_path / "mini"))
    cfg = EvaluateConfig(beir_sets=[], systems=["bm25", "base", "trained", "hybrid"], recall_ks=[1, 10])
    result = evaluate_set(s, {"base": embed, "trained": embed}, cfg)
    assert list(result.scores) == ["bm25", "base", "trained", "hybrid"]
    assert (result.n_queries, result.n_skipped) == (2, 1)  # query 3 judges its only doc 0
    # BM25: query 1 finds d1 (rel 2) and d3 (rel 1) first, in some order; query 2 finds d2 first.
    assert result.scores["bm25"]["recall@10"] == 1.0 and result.scores["bm25"]["mrr@10"] == 1.0
    assert result.scores["base"] == result.scores["trained"]  # same model, same numbers
    assert set(result.curves["hybrid"]) == {1, 10}
    report = eval_report({"mini": result})
    assert report["mini"]["n_queries"] == 2 and 0 <= report["mini"]["hybrid"]["ndcg@10"] <= 1
    assert report["mini"]["content_hash"] == s.content_hash != ""  # the gate compares sets by it
    assert json.loads(json.dumps(report)) == report
    table = markdown_table({"mini": result}, ["champion: skipped"])
    assert "| hybrid |" in table and "2 queries, 1 skipped" in table and "- champion: skipped" in table
    assert list(curve_table({"mini": result}).columns[:2]) == ["k", "mini/bm25"]


def test_served_fuses_bm25_with_the_served_encoder_and_is_compared_query_by_query(tmp_path, embed):
    s = load_beir_set(write_beir(tmp_path / "mini"))
    cfg = EvaluateConfig(beir_sets=[], systems=["bm25", "base", "base_hybrid", "served"], recall_ks=[1])
    lexical_only = Fusion(method="convex", alpha=0.0)
    result = evaluate_set(s, {"base": embed, "served": embed}, cfg, served=lexical_only)
    assert list(result.scores) == ["bm25", "base", "base_hybrid", "served"]
    assert result.scores["served"]["ndcg@10"] == result.scores["bm25"]["ndcg@10"]  # alpha 0: BM25's order
    assert result.query_ids == ["1", "2"] and result.per_query["served"]["ndcg@10"].shape == (2,)
    versus = result.served_versus()
    assert set(versus) == {"bm25", "base", "base_hybrid"}
    assert versus["bm25"].mean == 0.0 and versus["bm25"].p_value == 1.0
    lines = comparison_lines(result)
    assert lines[0].startswith("- served vs bm25: ndcg@10 +0.0000 (95% CI +0.0000 to +0.0000")
    assert "served" not in evaluate_set(s, {"base": embed, "served": embed}, cfg).scores  # no fusion given
    table = per_query_table({"mini": result})
    assert len(table) == 8 and set(table.columns) >= {"set", "system", "query_id", "ndcg@10", "recall@100"}


def test_held_out_titles_find_their_abstracts_and_colisting_precision(embed):
    papers = pd.DataFrame({
        "paper_id": ["a", "b", "c", "d", "e"],
        "title": ["Panel flutter", "Wing flutter", "Sentence embeddings", "", "Boundary layers"],
        "abstract": ["flutter of thin panels at supersonic speeds", "flutter of wings at supersonic speeds",
                     "contrastive learning of sentence embeddings", "an untitled note on flutter",
                     "heat transfer in laminar boundary layers"],
        "groups": [["page1"], ["page1"], ["page2"], [], ["big"]],
        "content_hash": list("12345"),
    })
    split = pd.DataFrame({"paper_id": list("abcde"), "split": ["test", "test", "train", "test", "test"]})
    s = held_out_set(papers, split, max_group_size=2)
    assert s.query_ids == ["a", "b", "e"]  # d has no title
    assert s.qrels["a"] == {"a": 1} and s.doc_texts[0] == "flutter of thin panels at supersonic speeds"
    assert s.group_queries == ["a", "b"]  # e is alone in its group: no one to find
    cfg = EvaluateConfig(beir_sets=[], systems=["bm25", "trained", "hybrid"])
    result = evaluate_set(s, {"trained": embed}, cfg)
    # a's neighbours (itself excluded): b shares page1 -> 1 of 10 slots; same for b.
    assert result.scores["bm25"]["colisted_precision@10"] == pytest.approx(0.1)
    assert held_out_set(papers, split.assign(split="train"), 2) is None


def test_config_rejects_unknown_systems_and_hybrid_without_parts():
    with pytest.raises(ValueError, match="unknown systems"):
        EvaluateConfig(systems=["bm25", "gpt"])
    with pytest.raises(ValueError, match="hybrid"):
        EvaluateConfig(systems=["hybrid", "bm25"])
    with pytest.raises(ValueError, match="base_hybrid system fuses bm25 and base"):
        EvaluateConfig(systems=["base_hybrid", "bm25"])
    assert EvaluateConfig(systems=["bm25", "served"]).systems == ["bm25", "served"]

"""What evaluate writes, from a hand-made set result: evaluate.json, the readable table, per-query scores, curves."""

import json
from dataclasses import replace

import numpy as np
import pytest

from papersim.evaluation.evaluate import SetResult
from papersim.evaluation.report import (
    comparison_lines,
    curve_table,
    eval_report,
    markdown_table,
    per_query_table,
)


def result() -> SetResult:
    """Two scored queries (one skipped); served equals bm25 on both, beats hybrid by 0.25 and 0.5."""
    per_query = {"bm25": {"ndcg@10": np.array([0.75, 1.0]), "recall@100": np.array([1.0, 1.0])},
                 "hybrid": {"ndcg@10": np.array([0.5, 0.5]), "recall@100": np.array([1.0, 0.5])},
                 "served": {"ndcg@10": np.array([0.75, 1.0]), "recall@100": np.array([1.0, 1.0])}}
    scores = {system: {metric: float(values.mean()) for metric, values in metrics.items()}
              for system, metrics in per_query.items()}
    curves = {"bm25": {1: 0.5, 100: 1.0}, "hybrid": {1: 0.5, 100: 0.75}, "served": {1: 0.5, 100: 1.0}}
    return SetResult(scores=scores, curves=curves, n_queries=2, n_skipped=1, content_hash="abc123",
                     query_ids=["1", "2"], per_query=per_query)


def test_report_keeps_every_score_and_compares_served_with_each_system():
    report = eval_report({"mini": result()})["mini"]
    assert report["bm25"] == {"ndcg@10": 0.875, "recall@100": 1.0}
    assert report["hybrid"] == {"ndcg@10": 0.5, "recall@100": 0.75}
    assert (report["n_queries"], report["n_skipped_queries"], report["content_hash"]) == (2, 1, "abc123")
    assert report["served_vs"]["bm25"] == {"ndcg@10_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_value": 1.0}
    # differences 0.25 and 0.5: of the 4 sign flips, 2 are as extreme as the observed mean
    assert report["served_vs"]["hybrid"] == {"ndcg@10_diff": 0.375, "ci_low": 0.25, "ci_high": 0.5, "p_value": 0.5}
    per_query_served = result().per_query["served"]["ndcg@10"]
    low, high = report["ndcg@10_ci95"]["served"]["low"], report["ndcg@10_ci95"]["served"]["high"]
    assert low <= per_query_served.mean() <= high and low >= per_query_served.min() and high <= per_query_served.max()
    assert "sample" not in report  # the whole set was scored
    assert json.loads(json.dumps(report)) == report
    without_served = SetResult(scores={"bm25": {"ndcg@10": 0.5}}, curves={}, n_queries=1, n_skipped=0)
    assert "served_vs" not in eval_report({"mini": without_served})["mini"]


def test_comparison_lines_give_the_difference_its_interval_and_a_verdict():
    assert comparison_lines(result()) == [
        ("- served vs bm25: ndcg@10 +0.0000 (95% CI +0.0000 to +0.0000; paired randomisation p = 1.0000; "
         "no significant difference)"),
        # Two queries: an interval above 0, but the randomisation test cannot tell (p 0.5): no label.
        ("- served vs hybrid: ndcg@10 +0.3750 (95% CI +0.2500 to +0.5000; paired randomisation p = 0.5000; "
         "no significant difference)"),
    ]


def test_what_training_adds_is_trained_minus_base_paired_and_absent_without_either():
    per_query = {"base": {"precision@10": np.array([0.1, 0.2, 0.3])},
                 "trained": {"precision@10": np.array([0.3, 0.4, 0.5])}}  # +0.2 on every query
    scores = {s: {m: float(v.mean()) for m, v in metrics.items()} for s, metrics in per_query.items()}
    gained = SetResult(scores=scores, curves={}, n_queries=3, n_skipped=0, per_query=per_query,
                       compared_metric="precision@10")
    gain = eval_report({"similar": gained})["similar"]["trained_vs_base"]
    assert [gain["precision@10_diff"], gain["ci_low"], gain["ci_high"]] == pytest.approx([0.2, 0.2, 0.2])
    assert gain["p_value"] == 0.25  # 2 of the 8 sign flips are as extreme: all + and all -
    assert comparison_lines(gained)[-1].startswith("- trained vs base (what training adds): precision@10 +0.2000 "
                                                   "(95% CI +0.2000 to +0.2000;")
    assert comparison_lines(gained)[-1].endswith("; no significant difference)")  # 3 queries: p 0.25
    assert "trained_vs_base" not in eval_report({"mini": result()})["mini"]  # no base or trained there


def test_markdown_table_bolds_the_best_value_of_each_metric_and_ends_with_the_notes():
    lines = markdown_table({"mini": result()}, ["champion: skipped"]).splitlines()
    assert lines[0] == "### mini (2 queries, 1 skipped: no relevant document)"
    assert "| system | ndcg@10 | recall@100 |" in lines
    assert "| bm25 | **0.8750** | **1.0000** |" in lines and "| hybrid | 0.5000 | 0.7500 |" in lines
    assert comparison_lines(result())[1] in lines
    assert lines[-1] == "- champion: skipped"


def test_per_query_table_has_a_row_per_system_and_query():
    table = per_query_table({"mini": result()})
    assert list(table.columns) == ["set", "system", "query_id", "ndcg@10", "recall@100"] and len(table) == 6
    hybrid = table[table["system"] == "hybrid"].set_index("query_id")
    assert hybrid["recall@100"].to_dict() == {"1": 1.0, "2": 0.5}
    listed = per_query_table({"mini": result(), "similar": replace(result(), clusters=["page1", "page1"])})
    assert listed.loc[listed["set"] == "similar", "cluster"].tolist() == ["page1"] * 6  # what the gate resamples
    assert listed.loc[listed["set"] == "mini", "cluster"].isna().all()


def test_curve_table_has_a_row_per_k_and_a_column_per_set_and_system():
    curves = curve_table({"mini": result()})
    assert list(curves.columns) == ["k", "mini/bm25", "mini/hybrid", "mini/served"]
    assert curves["k"].tolist() == [1, 100] and curves["mini/hybrid"].tolist() == [0.5, 0.75]

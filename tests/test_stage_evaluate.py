"""The evaluate stage: every system on every set, reports written atomically, logged to MLflow."""

import json

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from papersim.evaluation.significance import mean_interval, paired_difference
from stages.evaluate import main


def args(ws, *extra):
    return ["--params", str(ws / "params.yaml"), "--papers", str(ws / "data/processed/papers.parquet"),
            "--pairs", str(ws / "data/pairs"), "--model", str(ws / "models/encoder"),
            "--serving", str(ws / "models/serving.json"), "--per-query", str(ws / "reports/evaluate_per_query.parquet"),
            "--embedding-cache", str(ws / "cache"), "--report", str(ws / "reports/evaluate.json"),
            "--table", str(ws / "reports/evaluate.md"), "--curve", str(ws / "reports/recall_at_k.csv"),
            "--plot", str(ws / "reports/recall_at_k.png"), *extra]


def test_reports_every_system_on_every_set_and_logs_them(workspace, tracking, capsys):
    assert main(args(workspace)) == 0
    report = json.loads((workspace / "reports/evaluate.json").read_text())
    assert set(report) == {"mini", "test_split", "similar"}
    assert {"bm25", "base", "trained", "hybrid", "base_hybrid", "served"} < set(report["mini"])
    assert "champion" not in report["mini"]
    per_query = pd.read_parquet(workspace / "reports/evaluate_per_query.parquet")
    served = per_query[(per_query["set"] == "test_split") & (per_query["system"] == "served")]
    assert len(served) == 6 and served["ndcg@10"].mean() == pytest.approx(report["test_split"]["served"]["ndcg@10"])
    # The comparison is served minus bm25 on the same queries, paired by query id: recomputed here from the
    # per-query scores (paired_difference's own numbers are checked on known cases in test_significance).
    bm25 = per_query[(per_query["set"] == "test_split") & (per_query["system"] == "bm25")]
    pairs = served.merge(bm25, on="query_id", suffixes=("_served", "_bm25"))
    expected = paired_difference(pairs["ndcg@10_served"].to_numpy(), pairs["ndcg@10_bm25"].to_numpy())
    versus = report["test_split"]["served_vs"]["bm25"]
    assert len(pairs) == 6 and pairs["ndcg@10_served"].ne(pairs["ndcg@10_bm25"]).any()  # not a trivial tie
    assert (versus["ndcg@10_diff"], versus["ci_low"], versus["ci_high"], versus["p_value"]) == pytest.approx(
        (expected.mean, expected.low, expected.high, expected.p_value))
    assert report["test_split"]["ndcg@10_ci95"]["served"] == pytest.approx(dict(zip(
        ("low", "high"), mean_interval(served["ndcg@10"].to_numpy()))))
    assert report["mini"]["n_queries"] == 2 and report["test_split"]["n_queries"] == 6
    assert "colisted_precision@10" in report["test_split"]["hybrid"]
    assert report["test_split"]["bm25"]["recall@100"] == 1.0  # each title shares its words with its abstract
    table = (workspace / "reports/evaluate.md").read_text()
    assert "champion: skipped" in table and "### test_split (6 queries" in table
    assert "- served vs bm25: ndcg@10" in table and "served: the trained encoder, convex (alpha=0.5" in table
    assert (workspace / "reports/recall_at_k.png").read_bytes()[:4] == b"\x89PNG"
    assert "| hybrid |" in capsys.readouterr().out
    # The similar task: the six test papers (every fourth, all on page0) ask for their five page-mates.
    similar = report["similar"]
    assert similar["facts"] == {"papers": 6, "groups": 1, "docs": 24, "relevant_per_paper": 5.0}
    assert similar["n_queries"] == 6 and "similar_unseen" not in report  # a split without held-out listings
    assert {"bm25", "mlt", "base", "trained", "hybrid", "base_hybrid", "served"} <= set(similar)
    assert set(similar["served_vs"]["bm25"]) == {"precision@10_diff", "ci_low", "ci_high", "p_value"}
    assert {"precision@10_ci95", "ndcg@10_ci95", "recall@100_ci95", "mrr@10_ci95"} <= set(similar)
    # Each paper shares its topic's words with its page-mates only: more-like-this finds all five first.
    assert similar["mlt"]["precision@10"] == pytest.approx(0.5) and similar["mlt"]["recall@10"] == 1.0
    assert "### similar (6 queries, 0 skipped: no relevant document; 6 held-out papers" in table
    assert "- served vs bm25: precision@10" in table
    run = MlflowClient().search_runs([mlflow.get_experiment_by_name(tracking).experiment_id])[0]
    assert run.info.run_name == "evaluate"
    assert run.data.metrics["mini.hybrid.ndcg_at_10"] == report["mini"]["hybrid"]["ndcg@10"]
    assert "eval_set.mini.content_hash" in run.data.tags


def test_the_champion_is_scored_with_its_own_encoder(workspace, tracking):
    from papersim.encoders.load import save_tiny_encoder

    champion = save_tiny_encoder(workspace / "champion", seed=1)  # other weights than the trained encoder's
    assert main(args(workspace, "--champion-model", str(champion))) == 0
    report = json.loads((workspace / "reports/evaluate.json").read_text())
    # The same encoder scored as `trained` in a second run gives the champion's numbers, and they are not trained's.
    assert main(args(workspace, "--model", str(champion), "--report", str(workspace / "champion.json"))) == 0
    as_trained = json.loads((workspace / "champion.json").read_text())
    for name in ("mini", "test_split"):
        assert report[name]["champion"] == as_trained[name]["trained"]
    assert [report[n]["champion"] for n in ("mini", "test_split")] != \
        [report[n]["trained"] for n in ("mini", "test_split")]


def test_bad_judgments_name_file_and_line_and_keep_the_last_reports(workspace, tracking, capsys):
    assert main(args(workspace)) == 0
    before = (workspace / "reports/evaluate.json").read_bytes()
    qrels = workspace / "beir/mini/qrels/test.tsv"
    qrels.write_text(qrels.read_text() + "q2\td1\tvery\n")
    assert main(args(workspace)) == 1
    assert "test.tsv, line 4: expected" in capsys.readouterr().err
    assert (workspace / "reports/evaluate.json").read_bytes() == before
    assert not list((workspace / "reports").glob(".*tmp*"))


def test_missing_model_is_a_clear_error(workspace, tracking, capsys):
    assert main(args(workspace, "--model", str(workspace / "nope"))) == 1
    assert "no trained model; run the train stage first" in capsys.readouterr().err


def test_a_set_the_serving_choice_was_made_on_is_labelled_a_development_set(workspace, tracking):
    serving = json.loads((workspace / "models/serving.json").read_text())
    serving["evidence"] = {"evidence": "judged", "selection_sets": [str(workspace / "beir/mini")]}
    (workspace / "models/serving.json").write_text(json.dumps(serving))
    assert main(args(workspace)) == 0
    table = (workspace / "reports/evaluate.md").read_text()
    assert "- mini: the serving choice was made on these judgments (train.selection_sets): a development set" in table
    serving["evidence"]["selection_sets"] = [str(workspace / "elsewhere/mine")]
    (workspace / "models/serving.json").write_text(json.dumps(serving))
    assert main(args(workspace)) == 0
    assert "development set" not in (workspace / "reports/evaluate.md").read_text()
    # A set a shipped default was chosen on (Cranfield: the fusion rule) is one too, whatever train chose on.
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["evaluate"]["development_sets"] = [str(workspace / "beir/mini")]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(args(workspace)) == 0
    assert ("- mini: a shipped default (the fusion rule) was chosen on these judgments (evaluate.development_sets): "
            "a development set here, not a held-out one") in (workspace / "reports/evaluate.md").read_text()

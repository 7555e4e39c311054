"""A refresh's data checks, description and tags (the flow itself: tests/test_flows_retrain.py)."""

import pytest

from papersim.lifecycle.drift import CorpusChange
from papersim.lifecycle.refresh import (changed_anything, check_refresh, model_version, refresh_decision,
                                        refresh_description, refresh_tags)
from papersim.lifecycle.retrain import RetrainConfig
from tests.test_retrain import report

CFG = RetrainConfig(gate_sets=["a", "b"], primary_metric="served/ndcg@10")
INDEX = {"recall@10": 0.97, "similar_recall@10": 0.99}
CHANGE = CorpusChange(1000, 1098, new=100, changed=3, removed=2)
CHAMPION = {"version": "4", "tags": {}}


def test_a_refresh_above_the_floor_with_its_recall_passes_and_says_so():
    check = check_refresh(report(0.40, 0.50, baseline=0.30), INDEX, CFG, target_recall=0.95)
    assert check.passed and check.primary == pytest.approx(0.45)
    assert "recall@10 0.970" in check.reason and "smallest margin +0.1000" in check.reason
    assert check.floor == {"a/bm25": pytest.approx(0.10), "b/bm25": pytest.approx(0.20)}


@pytest.mark.parametrize("index, expected", [
    ({"recall@10": 0.90}, "recall@10 0.900 < target 0.95"),
    ({"recall@10": 0.97, "similar_recall@10": 0.80}, "similar_recall@10 0.800 < target 0.95"),
])
def test_a_refresh_below_the_recall_target_is_refused(index, expected):
    check = check_refresh(report(0.40, 0.50, baseline=0.30), index, CFG, target_recall=0.95)
    assert not check.passed and check.reason.startswith("refused: ") and expected in check.reason
    assert not refresh_decision(CHAMPION, CHANGE, check, CFG.primary_metric)["promote"]


def test_a_refresh_below_the_floor_is_served_with_a_warning_the_next_retrain_check_acts_on():
    from papersim.lifecycle.retrain import retrain_needed
    from tests.test_retrain import NO_DRIFT, UNCHANGED

    check = check_refresh(report(0.25, 0.50, baseline=0.30), INDEX, CFG, target_recall=0.95)
    assert check.passed and check.warnings == ("a: served/ndcg@10 trails bm25/ndcg@10 by 0.0500",)
    assert "served anyway" in check.reason
    tags = refresh_tags(CHAMPION, CHANGE, check)
    assert tags["papersim.refresh_warning"] == check.warnings[0]
    decision = retrain_needed(True, False, UNCHANGED, NO_DRIFT, CFG, floor_warning=tags["papersim.refresh_warning"])
    assert decision.retrain and "latest refresh trails a baseline" in decision.reason
    assert "papersim.refresh_warning" not in refresh_tags(CHAMPION, CHANGE, check_refresh(
        report(0.40, 0.50, baseline=0.30), INDEX, CFG, target_recall=0.95))


def test_a_refresh_trailing_a_baseline_by_noise_has_no_warning_and_beyond_noise_has_one():
    trailing = report(0.25, 0.50, baseline=0.30)  # set a: served 0.05 behind bm25 on its mean
    trailing["a"]["served_vs"] = {"bm25": {"ndcg@10_diff": -0.05, "ci_low": -0.12, "ci_high": 0.02}}
    noise = check_refresh(trailing, INDEX, CFG, target_recall=0.95)
    assert noise.passed and not noise.warnings and noise.floor["a/bm25"] == pytest.approx(-0.05)
    trailing["a"]["served_vs"]["bm25"].update(ci_low=-0.09, ci_high=-0.01)
    below = check_refresh(trailing, INDEX, CFG, target_recall=0.95)
    assert below.passed and "95% CI of the difference -0.0900 to -0.0100" in below.warnings[0]
    trailing["a"]["served_vs"]["bm25"]["p_value"] = 0.2  # the interval below 0, the test not: one verdict, noise
    assert not check_refresh(trailing, INDEX, CFG, target_recall=0.95).warnings
    trailing["a"]["served_vs"]["bm25"]["p_value"] = 0.01
    assert "-0.0100, p 0.0100)" in check_refresh(trailing, INDEX, CFG, target_recall=0.95).warnings[0]


def test_the_description_and_tags_name_the_model_version_carried_through_refreshes():
    check = check_refresh(report(0.40, 0.50, baseline=0.30), INDEX, CFG, target_recall=0.95)
    trained = {"version": "1", "tags": {}}
    assert model_version(trained) == "1"
    first = refresh_tags(trained, CHANGE)
    assert first == {"papersim.refresh_of": "1", "papersim.model_version": "1", "papersim.refresh.added": "100",
                     "papersim.refresh.changed": "3", "papersim.refresh.removed": "2"}
    refreshed = {"version": "2", "tags": first}  # a refresh of the refresh carries the same model
    assert model_version(refreshed) == "1" and refresh_tags(refreshed, CHANGE)["papersim.refresh_of"] == "2"
    text = refresh_description(refreshed, CHANGE, check)
    assert text.startswith("Refresh of the v1 model: a new index (100 added, 3 changed, 2 removed papers), "
                           "replacing champion v2. No retraining, so no significance test: data checks passed")
    decision = refresh_decision(refreshed, CHANGE, check, CFG.primary_metric)
    assert decision["promote"] and decision["primary"] == pytest.approx(0.45)


def test_only_a_changed_corpus_needs_a_refresh():
    assert changed_anything(CHANGE) and changed_anything(CorpusChange(10, 10, new=0, changed=1, removed=0))
    assert not changed_anything(CorpusChange(10, 10, new=0, changed=0, removed=0))

"""The retraining flow's decisions: retrain or skip, promote or keep the champion."""

import numpy as np
import pandas as pd
import pytest

from papersim.errors import PapersimError
from papersim.lifecycle.drift import CorpusChange, EmbeddingDrift
from papersim.lifecycle.retrain import (
    RetrainConfig,
    needs_rescore,
    eval_set_hashes,
    gate,
    params_fingerprint,
    primary_value,
    retrain_needed,
)

# The mean rule: report means only (the significant rule, the default, pairs per-query scores: SIG below).
CFG = RetrainConfig(gate_sets=["a", "b"], primary_metric="served/ndcg@10", min_delta=0.005,
                    guard_metrics=["served/recall@100", "trained/ndcg@10"], max_regression=0.01, gate_rule="mean")
SIG = RetrainConfig(gate_sets=["a", "b"], primary_metric="served/ndcg@10", guard_metrics=["served/recall@100"])


def report(ndcg_a: float, ndcg_b: float, recall: float = 0.9, trained: float = 0.5, baseline: float = 0.1) -> dict:
    def one(ndcg):
        return {"served": {"ndcg@10": ndcg, "recall@100": recall}, "trained": {"ndcg@10": trained},
                "bm25": {"ndcg@10": baseline}, "base": {"ndcg@10": baseline - 0.01},
                "base_hybrid": {"ndcg@10": baseline - 0.02},
                "n_queries": 10, "n_skipped_queries": 0, "content_hash": "h"}
    return {"a": one(ndcg_a), "b": one(ndcg_b)}


def test_first_model_is_promoted():
    decision = gate(report(0.3, 0.4), None, CFG)
    assert decision.promote and "no champion" in decision.reason and decision.primary == pytest.approx(0.35)


def test_improvement_of_at_least_min_delta_promotes():
    decision = gate(report(0.41, 0.40), report(0.40, 0.40), CFG)
    assert decision.promote and decision.champion_primary == pytest.approx(0.40)
    assert decision.deltas["a/served/ndcg@10"] == pytest.approx(0.01)


def test_improvement_below_min_delta_keeps_the_champion():
    decision = gate(report(0.404, 0.40), report(0.40, 0.40), CFG)  # +0.002 on average
    assert not decision.promote and "below min_delta" in decision.reason


def test_a_guard_metric_dropping_too_far_keeps_the_champion():
    decision = gate(report(0.5, 0.5, recall=0.85), report(0.4, 0.4, recall=0.9), CFG)
    assert not decision.promote
    assert "a/served/recall@100 -0.0500" in decision.reason and "b/served/recall@100" in decision.reason


def test_a_drop_within_max_regression_is_allowed():
    assert gate(report(0.5, 0.5, trained=0.495), report(0.4, 0.4, trained=0.5), CFG).promote


def test_served_below_the_best_baseline_on_a_gate_set_is_refused_even_without_a_champion():
    candidate = report(0.45, 0.5, baseline=0.46)  # a: served 0.45 < bm25 0.46; b: served 0.5 > 0.46
    decision = gate(candidate, None, CFG)
    assert not decision.promote and "baseline floor" in decision.reason
    assert "a: served/ndcg@10 trails bm25/ndcg@10 by 0.0100" in decision.reason and "b:" not in decision.reason
    assert decision.floor == {"a/bm25": pytest.approx(-0.01), "b/bm25": pytest.approx(0.04)}
    assert not gate(candidate, report(0.3, 0.3), CFG).promote  # better than the champion does not help
    lenient = RetrainConfig(gate_sets=["a", "b"], primary_metric="served/ndcg@10", floor_tolerance=0.02)
    assert gate(candidate, None, lenient).promote


def test_the_floor_uses_the_best_of_the_configured_baselines():
    candidate = report(0.5, 0.5)
    candidate["b"]["base_hybrid"]["ndcg@10"] = 0.55  # the plain fusion is the strongest baseline on b
    decision = gate(candidate, None, CFG)
    assert not decision.promote and "b: served/ndcg@10 trails base_hybrid/ndcg@10 by 0.0500" in decision.reason
    no_floor = RetrainConfig(gate_sets=["a", "b"], primary_metric="served/ndcg@10", floor_baselines=[])
    assert gate(candidate, None, no_floor).promote


def test_missing_metric_names_what_is_missing():
    bad = report(0.4, 0.4)
    del bad["b"]["trained"]
    with pytest.raises(PapersimError, match="no b/trained/ndcg@10"):
        gate(report(0.5, 0.5), bad, CFG)


def test_all_sets_when_gate_sets_is_empty():
    cfg = RetrainConfig(gate_sets=[])
    assert primary_value(report(0.2, 0.4), cfg) == pytest.approx(0.3)
    assert eval_set_hashes(report(0.2, 0.4)) == {"a": "h", "b": "h"}
    # the similar block is gated on its own metric, never averaged into search's primary
    assert primary_value(with_similar(report(0.2, 0.4), served=0.9), cfg) == pytest.approx(0.3)


def with_similar(base: dict, served: float, best_baseline: float = 0.2, content_hash: str = "s") -> dict:
    """A report with the similar task's block: served precision@10 and the baselines'."""
    return {**base, "similar": {"served": {"precision@10": served, "ndcg@10": 0.0},
                                "bm25": {"precision@10": best_baseline}, "base": {"precision@10": best_baseline - 0.01},
                                "base_hybrid": {"precision@10": best_baseline - 0.02}, "content_hash": content_hash}}


def test_the_similar_task_has_a_floor_of_its_own():
    decision = gate(with_similar(report(0.4, 0.4), served=0.19), None, CFG)  # trails bm25's 0.2 by 0.01
    assert not decision.promote
    assert "similar: served/precision@10 trails bm25/precision@10 by 0.0100" in decision.reason
    assert decision.floor["similar/bm25"] == pytest.approx(-0.01)
    assert gate(with_similar(report(0.4, 0.4), served=0.25), None, CFG).promote


def test_a_champion_better_at_similar_papers_is_kept_even_when_search_improves():
    champion = with_similar(report(0.40, 0.40), served=0.30)
    worse = gate(with_similar(report(0.45, 0.45), served=0.28), champion, CFG)
    assert not worse.promote and "the similar task below min_delta" in worse.reason
    assert worse.deltas["similar/served/precision@10"] == pytest.approx(-0.02)
    better = gate(with_similar(report(0.45, 0.45), served=0.31), champion, CFG)
    assert better.promote and "similar/served/precision@10 +0.0100" in better.reason
    # No similar block (a corpus without co-listing groups): search decides alone.
    assert gate(report(0.45, 0.45), report(0.40, 0.40), CFG).promote


def test_a_champion_scored_before_the_similar_task_is_rescored():
    candidate = with_similar(report(0.4, 0.4), served=0.3)
    assert needs_rescore(candidate, report(0.4, 0.4), CFG)  # no similar block
    assert not needs_rescore(candidate, with_similar(report(0.4, 0.4), served=0.2), CFG)
    assert needs_rescore(candidate, with_similar(report(0.4, 0.4), served=0.2, content_hash="other"), CFG)


def scored(a: np.ndarray, b: np.ndarray) -> tuple[dict, pd.DataFrame]:
    """(report, per-query table) of a system whose served nDCG@10 per query is `a` on set a, `b` on set b:
    the report's means are the tables' (as evaluate writes both)."""
    frame = pd.concat([pd.DataFrame({"set": name, "system": "served", "query_id": [f"q{i}" for i in range(len(v))],
                                     "ndcg@10": v}) for name, v in (("a", a), ("b", b))], ignore_index=True)
    return report(float(np.mean(a)), float(np.mean(b)), baseline=0.0), frame


CHAMPION_A = np.linspace(0.2, 0.8, 40)  # 40 queries a set
CHAMPION_B = np.linspace(0.3, 0.7, 30)


def test_a_gain_within_noise_keeps_the_champion_and_the_reason_gives_the_interval():
    champion = scored(CHAMPION_A, CHAMPION_B)
    jitter = np.random.default_rng(0).normal(0, 0.15, size=70)  # a large per-query spread around a +0.01 gain
    candidate = scored(CHAMPION_A + 0.01 + jitter[:40] - jitter[:40].mean(),
                       CHAMPION_B + 0.01 + jitter[40:] - jitter[40:].mean())
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    low, high = decision.interval
    assert not decision.promote and low < 0 < 0.01 < high
    p = decision.reason.split(", p ")[1][:6]
    assert decision.reason == (f"served/ndcg@10 {decision.primary:.4f} vs champion {decision.champion_primary:.4f} "
                               f"(+0.0100, 95% CI {low:+.4f} to {high:+.4f}, p {p}): not significantly better (the "
                               "interval reaches 0 or p >= 0.05): the champion stays")
    assert float(p) > 0.05
    mean_rule = RetrainConfig(gate_sets=["a", "b"], primary_metric="served/ndcg@10", gate_rule="mean")
    assert gate(candidate[0], champion[0], mean_rule).promote  # what churned the champion before


def test_a_gain_on_every_query_promotes_with_its_interval():
    champion = scored(CHAMPION_A, CHAMPION_B)
    candidate = scored(CHAMPION_A + 0.03, CHAMPION_B + 0.03)  # the same gain on every query: no spread at all
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert decision.promote and decision.interval == pytest.approx([0.03, 0.03])
    assert "+0.0300, 95% CI +0.0300 to +0.0300, p 0.0001) >= min_delta 0.0, significantly better" in decision.reason
    assert decision.paired["b/served/ndcg@10"]["diff"] == pytest.approx(0.03)


def test_a_gate_set_significantly_worse_keeps_the_champion_although_the_mean_gains():
    champion = scored(CHAMPION_A, CHAMPION_B)
    candidate = scored(CHAMPION_A + 0.2, CHAMPION_B - 0.05)  # mean over the sets +0.075, b worse on every query
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert not decision.promote and decision.interval[0] > 0
    assert "significantly worse on b/served/ndcg@10 -0.0500 (95% CI -0.0500 to -0.0500, p 0.0002)" in decision.reason
    assert "a/served" not in decision.reason.split("significantly worse on")[1]


def with_similar_queries(scored_pair: tuple[dict, pd.DataFrame], served: np.ndarray) -> tuple[dict, pd.DataFrame]:
    """A scored system with the similar task too: served precision@10 per held-out paper `served`."""
    report_, frame = scored_pair
    papers = pd.DataFrame({"set": "similar", "system": "served", "query_id": [f"p{i}" for i in range(len(served))],
                           "precision@10": served})
    return with_similar(report_, float(served.mean()), best_baseline=0.0), pd.concat([frame, papers], ignore_index=True)


SIMILAR = np.linspace(0.1, 0.5, 35)  # the champion's precision@10 on 35 held-out papers


def test_a_candidate_significantly_better_at_similar_papers_and_level_at_search_is_promoted():
    champion = with_similar_queries(scored(CHAMPION_A, CHAMPION_B), SIMILAR)
    candidate = with_similar_queries(scored(CHAMPION_A, CHAMPION_B), SIMILAR + 0.1)  # search equal, +0.1 a paper
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert decision.promote and "significantly better at similar papers" in decision.reason
    assert "similar/served/precision@10 +0.1000 (95% CI +0.1000 to +0.1000, p 0.0002)" in decision.reason
    noisy = SIMILAR + 0.01 + np.random.default_rng(1).normal(0, 0.2, 35)  # within noise on similar papers too
    candidate = with_similar_queries(scored(CHAMPION_A, CHAMPION_B), noisy)
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert not decision.promote and "(the interval reaches 0 or p >= 0.05 on both tasks): the champion stays" in \
        decision.reason
    # better at search, significantly worse at similar papers: kept
    candidate = with_similar_queries(scored(CHAMPION_A + 0.03, CHAMPION_B + 0.03), SIMILAR - 0.05)
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert not decision.promote and "significantly worse on similar/served/precision@10 -0.0500" in decision.reason


def test_two_listings_papers_moving_together_cannot_alone_promote_or_fail_the_floor():
    """35 held-out papers on 7 listings of 5. The candidate finds more page-mates for every paper of two
    listings and is the champion elsewhere: query by query a significant gain, by listing two listings' luck."""
    listings = [f"page{i // 5}" for i in range(35)]
    champion = with_similar_queries(scored(CHAMPION_A, CHAMPION_B), SIMILAR)
    lucky = SIMILAR + np.where(np.arange(35) < 10, 0.3, 0.0)
    candidate = with_similar_queries(scored(CHAMPION_A, CHAMPION_B), lucky)
    unclustered = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert unclustered.promote  # without listings, the two listings read as a significant gain
    candidate[1].loc[candidate[1]["set"] == "similar", "cluster"] = listings  # as evaluate writes the similar set
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert not decision.promote and "(the interval reaches 0 or p >= 0.05 on both tasks)" in decision.reason
    assert decision.paired["similar/served/precision@10"]["p_value"] == pytest.approx(0.5)  # 2 of 7 listings
    assert decision.paired["similar/served/precision@10"]["ci_low"] == pytest.approx(0.0)
    # The floor: served trails bm25 by 0.011 on the mean, but by listing the difference's interval reaches 0.
    trailing = with_similar(report(0.4, 0.4), served=0.189)
    trailing["similar"]["served_vs"] = {"bm25": {"precision@10_diff": -0.011, "ci_low": -0.06, "ci_high": 0.04,
                                                 "p_value": 0.6}}
    assert gate(trailing, None, SIG).promote
    assert not gate(trailing, None, CFG).promote  # the mean rule keeps the mean floor
    trailing["similar"]["served_vs"]["bm25"].update(ci_low=-0.03, ci_high=-0.002)  # the interval below 0 ...
    assert gate(trailing, None, SIG).promote  # ... but p 0.6: one verdict, as evaluate's, says noise
    trailing["similar"]["served_vs"]["bm25"]["p_value"] = 0.01  # below beyond noise
    refused = gate(trailing, None, SIG)
    assert not refused.promote and "(95% CI of the difference -0.0300 to -0.0020, p 0.0100, by listing)" in \
        refused.reason


def with_unseen(scored_pair: tuple[dict, pd.DataFrame], served: np.ndarray, listings: list[str],
                content_hash: str = "u") -> tuple[dict, pd.DataFrame]:
    """A scored system with the similar task's unseen-listings block too: served precision@10 per paper of a
    listing held out of training whole, clustered by listing as evaluate writes it."""
    report_, frame = scored_pair
    block = with_similar({}, float(served.mean()), best_baseline=0.0, content_hash=content_hash)["similar"]
    papers = pd.DataFrame({"set": "similar_unseen", "system": "served", "precision@10": served, "cluster": listings,
                           "query_id": [f"u{i}" for i in range(len(served))]})
    return {**report_, "similar_unseen": block}, pd.concat([frame, papers], ignore_index=True)


UNSEEN = np.linspace(0.05, 0.3, 48)  # the champion's precision@10 on 48 papers of 12 unseen listings
UNSEEN_LISTINGS = [f"held{i // 4}" for i in range(48)]


def test_a_candidate_worse_on_unseen_listings_beyond_noise_is_refused_however_it_does_on_known_ones():
    champion = with_unseen(with_similar_queries(scored(CHAMPION_A, CHAMPION_B), SIMILAR), UNSEEN, UNSEEN_LISTINGS)
    known_better = with_similar_queries(scored(CHAMPION_A, CHAMPION_B), SIMILAR + 0.1)
    # Better on the listings it trained on, 0.04 worse on every paper of all 12 unseen listings (p = 2/4096).
    candidate = with_unseen(known_better, UNSEEN - 0.04, UNSEEN_LISTINGS)
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert not decision.promote
    assert "significantly worse on similar_unseen/served/precision@10 -0.0400" in decision.reason
    assert decision.deltas["similar_unseen/served/precision@10"] == pytest.approx(-0.04)
    # The same loss on 3 unseen listings is within noise (p >= 2/8): the known listings' gain promotes.
    few = [f"held{i // 16}" for i in range(48)]
    candidate = with_unseen(known_better, UNSEEN - 0.04, few)
    decision = gate(candidate[0], champion[0], SIG, candidate[1], champion[1])
    assert decision.promote and "significantly better at similar papers" in decision.reason
    assert decision.paired["similar_unseen/served/precision@10"]["p_value"] == pytest.approx(0.25)


def test_the_unseen_listings_have_a_floor_too_and_a_champion_without_them_is_rescored():
    candidate = with_unseen(with_similar_queries(scored(CHAMPION_A, CHAMPION_B), SIMILAR), UNSEEN, UNSEEN_LISTINGS)
    assert gate(candidate[0], None, SIG).promote
    candidate[0]["similar_unseen"]["base"]["precision@10"] = UNSEEN.mean() + 0.02  # base ahead of served
    candidate[0]["similar_unseen"]["served_vs"] = {"base": {"precision@10_diff": -0.02, "ci_low": -0.035,
                                                            "ci_high": -0.005, "p_value": 0.3}}
    assert gate(candidate[0], None, SIG).promote  # behind on the mean, not beyond noise by listing
    candidate[0]["similar_unseen"]["served_vs"]["base"]["p_value"] = 0.001
    refused = gate(candidate[0], None, SIG)
    assert not refused.promote and "similar_unseen: served/precision@10 trails base/precision@10 by 0.0200" in \
        refused.reason and "by listing" in refused.reason
    champion = with_similar_queries(scored(CHAMPION_A, CHAMPION_B), SIMILAR)  # scored before unseen listings
    assert needs_rescore(candidate[0], champion[0], SIG)
    assert not needs_rescore(candidate[0], candidate[0], SIG)


def test_the_significant_rule_needs_both_per_query_tables_and_rescoring_supplies_the_champions():
    champion = scored(CHAMPION_A, CHAMPION_B)
    with pytest.raises(PapersimError, match="gate_rule: mean"):
        gate(champion[0], champion[0], SIG, champion[1], None)
    assert needs_rescore(champion[0], champion[0], SIG, champion_has_queries=False)
    assert not needs_rescore(champion[0], champion[0], SIG, champion_has_queries=True)
    assert not needs_rescore(champion[0], champion[0], CFG, champion_has_queries=False)  # the mean rule reads means
    fewer = champion[1][champion[1]["query_id"] != "q3"]  # a champion scored on other queries
    with pytest.raises(PapersimError, match="different queries"):
        gate(champion[0], champion[0], SIG, champion[1], fewer)


@pytest.mark.parametrize("values, message", [
    ({"primary_metric": "ndcg@10"}, "system/metric"),
    ({"min_delta": -1}, ">= 0"),
    ({"gate_rule": "median"}, "gate_rule must be one of significant, mean"),
    ({"drift_p_value": 0}, "drift_p_value"),
    ({"schedule_cron": "weekly"}, "five fields"),
])
def test_bad_config_is_rejected(values, message):
    with pytest.raises(PapersimError, match=message):
        RetrainConfig(**values)


UNCHANGED = CorpusChange(n_reference=100, n_current=100, new=0, changed=0, removed=0)
NO_DRIFT = EmbeddingDrift(mmd2=0.0, p_value=0.8, centroid_shift=0.0, bandwidth=1.0, n_reference=50,
                          n_current=50, permutations=100)


def test_nothing_changed_skips_with_the_reason():
    decision = retrain_needed(True, False, UNCHANGED, NO_DRIFT, RetrainConfig())
    assert not decision.retrain and "nothing to do" in decision.reason and "same params" in decision.reason


@pytest.mark.parametrize("kwargs, expected", [
    ({"champion_exists": False}, "no champion"),
    ({"params_changed": True}, "params differ"),
    ({"change": CorpusChange(100, 120, new=20, changed=0, removed=0)}, "20 new"),  # above min_changed_share
    ({"drift": EmbeddingDrift(0.2, 0.001, 0.1, 1.0, 50, 50, 100)}, "embedding drift"),
    ({"force": True}, "forced"),
])
def test_each_reason_retrains(kwargs, expected):
    args = {"champion_exists": True, "params_changed": False, "change": UNCHANGED, "drift": NO_DRIFT,
            "cfg": RetrainConfig(), **kwargs}
    decision = retrain_needed(**args)
    assert decision.retrain and expected in decision.reason


def test_small_changes_below_the_threshold_are_a_refresh_and_an_unchanged_corpus_is_not():
    change = CorpusChange(1000, 1001, new=1, changed=0, removed=0)
    small = retrain_needed(True, False, change, NO_DRIFT, RetrainConfig(min_changed_share=0.01))
    assert not small.retrain and small.refresh and "1 new" in small.reason
    assert not retrain_needed(True, False, UNCHANGED, NO_DRIFT, RetrainConfig(min_changed_share=0.01)).refresh
    # above the threshold, or with params changed, it is a retrain (which refreshes nothing by itself)
    big = retrain_needed(True, False, CorpusChange(1000, 1100, new=100, changed=0, removed=0), NO_DRIFT,
                         RetrainConfig(min_changed_share=0.01))
    assert big.retrain and not big.refresh
    assert retrain_needed(True, True, change, NO_DRIFT, RetrainConfig(min_changed_share=0.01)).retrain


def test_params_fingerprint_covers_the_pipeline_sections_only():
    params = {"train": {"max_steps": 30}, "retrain": {"min_delta": 0.0}}
    same = {"train": {"max_steps": 30}, "retrain": {"min_delta": 0.5}}
    assert params_fingerprint(params) == params_fingerprint(same)
    assert params_fingerprint(params) != params_fingerprint({"train": {"max_steps": 31}})


def test_a_retrain_fires_on_change_since_training_however_many_refreshes_served_it():
    cfg = RetrainConfig(min_changed_share=0.1)
    # 20 papers a day for a week: each refresh served the day's papers, the model still saw none of them
    since_training = CorpusChange(1000, 1140, new=140, changed=0, removed=0)
    since_refresh = CorpusChange(1120, 1140, new=20, changed=0, removed=0)
    decision = retrain_needed(True, False, since_training, NO_DRIFT, cfg, since_refresh=since_refresh)
    assert decision.retrain and "since the model was trained: 140 new" in decision.reason
    within = CorpusChange(1000, 1080, new=80, changed=0, removed=0)
    refresh = retrain_needed(True, False, within, NO_DRIFT, cfg, since_refresh=since_refresh)
    assert refresh.refresh and not refresh.retrain and "20 new" in refresh.reason and "8.00%" in refresh.reason
    served = retrain_needed(True, False, within, NO_DRIFT, cfg, since_refresh=UNCHANGED)
    assert not served.refresh and not served.retrain and "nothing to do" in served.reason


def test_a_run_with_overrides_is_never_promoted_whatever_its_gate():
    from papersim.lifecycle.retrain import experiment_decision

    passed = experiment_decision({"promote": True, "reason": "beats the champion"}, {"train.max_steps": 240})
    assert not passed["promote"] and "train.max_steps" in passed["reason"] and "gate passed" in passed["reason"]


def test_a_refresh_reads_only_the_sections_it_builds_with():
    from papersim.lifecycle.retrain import refresh_params_differ

    champion = {"ingest": {"sources": []}, "train": {"max_steps": 60}, "build_index": {"factory": "auto"},
                "evaluate": {"depth": 100}}
    assert refresh_params_differ({**champion, "ingest": {"sources": ["new.jsonl"]}, "train": {"max_steps": 9}},
                                 champion) == []
    assert refresh_params_differ({**champion, "build_index": {"factory": "HNSW32"}}, champion) == ["build_index"]

"""Paired comparisons of two systems on the same queries: bootstrap interval and randomisation test."""

import numpy as np
import pytest

from papersim.evaluation import significance
from papersim.evaluation.significance import (PairedDifference, clustered_difference, mean_of_means_difference,
                                              mean_of_means_interval, paired_difference, sign_flip_p, verdict)


def test_six_queries_all_better_give_the_exact_sign_flip_p_value():
    a = np.array([0.5, 0.6, 0.7, 0.4, 0.9, 0.3])
    b = a - np.array([0.1, 0.2, 0.1, 0.3, 0.2, 0.1])
    d = paired_difference(a, b)
    # 2^6 sign assignments, enumerated exactly; only "all +" and "all -" are as extreme: p = 2/64.
    assert d.p_value == pytest.approx(2 / 64)
    assert d.mean == pytest.approx(1 / 6) and 0 < d.low <= d.mean <= d.high <= 0.3 and d.n == 6


def test_noise_around_zero_is_not_significant_and_the_interval_covers_zero():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=200)
    b = a + rng.normal(0, 0.1, size=200) * rng.choice([-1, 1], size=200)
    d = paired_difference(a, b)
    assert d.low < 0 < d.high and d.p_value > 0.05


def test_a_real_shift_on_many_queries_is_significant():
    rng = np.random.default_rng(2)
    b = rng.uniform(size=300)
    a = b + 0.05 + rng.normal(0, 0.1, size=300)
    d = paired_difference(a, b)
    assert d.low > 0 and d.p_value < 0.001 and d.mean == pytest.approx(np.mean(a - b))


def test_identical_systems_and_mismatched_inputs():
    same = paired_difference(np.ones(5), np.ones(5))
    assert (same.mean, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="equal 1-d shapes"):
        paired_difference(np.ones(3), np.ones(4))


def test_the_mean_of_set_means_weighs_sets_not_queries_and_resamples_within_each_set():
    # One query of +1 on set a, 99 of 0 on set b: the mean over sets is 0.5 (pooled queries would give 0.01),
    # and with no spread inside a set every resample gives exactly that.
    assert mean_of_means_interval([np.ones(1), np.zeros(99)]) == (0.5, 0.5, 0.5)
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.1, 0.2, size=50), rng.normal(-0.1, 0.2, size=200)
    mean, low, high = mean_of_means_interval([a, b])
    assert mean == pytest.approx((a.mean() + b.mean()) / 2) and low < mean < high
    # The half-width follows the two sets' standard errors: sqrt(se_a^2 + se_b^2) / 2 * 1.96.
    half = 1.96 * np.sqrt(a.var() / 50 + b.var() / 200) / 2
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_a_label_needs_the_printed_interval_to_exclude_0_and_the_test_to_agree():
    a = np.array([0.5, 0.6, 0.7, 0.4, 0.9, 0.3])
    assert verdict(paired_difference(a, a - 0.1)) == "better"  # every query: p = 2/64, interval above 0
    assert verdict(paired_difference(a - 0.1, a)) == "worse"
    # What evaluate once called "better": +0.0629, an interval from +0.00001 (+0.0000 printed), p 0.09.
    assert verdict(PairedDifference(0.0629, 0.00001, 0.146, 0.09, 35)) == "no significant difference"
    assert verdict(PairedDifference(0.0629, 0.012, 0.146, 0.09, 35)) == "no significant difference"
    assert verdict(PairedDifference(0.0629, 0.012, 0.146, 0.03, 35)) == "better"


def test_one_listing_moving_together_is_not_evidence_once_queries_are_clustered():
    """35 papers on 7 listings of 5: the candidate finds one more page-mate for every paper of one listing
    and nothing else changes. Query by query that looks like a gain; by listing it is one listing's luck."""
    a = np.zeros(35)
    a[:5] = 0.1
    b = np.zeros(35)
    listings = [f"page{i // 5}" for i in range(35)]
    naive = paired_difference(a, b)
    assert naive.low > 0  # the unclustered interval calls it a gain
    clustered = clustered_difference(a, b, listings)
    assert clustered.mean == pytest.approx(0.1 * 5 / 35) and clustered.low == 0.0 and clustered.p_value > 0.9
    assert verdict(clustered) == "no significant difference"
    # The same gain on every listing is a real one, clustered or not.
    everywhere = clustered_difference(np.full(35, 0.1) + np.linspace(0, 0.01, 35), b, listings)
    assert everywhere.low > 0 and everywhere.p_value == pytest.approx(2 / 2 ** 7, abs=0.01)
    # One cluster, or none that differ: nothing to resample.
    assert clustered_difference(a, b, ["one"] * 35).p_value == 1.0
    with pytest.raises(ValueError, match="one cluster per query"):
        clustered_difference(a, b, listings[:3])


def test_a_constant_gain_over_three_listings_has_the_p_of_its_eight_sign_flips_not_0():
    """Every paper 0.5 better, 9 papers on 3 listings: only "all +" and "all -" of the 2^3 flips reach the
    sum, p = 2/8. The interval is the mean (no resample can move it), but p keeps the verdict at no
    difference: with c listings no p falls below 2/2^c."""
    listings = [f"page{i // 3}" for i in range(9)]
    d = clustered_difference(np.full(9, 0.7), np.full(9, 0.2), listings)
    assert d.p_value == pytest.approx(0.25) and d.low == d.high == pytest.approx(0.5)
    assert verdict(d) == "no significant difference"
    assert paired_difference(np.full(3, 0.7), np.full(3, 0.2)).p_value == pytest.approx(0.25)  # 3 queries alike
    assert paired_difference(np.full(40, 0.7), np.full(40, 0.2)).p_value == pytest.approx(2 / 2 ** 40)
    assert clustered_difference(np.full(9, 0.2), np.full(9, 0.2), listings).p_value == 1.0  # no difference at all


@pytest.mark.parametrize("listings", [1, 2, 3])
def test_on_one_two_or_three_listings_a_gain_on_every_paper_is_never_a_verdict(listings):
    """However large the gain on every paper, 1 listing gives no interval at all (it cannot exclude 0) and
    p 1; 2 and 3 listings cannot reach p < 0.05 (2/4, 2/8)."""
    clusters = [f"page{i % listings}" for i in range(30)]
    d = clustered_difference(np.full(30, 0.9) + np.linspace(0, 0.05, 30), np.full(30, 0.1), clusters)
    assert d.p_value >= 2 / 2 ** listings and verdict(d) == "no significant difference"
    if listings == 1:
        assert (d.low, d.high, d.p_value) == (-np.inf, np.inf, 1.0) and d.mean > 0.8
    one = paired_difference(np.array([0.9]), np.array([0.1]))  # one query: the same, unclustered
    assert (one.low, one.high, one.p_value) == (-np.inf, np.inf, 1.0) and verdict(one) == "no significant difference"


def test_the_exact_sign_flip_p_of_8_listings_is_the_sampled_one_within_noise():
    rng = np.random.default_rng(4)
    clusters = [f"page{i // 4}" for i in range(32)]
    a, b = rng.uniform(size=32), rng.uniform(size=32)
    a[:16] += 0.15  # a gain on half of the listings: p neither 0 nor 1
    exact = clustered_difference(a, b, clusters)
    sums = np.bincount(np.arange(32) // 4, weights=a - b)  # (8,) each listing's summed difference
    assert exact.p_value == sign_flip_p(sums) and exact.p_value * 256 == pytest.approx(round(exact.p_value * 256))
    original = significance.EXACT_MAX_CLUSTERS
    try:
        significance.EXACT_MAX_CLUSTERS = 0  # the sampled test, as for more than EXACT_MAX_CLUSTERS listings
        sampled = clustered_difference(a, b, clusters)
    finally:
        significance.EXACT_MAX_CLUSTERS = original
    assert 0.05 < exact.p_value < 0.95 and sampled.p_value == pytest.approx(exact.p_value, abs=0.015)
    assert (sampled.mean, sampled.n) == (exact.mean, exact.n)


def test_the_mean_of_set_means_has_a_randomisation_test_that_verdict_reads():
    gain = mean_of_means_difference([np.full(40, 0.03), np.full(30, 0.03)])  # every query of both sets
    assert verdict(gain) == "better" and gain.p_value < 0.001 and gain.n == 70
    noise = np.random.default_rng(5).normal(0, 0.1, size=70)
    assert verdict(mean_of_means_difference([noise[:40], noise[40:]])) == "no significant difference"
    few = mean_of_means_difference([np.full(2, 0.5), np.full(1, 0.5)])  # 3 queries: 2/8 at best
    assert few.p_value == pytest.approx(0.25) and verdict(few) == "no significant difference"

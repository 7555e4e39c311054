"""Is system A better than system B on the same queries? Paired statistics over per-query scores.

A difference of means on a few hundred queries moves by a few hundredths when queries are
swapped, so every comparison in the evaluation report carries a 95% bootstrap confidence
interval of the mean per-query difference and a paired randomisation test (Smucker, Allan and
Carterette, "A Comparison of Statistical Significance Tests for IR Evaluation", CIKM 2007:
the randomisation test is the one to use). Both come from scipy.stats.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

N_RESAMPLES = 10_000  # p-values and interval ends stable to ~0.005 at this many resamples
# Up to this many clusters (or queries) the randomisation test enumerates all 2^c sign flips (4,096 at
# 12: cheaper than the resamples): with few clusters a sampled p is noisy exactly where it decides.
EXACT_MAX_CLUSTERS = 12
NO_INTERVAL = (float("-inf"), float("inf"))  # fewer than 2 clusters (or queries): no spread to estimate


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean of a - b over the queries
    low: float  # 95% bootstrap confidence interval of that mean
    high: float
    p_value: float  # two-sided paired randomisation test (signs of the per-query differences flipped)
    n: int


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0, n_resamples: int = N_RESAMPLES) -> PairedDifference:
    """a and b (n_queries,) are two systems' scores of the same queries, in the same order."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need equal 1-d shapes, got {a.shape} and {b.shape}")
    diff = a - b  # (n_queries,)
    mean = float(diff.mean()) if diff.size else float("nan")
    if diff.size < 2:  # one query is its own mean: nothing says how far it could move
        return PairedDifference(mean, *NO_INTERVAL, 1.0, int(diff.size))
    if np.all(diff == diff[0]):
        # No spread: every resample gives the same mean, and of the 2^n sign flips only the two of one sign
        # reach the observed sum (scipy's test enumerates them too for n up to 13, but rejects constant data).
        return PairedDifference(mean, mean, mean, 1.0 if diff[0] == 0 else min(1.0, 2.0 ** (1 - diff.size)),
                                int(diff.size))
    rng = np.random.default_rng(seed)
    interval = stats.bootstrap((diff,), np.mean, n_resamples=n_resamples, confidence_level=0.95,
                               method="percentile", rng=rng).confidence_interval
    test = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                  permutation_type="samples", n_resamples=n_resamples, rng=rng)
    return PairedDifference(mean, float(interval.low), float(interval.high), float(test.pvalue), int(diff.size))


def clustered_difference(a: np.ndarray, b: np.ndarray, clusters, seed: int = 0,
                         n_resamples: int = N_RESAMPLES) -> PairedDifference:
    """`paired_difference` for queries that are not independent: queries of one cluster (the papers of one
    listing share their relevant papers) move together. The interval is a cluster bootstrap (clusters
    drawn with replacement, the mean over all their queries; Field and Welsh 2007), the test a clustered
    randomisation test (one sign flip per cluster, every flip for up to EXACT_MAX_CLUSTERS clusters). One
    cluster gives no interval and p 1. a, b (n_queries,), `clusters` (n_queries,) labels."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(clusters) != a.size:
        raise ValueError(f"clustered scores need equal 1-d shapes and one cluster per query, got {a.shape}, "
                         f"{b.shape} and {len(clusters)} clusters")
    diff = a - b  # (n_queries,)
    mean = float(diff.mean()) if diff.size else float("nan")
    codes, _ = pd.factorize(pd.Series(list(clusters), dtype=object))
    sums = np.bincount(codes, weights=diff)  # (n_clusters,) each cluster's summed difference
    sizes = np.bincount(codes).astype(np.float64)  # (n_clusters,)
    if sums.size < 2:  # one listing is one draw, however many papers it has: no interval, no test
        return PairedDifference(mean, *NO_INTERVAL, 1.0, int(diff.size))
    exact = sums.size <= EXACT_MAX_CLUSTERS
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    extreme = 0
    for start in range(0, n_resamples, 1000):  # 1,000 resamples at a time: (1000, n_clusters) arrays
        n = min(1000, n_resamples - start)
        drawn = rng.integers(0, sums.size, size=(n, sums.size))
        means[start:start + n] = sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
        if not exact:
            signs = rng.choice((-1.0, 1.0), size=(n, sums.size))
            extreme += int(np.sum(np.abs(signs @ sums) >= abs(sums.sum()) - 1e-12))
    low, high = np.percentile(means, [2.5, 97.5])
    p_value = sign_flip_p(sums) if exact else (extreme + 1) / (n_resamples + 1)
    return PairedDifference(mean, float(low), float(high), p_value, int(diff.size))


def sign_flip_p(terms: np.ndarray) -> float:
    """The exact two-sided randomisation p of sum(terms) (n_terms,), n_terms <= EXACT_MAX_CLUSTERS: the share
    of all 2^n sign flips whose |sum| reaches the observed one (the observed flip among them, so p >= 2/2^n
    for any nonzero sum: with c clusters no p falls below 2/2^c, whatever the difference)."""
    terms = np.asarray(terms, dtype=np.float64)
    if terms.size > EXACT_MAX_CLUSTERS:
        raise ValueError(f"{terms.size} terms: enumerating 2^{terms.size} sign flips is for at most "
                         f"{EXACT_MAX_CLUSTERS}; sample them instead")
    bits = (np.arange(2 ** terms.size)[:, None] >> np.arange(terms.size)) & 1  # (2^n, n) every flip once
    flipped = np.abs((1.0 - 2.0 * bits) @ terms)  # (2^n,)
    return float(np.mean(flipped >= abs(terms.sum()) - 1e-9 * np.abs(terms).sum()))


def verdict(d: PairedDifference) -> str:
    """"better" / "worse" only when the 95% interval excludes 0 as printed (4 decimals) and the paired
    randomisation test agrees (p < 0.05): a percentile interval that starts at +0.00001 with p 0.09 is
    not evidence of a difference. Otherwise "no significant difference"."""
    if round(d.low, 4) > 0 and d.p_value < 0.05:
        return "better"
    if round(d.high, 4) < 0 and d.p_value < 0.05:
        return "worse"
    return "no significant difference"


def mean_interval(values: np.ndarray, seed: int = 0, n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """95% bootstrap confidence interval (percentile) of the mean of per-query scores (n_queries,)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2 or np.all(values == values[0]):
        mean = float(values.mean()) if values.size else float("nan")
        return mean, mean
    interval = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=0.95,
                               method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return float(interval.low), float(interval.high)


def mean_of_means_interval(diffs: Sequence[np.ndarray], seed: int = 0,
                           n_resamples: int = N_RESAMPLES) -> tuple[float, float, float]:
    """The mean over sets of each set's mean per-query difference (a metric averaged over evaluation
    sets, as the champion gate's primary metric) and its 95% percentile bootstrap interval, each set's
    queries resampled within that set (the sets are strata of different sizes). Returns (mean, low, high)."""
    diffs = [np.asarray(d, dtype=np.float64) for d in diffs if len(d)]
    if not diffs:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.zeros(n_resamples)  # (n_resamples,) the mean of set means in each resample
    for diff in diffs:
        for start in range(0, n_resamples, 1000):  # 1,000 resamples at a time: memory ~8 KB a query
            rows = rng.integers(0, diff.size, size=(min(1000, n_resamples - start), diff.size))
            means[start:start + len(rows)] += diff[rows].mean(axis=1)
    means /= len(diffs)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(np.mean([d.mean() for d in diffs])), float(low), float(high)


def mean_of_means_difference(diffs: Sequence[np.ndarray], seed: int = 0,
                             n_resamples: int = N_RESAMPLES) -> PairedDifference:
    """`mean_of_means_interval` with its randomisation test, so that `verdict` reads it as any other paired
    difference: each query's difference has its sign flipped, the mean of set means recomputed (exactly over
    every flip for up to EXACT_MAX_CLUSTERS queries)."""
    mean, low, high = mean_of_means_interval(diffs, seed, n_resamples)
    diffs = [np.asarray(d, dtype=np.float64) for d in diffs if len(d)]
    n = sum(d.size for d in diffs)
    if n < 2:
        return PairedDifference(mean, *NO_INTERVAL, 1.0, n)
    terms = np.concatenate([d / (d.size * len(diffs)) for d in diffs])  # (n_queries,) mean of set means = sum
    if terms.size <= EXACT_MAX_CLUSTERS:
        return PairedDifference(mean, low, high, sign_flip_p(terms), n)
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_resamples, 1000):  # 1,000 flips at a time: (1000, n_queries) signs
        signs = rng.choice((-1.0, 1.0), size=(min(1000, n_resamples - start), terms.size))
        extreme += int(np.sum(np.abs(signs @ terms) >= abs(terms.sum()) - 1e-9 * np.abs(terms).sum()))
    return PairedDifference(mean, low, high, (extreme + 1) / (n_resamples + 1), n)

"""How a setting leaves its documented default: only on evidence, and only beyond noise.

Shared by the search choice (papersim.training.selection) and the similar task's
(papersim.training.similar_choice): the best setting is picked on half of the queries (or of the
listings) and kept only if it beats the default on the other half beyond noise (`verdict`: the paired 95%
interval above 0 and p < 0.05), on at least a stated number of listings; picking and confirming on the
same queries would favour the pick.
"""

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd

from papersim.evaluation.significance import clustered_difference, paired_difference, verdict


def interval(diff) -> dict:
    """A paired difference as evidence: mean, 95% interval, p-value, queries."""
    return {"mean": round(diff.mean, 4), "ci95": [round(diff.low, 4), round(diff.high, 4)],
            "p": round(diff.p_value, 4), "n": diff.n}


def pick(table: Mapping, prefer: Callable[[Hashable], object]) -> Hashable:
    """The setting with the best score; ties go to the one `prefer` ranks first (the least committed)."""
    best = max(table.values())
    return min((k for k, v in table.items() if v >= best - 1e-12), key=prefer)


def nearest(centre: float) -> Callable[[float], tuple]:
    """Ties of numbers (term counts, weights) go to the one nearest `centre`, then the smaller."""
    return lambda k: (abs(k - centre), k)


def choose_setting(scores: Mapping[Hashable, np.ndarray], default: Hashable, clusters: Sequence[str] | None = None,
                   prefer: Callable[[Hashable], object] | None = None, label: Callable[[Hashable], str] = str,
                   min_clusters: int = 2) -> tuple[Hashable, dict]:
    """The setting to serve, given each setting's per-query scores (setting -> (n_queries,)): the best one on
    half of the queries, kept only if it is better than `default` on the other half (`verdict`: a paired 95%
    bootstrap interval above 0 and p < 0.05); otherwise `default`. Ties go to the default, then as `prefer`
    ranks them (by default the order of `scores`); `label` names a setting in the evidence. With `clusters`
    (one per query: the similar task's listings) the halves are halves of the clusters, the test resamples
    clusters, and the other half needs `min_clusters` of them (evidence `too_few` says why when it has
    fewer). Returns (setting, evidence)."""
    order = {k: i for i, k in enumerate(scores)}
    prefer = prefer or (lambda k: order[k])
    n = len(next(iter(scores.values())))
    codes = pd.factorize(pd.Series(list(clusters), dtype=object))[0] if clusters is not None else np.arange(n)
    picking = codes % 2 == 0  # (n_queries,) the even-numbered queries, or clusters
    on_half = {k: float(np.mean(v[picking])) if picking.any() else 0.0 for k, v in scores.items()}
    chosen = pick(on_half, lambda k: (k != default, prefer(k)))
    evidence = {"by_setting": {label(k): round(float(np.mean(v)), 4) for k, v in scores.items()},
                "picked_on_half": chosen if isinstance(chosen, (int, float)) else label(chosen)}
    confirm = ~picking
    confirming = len(np.unique(codes[confirm]))  # listings (or queries) the pick is confirmed on, not papers
    if clusters is not None:
        evidence["other_half_listings"] = confirming
    if chosen == default:
        return default, evidence
    if confirming < max(min_clusters, 2):
        unit = "listings" if clusters is not None else "queries"
        evidence["too_few"] = f"{confirming} to confirm on, fewer than {max(min_clusters, 2)} {unit}"
        return default, evidence
    diff = (paired_difference(scores[chosen][confirm], scores[default][confirm]) if clusters is None else
            clustered_difference(scores[chosen][confirm], scores[default][confirm], list(np.asarray(codes)[confirm])))
    evidence["picked_minus_default_other_half"] = interval(diff)
    return (chosen if verdict(diff) == "better" else default), evidence


def choose_weight(scores: Mapping[float, np.ndarray], default: float, clusters: Sequence[str] | None = None,
                  min_clusters: int = 2) -> tuple[float, dict]:
    """`choose_setting` for a fusion's dense weight (weight -> (n_queries,) scores): ties go to the weight
    nearest `default`. Returns (weight, evidence with `by_weight`)."""
    weight, evidence = choose_setting(scores, default, clusters, nearest(default), min_clusters=min_clusters)
    evidence["by_weight"] = {f"{float(k):g}": v for k, v in zip(scores, evidence.pop("by_setting").values())}
    return weight, evidence

"""Retrieval metrics over rankings and graded relevance judgments, with trec_eval's definitions.

Per query, at cut-off k (a ranking's first k entries):

- `ndcg_at_k`: trec_eval `ndcg_cut` (linear gain = the judged relevance, discount 1/log2(rank + 1),
  ideal DCG from all judged relevant documents).
- `recall_at_k`: trec_eval `recall` (relevant in the top k / all relevant).
- `reciprocal_rank_at_k`: trec_eval `recip_rank` on the ranking truncated at k (`-M k`).
- `average_precision_at_k`: trec_eval `map_cut` (precision at each relevant hit in the top k,
  divided by the number of relevant documents).
- `precision_at_k`: trec_eval `P` (relevant in the top k / k, also when fewer than k were returned).

A document is relevant when its judgment is > 0; lower judgments and unjudged documents gain 0.
A query with no relevant document has nothing to find: `score_rankings` skips and counts it
(the single-query functions return 0.0 for it). A judged query without a ranking scores 0, as
with `trec_eval -c`, so a system that returns nothing for a query is penalised.

trec_eval rejects a run that lists a document twice; here a repeated doc id keeps its rank slot
but gains nothing, so a duplicate never counts twice and never lets a later document move up.

sentence-transformers' `InformationRetrievalEvaluator` (binary relevance) gives the same nDCG,
recall, precision and MRR on the same rankings, but divides MAP@k by min(k, #relevant) instead
of #relevant, so its MAP is higher whenever a query has more than k relevant documents.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from papersim.errors import PapersimError

Qrels = Mapping[str, Mapping[str, int]]  # query id -> doc id -> graded relevance; > 0 means relevant
Rankings = Mapping[str, Sequence[str]]  # query id -> doc ids, best first


def top_k_ids(doc_ids: Sequence[str], scores: np.ndarray, k: int | None = None) -> list[str]:
    """The k best doc ids by descending score, ties broken by doc id ascending (all of them if k is None).

    Ties go to the smaller id so that a ranking never depends on the order documents were stored
    or scored in, and so that it matches sentence-transformers' evaluator. (trec_eval, given scores,
    breaks ties by descending docno; the metrics below take rankings, so this rule decides.)
    """
    scores = np.asarray(scores, dtype=float)  # (n,)
    if scores.shape != (len(doc_ids),):
        raise ValueError(f"scores has shape {scores.shape}, expected ({len(doc_ids)},): one score per doc id")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: they have no order (check the encoder's output)")
    ids = np.asarray(doc_ids, dtype=str)
    n = len(ids)
    k = n if k is None else max(min(k, n), 0)
    candidates = np.arange(n)
    if 0 < k < n:
        # O(n) partition finds the k-th best score; only the m >= k candidates scoring at least that
        # much are sorted, O(m log m), and all of them are kept so a tie at the cut is decided by id.
        threshold = np.partition(scores, n - k)[n - k]
        candidates = np.flatnonzero(scores >= threshold)
    order = np.lexsort((ids[candidates], -scores[candidates]))  # last key first: score, then id
    return ids[candidates[order[:k]]].tolist()


def rank_by_score(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Doc ids by descending score, ties broken by doc id ascending (see `top_k_ids`)."""
    return top_k_ids(list(scores), np.fromiter(scores.values(), dtype=float, count=len(scores)), k)


def _gains(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> np.ndarray:
    """Gain at ranks 1..min(k, len(ranking)): the judgment if > 0, else 0; 0 for a repeated doc id."""
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    top = ranking[:k]
    gains = np.zeros(len(top))  # (min(k, len(ranking)),)
    seen: set[str] = set()
    for rank, doc in enumerate(top):
        if doc not in seen:
            seen.add(doc)
            gains[rank] = max(judged.get(doc, 0), 0)
    return gains


def _discounts(n: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, n + 2))  # rank r -> 1/log2(r + 1)


def _n_relevant(judged: Mapping[str, int]) -> int:
    return sum(1 for relevance in judged.values() if relevance > 0)


def ndcg_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gains (trec_eval ndcg_cut)."""
    gains = _gains(ranking, judged, k)
    ideal = np.sort([relevance for relevance in judged.values() if relevance > 0])[::-1][:k]
    if ideal.size == 0:
        return 0.0
    return float(gains @ _discounts(gains.size) / (ideal @ _discounts(ideal.size)))


def recall_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k / all relevant documents (trec_eval recall)."""
    n_relevant = _n_relevant(judged)
    return float(np.count_nonzero(_gains(ranking, judged, k)) / n_relevant) if n_relevant else 0.0


def reciprocal_rank_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document in the top k, else 0 (trec_eval recip_rank)."""
    hits = np.flatnonzero(_gains(ranking, judged, k))
    return float(1.0 / (hits[0] + 1)) if hits.size else 0.0


def average_precision_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """Sum of precision@rank at each relevant hit in the top k / all relevant documents (trec_eval map_cut)."""
    n_relevant = _n_relevant(judged)
    if not n_relevant:
        return 0.0
    hit_ranks = np.flatnonzero(_gains(ranking, judged, k)) + 1  # (n_hits,)
    return float(np.sum(np.arange(1, hit_ranks.size + 1) / hit_ranks) / n_relevant)


def precision_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k / k (trec_eval P)."""
    return float(np.count_nonzero(_gains(ranking, judged, k)) / k)


@dataclass(frozen=True)
class SetScores:
    """Mean metrics over the scored queries of one evaluation set."""

    metrics: dict[str, float]  # e.g. "ndcg@10" -> mean over the scored queries
    n_queries: int  # queries with at least one relevant document
    n_skipped: int  # queries in the qrels with no relevant document: nothing to find, not scored


def _scorable(qrels: Qrels) -> list[str]:
    scorable = [qid for qid, judged in qrels.items() if _n_relevant(judged)]
    if not scorable:
        raise PapersimError(
            f"no query can be scored: none of the {len(qrels)} queries in the qrels has a document with "
            "relevance > 0. Check that the qrels are the evaluation set's and that relevant documents "
            "are judged with a positive integer."
        )
    return scorable


def _mean(
    metric: Callable[[Sequence[str], Mapping[str, int]], float], rankings: Rankings, qrels: Qrels, qids: list[str]
) -> float:
    return float(np.mean([metric(rankings.get(qid, ()), qrels[qid]) for qid in qids]))


def _measures(ndcg_k: int, recall_ks: Sequence[int], mrr_k: int, map_k: int,
              precision_ks: Sequence[int] = ()) -> dict[str, Callable]:
    return {
        **{f"precision@{k}": partial(precision_at_k, k=k) for k in precision_ks},
        f"ndcg@{ndcg_k}": partial(ndcg_at_k, k=ndcg_k),
        **{f"recall@{k}": partial(recall_at_k, k=k) for k in recall_ks},
        f"mrr@{mrr_k}": partial(reciprocal_rank_at_k, k=mrr_k),
        f"map@{map_k}": partial(average_precision_at_k, k=map_k),
    }


def per_query_scores(
    rankings: Rankings,
    qrels: Qrels,
    *,
    ndcg_k: int = 10,
    recall_ks: Sequence[int] = (1, 10, 100),
    mrr_k: int = 10,
    map_k: int = 100,
    precision_ks: Sequence[int] = (),
) -> tuple[list[str], dict[str, np.ndarray]]:
    """(scored query ids, metric -> (n_queries,) values): the per-query numbers behind `score_rankings`."""
    qids = _scorable(qrels)
    return qids, {name: np.array([metric(rankings.get(qid, ()), qrels[qid]) for qid in qids])
                  for name, metric in _measures(ndcg_k, recall_ks, mrr_k, map_k, precision_ks).items()}


def score_rankings(
    rankings: Rankings,
    qrels: Qrels,
    *,
    ndcg_k: int = 10,
    recall_ks: Sequence[int] = (1, 10, 100),
    mrr_k: int = 10,
    map_k: int = 100,
) -> SetScores:
    """Mean nDCG, recall, MRR and MAP over the qrels' queries that have a relevant document.

    Rankings of queries absent from the qrels are ignored; a judged query without a ranking scores 0.
    Raises PapersimError if no query has a relevant document.
    """
    qids, values = per_query_scores(rankings, qrels, ndcg_k=ndcg_k, recall_ks=recall_ks, mrr_k=mrr_k, map_k=map_k)
    metrics = {name: float(np.mean(v)) for name, v in values.items()}
    return SetScores(metrics=metrics, n_queries=len(qids), n_skipped=len(qrels) - len(qids))


def recall_curve(rankings: Rankings, qrels: Qrels, ks: Sequence[int]) -> dict[int, float]:
    """Mean recall@k for each k over the queries that have a relevant document (a recall@k plot)."""
    qids = _scorable(qrels)
    return {k: _mean(partial(recall_at_k, k=k), rankings, qrels, qids) for k in ks}

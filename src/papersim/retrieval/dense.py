"""Exact inner-product search over unit vectors: rankings, and hits with scores for fusion."""

from typing import Sequence

import numpy as np

from papersim.progress import Progress
from papersim.retrieval.passage import Hits, Rankings

BLOCK_CELLS = 2**24  # query x document scores per chunk: 64 MB of float32 (1,024 queries up to 16k documents)


def dense_search(doc_vectors: np.ndarray, query_vectors: np.ndarray, k: int,
                 exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (n_queries, k) row indices and scores, best first.

    `exclude` (n_queries,) names one row per query to leave out (a paper's own vector).
    Cost: n_queries x n_docs x dim multiply-adds, in chunks of queries to bound memory: a chunk's
    scores, their negation and the partition's indices take ~16 bytes x BLOCK_CELLS (256 MB), whatever
    the corpus size.
    """
    k = min(k, len(doc_vectors) - (1 if exclude is not None else 0))
    rows = np.zeros((len(query_vectors), k), dtype=np.int64)
    scores = np.zeros((len(query_vectors), k), dtype=np.float32)
    chunk = max(1, min(1024, BLOCK_CELLS // max(len(doc_vectors), 1)))
    progress = Progress("dense: searching", total=len(query_vectors), unit="queries")
    for start in range(0, len(query_vectors), chunk):
        sims = query_vectors[start:start + chunk] @ doc_vectors.T  # (chunk, n_docs)
        if exclude is not None:
            sims[np.arange(len(sims)), exclude[start:start + chunk]] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(
            np.arange(sims.shape[1]), (len(sims), 1))
        top_scores = np.take_along_axis(sims, top, axis=1)
        if k < sims.shape[1]:
            _lowest_rows_at_the_cut(sims, top, top_scores)
        order = np.lexsort((top, -top_scores), axis=1)  # score descending, ties by row ascending
        rows[start:start + len(sims)] = np.take_along_axis(top, order, axis=1)
        scores[start:start + len(sims)] = np.take_along_axis(top_scores, order, axis=1)
        progress.advance(len(sims))
    progress.done()
    return rows, scores


def _lowest_rows_at_the_cut(sims: np.ndarray, top: np.ndarray, top_scores: np.ndarray) -> None:
    """Where more rows than fit tie with the k-th best score, keep the lowest of them (in place): which
    equal-scoring rows argpartition keeps is its own choice. Exact ties are identical vectors (duplicate
    texts); the check is one comparison pass over the chunk's scores."""
    kth = top_scores.min(axis=1, keepdims=True)  # (chunk, 1)
    for q in np.flatnonzero((sims >= kth).sum(axis=1) > top.shape[1]).tolist():
        rows = np.flatnonzero(sims[q] >= kth[q])
        rows = rows[np.lexsort((rows, -sims[q, rows]))[:top.shape[1]]]  # score descending, ties by row
        top[q], top_scores[q] = rows, sims[q, rows]


def dense_rankings(doc_ids: Sequence[str], doc_vectors: np.ndarray, query_ids: Sequence[str],
                   query_vectors: np.ndarray, k: int, exclude: np.ndarray | None = None) -> Rankings:
    rows, _ = dense_search(doc_vectors, query_vectors, k, exclude)
    return {qid: [doc_ids[r] for r in row] for qid, row in zip(query_ids, rows)}


def dense_hits(doc_ids: Sequence[str], doc_vectors: np.ndarray, query_ids: Sequence[str], query_vectors: np.ndarray,
               depth: int, exclude: np.ndarray | None = None) -> dict[str, Hits]:
    """Exact cosine top `depth` per query as (doc ids, scores); `exclude` as in `dense_search`."""
    rows, scores = dense_search(doc_vectors, query_vectors, depth, exclude)
    return {qid: ([doc_ids[r] for r in row], score.tolist()) for qid, row, score in zip(query_ids, rows, scores)}

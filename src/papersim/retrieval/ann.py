"""Nearest-neighbour search over paper embeddings with faiss: choose an index, build it, tune it, measure it.

Vectors are float32 and L2-normalised, shape (n, dim); similarity is the inner product (the cosine).
`auto_factory` picks the index kind from the corpus size. What each kind holds per vector at dim=384
(`memory_bytes` of 100,000 clustered vectors from benchmarks/ann.py, / 100,000):

  Flat           1,536 B  the vectors (384 x 4 B); exact, search time grows linearly with n
  HNSW32         1,808 B  the vectors + graph links: 2 x 32 int32 neighbour ids on level 0 (256 B),
                          upper levels (~4 B), each vector's level and offset (12 B)
  IVF1024,PQ96x4fs,Refine(SQ8)   ~440 B  48 B of 4-bit PQ codes find candidates, 384 B of 8-bit scalar codes
                          re-rank 8 x k of them, an 8 B id: recall@10 0.96 (nprobe 128) on 100k vectors
  IVF1024,PQ48np    76 B  48 B of PQ codes + an 8 B id; the centroids (1.5 MB) and PQ tables (0.4 MB) add
                          the other 20 B at 100k vectors and vanish at 10M. The 32x compression caps recall:
                          recall@10 tops out at 0.72 on the benchmark's vectors, whatever the nprobe; only
                          chosen when a memory budget leaves nothing else
"""

import math
import re
import time
from pathlib import Path

import faiss
import numpy as np

from papersim.errors import PapersimError

EFFORTS = (16, 32, 64, 128, 256, 512, 1024)  # efSearch / nprobe ladder: each step ~doubles search cost
REFINE_K_FACTOR = 8  # a re-ranking index re-scores 8 x k candidates: recall@10 0.964 vs 0.953 at 4 (100k vectors)
_FAISS_PREFIX = re.compile(r"^Error in .*? at \S+:\d+: (?:Error: '.*?' failed: )?", re.S)


def _reason(error: RuntimeError) -> str:
    """faiss's message without the C++ location."""
    return _FAISS_PREFIX.sub("", str(error)).strip()


def bytes_per_vector(kind: str, dim: int, *, hnsw_m: int, pq_m: int) -> int:
    """What one vector costs in each kind of index (the module docstring's measurements)."""
    return {"Flat": 4 * dim,
            "HNSW": 4 * dim + 8 * hnsw_m + 16,  # level-0 links (2m int32) and the rest: measured 1,808 B at 384/32
            "IVF-PQ-refine": pq_m + dim + 8,  # 2 x pq_m 4-bit PQ codes, 8-bit scalar codes for re-ranking, an id
            "IVF-PQ": pq_m + 8}[kind]


def auto_factory(n_vectors: int, dim: int, *, flat_max: int, hnsw_max: int, hnsw_m: int, pq_m: int,
                 memory_budget: int = 0) -> str:
    """The faiss index_factory string for a corpus of n_vectors: the most accurate kind its size allows
    (Flat, then HNSW, then IVF-PQ with re-ranking) that fits `memory_budget` bytes (0: no budget);
    plain IVF-PQ when nothing else fits."""
    def fits(kind: str) -> bool:
        return not memory_budget or n_vectors * bytes_per_vector(kind, dim, hnsw_m=hnsw_m, pq_m=pq_m) <= memory_budget

    if n_vectors <= flat_max and fits("Flat"):
        return "Flat"  # exact, and a brute-force scan of this many vectors is fast enough
    if n_vectors <= hnsw_max and fits("HNSW"):
        return f"HNSW{hnsw_m}"  # full vectors + graph: best recall per query time while RAM allows
    if dim % pq_m:
        raise PapersimError(f"pq_m={pq_m} must divide the embedding dimension {dim}: choose e.g. 24, 32 or 48")
    # faiss's guideline is 4-16 x sqrt(n) lists; the low end keeps k-means training affordable on a CPU,
    # a power of two keeps the list count stable as the corpus grows (it doubles when n quadruples).
    nlist = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))
    if fits("IVF-PQ-refine") and dim % (2 * pq_m) == 0:
        # Twice the sub-quantizers at 4 bits (fast scan; the same pq_m bytes) find candidates, their 8-bit
        # scalar codes re-rank REFINE_K_FACTOR x k of them. PQ alone tops out near recall@10 0.72 on
        # benchmarks/ann.py's vectors; this reaches 0.95 (100k vectors: nprobe 128) at 29% of Flat's memory.
        return f"IVF{nlist},PQ{2 * pq_m}x4fs,Refine(SQ8)"
    # pq_m bytes per vector: the corpus no longer fits as float32. "np" skips polysemous training, which
    # only serves Hamming-filtered search (unused here) and took 60% of the build (100k vectors: 100 s -> 42 s).
    return f"IVF{nlist},PQ{pq_m}np"


def create_index(factory: str, dim: int) -> faiss.Index:
    """An empty inner-product index from a faiss index_factory string."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise PapersimError(f"faiss cannot build index {factory!r} for dimension {dim}: {_reason(e)}") from e
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = REFINE_K_FACTOR  # saved with the index
    return index


def add_vectors(index: faiss.Index, vectors: np.ndarray, *, train_sample: int = 320_000, seed: int = 0) -> None:
    """Add vectors (n, dim) to the index, training it first on a seeded sample if it needs training (IVF)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != index.d:
        raise PapersimError(f"vectors have shape {vectors.shape}, the index expects (n, {index.d})")
    if not index.is_trained:
        # 320,000 >= 39 points per list (faiss's minimum) for up to IVF8192, i.e. corpora up to ~8M
        rows = np.random.default_rng(seed).choice(len(vectors), min(train_sample, len(vectors)), replace=False)
        try:
            index.train(vectors[np.sort(rows)])
        except RuntimeError as e:
            raise PapersimError(f"training the index on {len(rows)} vectors failed: {_reason(e)}") from e
    index.add(vectors)  # trained indexes take more vectors later: no retraining on incremental adds


# Wrappers that delegate search to an inner index, and the attribute that holds it.
_WRAPPERS = ((faiss.IndexRefine, "base_index"), (faiss.IndexPreTransform, "index"), (faiss.IndexIDMap, "index"))


def _effort_knob(index: faiss.Index) -> tuple[object, str] | None:
    """The object and attribute that trade speed for recall (efSearch, nprobe); None for exact search."""
    index = faiss.downcast_index(index)
    while wrapped := next((attr for kind, attr in _WRAPPERS if isinstance(index, kind)), None):
        index = faiss.downcast_index(getattr(index, wrapped))
    if isinstance(index, faiss.IndexHNSW):
        return index.hnsw, "efSearch"
    if isinstance(index, faiss.IndexIVF):
        return index, "nprobe"  # faiss searches min(nprobe, nlist) lists
    return None


def set_search_effort(index: faiss.Index, effort: int) -> None:
    """Set efSearch (HNSW) or nprobe (IVF); exact indexes have nothing to set."""
    # 0 is what tune_search_effort reports for exact indexes: it leaves the index as it is (nprobe 0 fails).
    if effort > 0 and (knob := _effort_knob(index)):
        setattr(*knob, effort)


EXACT_WITHIN_MAX = 20_000  # a filter keeping at most this many rows is searched exactly: ~8 ms for 20k x 384


def search_within(index: faiss.Index, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The top k of `rows` only (sorted int64 row ids) for (n, dim) queries: (scores, ids), (n, k) each,
    padded with -1 ids. Flat, and any index when the rows are few, score the rows' stored vectors exactly;
    a larger filter searches the index with a row selector at its tuned effort (as the unfiltered search)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    exact_kind = _effort_knob(index) is None
    params = _within_params(index, rows) if exact_kind or len(rows) > EXACT_WITHIN_MAX else None
    if params is None:
        return _exact_within(index, queries, k, rows)
    scores, ids = index.search(queries, k, params=params[0])  # params[1] keeps the bitmap alive until here
    return scores, ids.astype(np.int64)


def _exact_within(index: faiss.Index, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vectors = reconstruct_rows(index, rows)  # (n_rows, dim)
    scores = queries @ vectors.T  # (n_queries, n_rows)
    take = min(k, len(rows))
    top = np.argpartition(-scores, take - 1, axis=1)[:, :take] if take < len(rows) else \
        np.tile(np.arange(len(rows)), (len(queries), 1))
    out_scores = np.full((len(queries), k), -np.inf, np.float32)
    out_ids = np.full((len(queries), k), -1, np.int64)
    for q in range(len(queries)):
        order = top[q][np.lexsort((rows[top[q]], -scores[q, top[q]]))]  # score descending, ties by row
        out_scores[q, :take], out_ids[q, :take] = scores[q, order], rows[order]
    return out_scores, out_ids


def reconstruct_rows(index: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """The stored vectors of index rows, (n, dim) float32: exact for Flat and HNSW, the decoded codes for IVF."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    try:
        return index.reconstruct_batch(rows).astype(np.float32)
    except RuntimeError:  # IVF indexes keep no row -> list map until asked to
        faiss.extract_index_ivf(index).make_direct_map()
        return index.reconstruct_batch(rows).astype(np.float32)


def _within_params(index: faiss.Index, rows: np.ndarray):
    """(faiss search parameters selecting `rows` at the index's own effort, the selector's bitmap), or None
    for a kind this does not cover (then the rows are scored exactly)."""
    bitmap = np.zeros((index.ntotal + 7) // 8, dtype=np.uint8)
    np.bitwise_or.at(bitmap, rows >> 3, (1 << (rows & 7)).astype(np.uint8))
    selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bitmap))

    def params(inner: faiss.Index):
        inner = faiss.downcast_index(inner)
        if isinstance(inner, faiss.IndexRefine):
            base = params(inner.base_index)
            return None if base is None else faiss.IndexRefineSearchParameters(
                k_factor=inner.k_factor, base_index_params=base)
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=inner.hnsw.efSearch)
        if isinstance(inner, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=selector, nprobe=inner.nprobe)
        if isinstance(inner, faiss.IndexFlat):
            return faiss.SearchParameters(sel=selector)
        return None

    found = params(index)
    return None if found is None else (found, bitmap, selector)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids (n_queries, k) of the k highest inner products, by brute force: the ground truth."""
    return faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)[1]  # no copy of vectors


def recall_at_k(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of the share of the exact top k found in the top k (-1 ids count as misses)."""
    found, exact = found[:, :k], exact[:, :k]
    hits = (found[:, :, None] == exact[:, None, :]).any(axis=2) & (found >= 0)  # (n_queries, k); O(n k^2)
    return float(hits.sum(axis=1).mean() / k)


def tune_search_effort(
    index: faiss.Index, queries: np.ndarray, exact: np.ndarray, *, target_recall: float, k: int = 10,
    efforts: tuple[int, ...] = EFFORTS,
) -> tuple[int, float]:
    """(effort, recall@k) for the smallest effort reaching target_recall, else the largest tried; left set."""
    if _effort_knob(index) is None:
        return 0, recall_at_k(index.search(queries, k)[1], exact, k)
    for effort in efforts:  # increasing: the first one that reaches the target is the cheapest
        set_search_effort(index, effort)
        recall = recall_at_k(index.search(queries, k)[1], exact, k)
        if recall >= target_recall:
            break
    return effort, recall


def queries_per_second(index: faiss.Index, queries: np.ndarray, k: int = 10, *, repeats: int = 3) -> float:
    """Batched search throughput, best of `repeats` runs (the others absorb cache warm-up and noise)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        index.search(queries, k)
        best = min(best, time.perf_counter() - start)
    return len(queries) / best


def memory_bytes(index: faiss.Index) -> int:
    """Serialized size of the index: for Flat, HNSW and IVF-PQ, what the process holds (bar allocator slack)."""
    size = 0

    def count(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))  # same bytes as serialize_index, without a copy
    return size


def save_index(index: faiss.Index, path: Path) -> None:
    """Write the index, its search effort included, to path (callers write a temporary sibling and replace)."""
    faiss.write_index(index, str(path))


def load_index(path: Path) -> faiss.Index:
    """Read an index written by save_index."""
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise PapersimError(f"cannot read faiss index {path}: {_reason(e)}; rebuild it (build_index stage)") from e

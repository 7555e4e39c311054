"""Search throughput and recall of the index auto_factory picks, side by side with exact (Flat) search.

    .venv/bin/python benchmarks/ann.py [--sizes 100000 1000000] [--queries 1000]

Synthetic 384-d unit vectors shaped like sentence embeddings: 2,000 topic centres, each vector a centre
plus Gaussian noise of the same norm, normalised; queries are drawn the same way, not from the database.
Centres and noise follow one covariance whose i-th principal variance falls as i^-0.9 (the slope of
all-MiniLM-L6-v2 embeddings of the bundled corpus), along randomly rotated axes. Isotropic noise would be
unrealistically hard: neighbours become near-equidistant (local intrinsic dimension ~90 at 1M vectors,
against ~21 for the real embeddings) and HNSW32 then reaches only recall@10 0.92 at efSearch 1024.

For each size, in one process: build Flat and the auto index (build seconds, serialized size), tune the
auto index's effort (efSearch / nprobe) to the smallest reaching recall@10 >= 0.95 against exact results,
then time batched search of the same queries on both, alternating between them (best of 3 each).
"""

import argparse
import shlex
import sys
import time

import faiss
import numpy as np

from papersim.retrieval.ann import (
    add_vectors,
    auto_factory,
    create_index,
    exact_neighbours,
    memory_bytes,
    queries_per_second,
    tune_search_effort,
)
from papersim.retrieval.index import BuildIndexConfig
from record import record

# The build_index defaults (one source of truth), so that the benchmark measures the index the pipeline builds.
DEFAULTS = BuildIndexConfig()
FLAT_MAX, HNSW_MAX, HNSW_M, PQ_M = DEFAULTS.flat_max, DEFAULTS.hnsw_max, DEFAULTS.hnsw_m, DEFAULTS.pq_m

DIM = 384  # all-MiniLM-L6-v2's embedding size
CENTRES = 2_000  # topics: ~50 vectors each at 100k, ~500 at 1M
NOISE = 1.0  # norm of the noise relative to the (unit) centre: cosine ~0.65 to the nearest neighbour at 100k
SPECTRUM = 0.9  # variance along the i-th principal axis ~ i^-0.9, as in all-MiniLM-L6-v2 embeddings
K = 10
TARGET_RECALL = DEFAULTS.target_recall
REPEATS = 3  # timed searches per index: the best one counts
CHUNK = 100_000  # vectors generated at a time: temporaries stay at ~300 MB whatever the size


def topics(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Unit centres (CENTRES, DIM) and the mixing matrix (DIM, DIM) that gives white noise the spectrum."""
    scale = np.arange(1, DIM + 1, dtype=np.float32) ** (-SPECTRUM / 2)
    scale /= np.linalg.norm(scale)  # a mixed standard normal draw has norm ~1
    # Rotated principal axes: no coordinate holds more variance than another (PQ splits by coordinates).
    rotation = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32)
    mixing = scale[:, None] * rotation  # z @ mixing == (z * scale) @ rotation
    centres = rng.standard_normal((CENTRES, DIM), dtype=np.float32) @ mixing
    return centres / np.linalg.norm(centres, axis=1, keepdims=True), mixing


def sample(centres: np.ndarray, mixing: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n unit vectors (n, DIM) around randomly chosen centres, generated in chunks into one float32 array."""
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        noise = NOISE * (rng.standard_normal((m, DIM), dtype=np.float32) @ mixing)  # (m, DIM)
        x = centres[rng.integers(0, len(centres), m)] + noise
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed_build(factory: str, vectors: np.ndarray) -> tuple[faiss.Index, float]:
    start = time.perf_counter()
    index = create_index(factory, DIM)
    add_vectors(index, vectors)
    return index, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-budget-gb", type=float, default=DEFAULTS.memory_budget_gb,
                        help="build_index.memory_budget_gb: a budget below HNSW's size selects the compressed tier")
    args = parser.parse_args()
    print(f"$ {shlex.join(sys.orig_argv)}")
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; {DIM}-d, {CENTRES:,} centres, "
          f"{args.queries:,} queries, k={K}, target recall@{K} {TARGET_RECALL}\n", flush=True)

    rng = np.random.default_rng(args.seed)
    centres, mixing = topics(rng)
    queries = sample(centres, mixing, args.queries, rng)
    rows = []
    for n in args.sizes:
        vectors = sample(centres, mixing, n, rng)
        exact = exact_neighbours(vectors, queries, K)  # (n_queries, K)
        factory = auto_factory(n, DIM, flat_max=FLAT_MAX, hnsw_max=HNSW_MAX, hnsw_m=HNSW_M, pq_m=PQ_M,
                               memory_budget=int(args.memory_budget_gb * 2**30))
        built = {}
        for name in dict.fromkeys(["Flat", factory]):  # once only when auto is Flat
            index, seconds = timed_build(name, vectors)
            effort, recall = tune_search_effort(index, queries, exact, target_recall=TARGET_RECALL, k=K)
            built[name] = index, seconds, memory_bytes(index), effort, recall
            print(f"{n:,} {name}: built in {seconds:.1f} s, effort {effort}, recall@{K} {recall:.3f}", flush=True)
        del vectors
        # Searches alternate between the indexes, best of REPEATS each: both see the same background load.
        qps = dict.fromkeys(built, 0.0)
        for _ in range(REPEATS):
            for name, (index, *_) in built.items():
                qps[name] = max(qps[name], queries_per_second(index, queries, K, repeats=1))
        for name, (_, seconds, size, effort, recall) in built.items():
            rows.append((n, name, seconds, size, effort, recall, qps[name], qps[name] / qps["Flat"]))
        del built

    with record("ann"):
        print(f"\n| size | index | build s | memory MiB | bytes/vector | effort | recall@{K} | QPS | QPS vs Flat |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for n, name, seconds, size, effort, recall, qps, ratio in rows:
            print(f"| {n:,} | {name} | {seconds:,.1f} | {size / 2**20:,.0f} | {size / n:,.0f} | {effort or '-'} "
                  f"| {recall:.3f} | {qps:,.0f} | {ratio:.1f}x |")
        n, name, *_, recall, _, ratio = rows[-1]
        print(f"\n{name} at {n:,}: {ratio:.1f}x Flat's queries/s at recall@{K} {recall:.3f} "
              f"(goal: >= 20x at 1,000,000 with recall@{K} >= {TARGET_RECALL})")


if __name__ == "__main__":
    main()

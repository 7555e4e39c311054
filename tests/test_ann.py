import re
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from papersim.errors import PapersimError
from papersim.retrieval import ann
from papersim.retrieval.ann import (
    add_vectors,
    auto_factory,
    create_index,
    exact_neighbours,
    load_index,
    memory_bytes,
    queries_per_second,
    recall_at_k,
    save_index,
    set_search_effort,
    tune_search_effort,
)

DIM = 32
TARGET = 0.95
SIZES = {"flat_max": 1_000, "hnsw_max": 100_000, "hnsw_m": 32, "pq_m": 48}  # auto_factory thresholds
EFFORTS = (10, 16, 24, 32, 64, 128)  # fine steps near k=10, where a small HNSW graph crosses the target


def clustered(n: int, dim: int = DIM, clusters: int = 40, noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """Unit vectors (n, dim) around a few Gaussian centres, like embeddings of papers on a few topics."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(corpus (4000, DIM), queries (200, DIM) not in the corpus, exact top-10 ids (200, 10))."""
    vectors = clustered(4200)
    corpus, queries = vectors[:4000], vectors[4000:]
    return corpus, queries, exact_neighbours(corpus, queries, 10)


def filled(factory: str, vectors: np.ndarray) -> faiss.Index:
    index = create_index(factory, vectors.shape[1])
    add_vectors(index, vectors)
    return index


def search_recall(index: faiss.Index, queries: np.ndarray, exact: np.ndarray) -> float:
    return recall_at_k(index.search(queries, 10)[1], exact, 10)


@pytest.mark.parametrize(("n", "expected"), [
    (1, "Flat"), (1_000, "Flat"), (1_001, "HNSW32"), (100_000, "HNSW32"),
    (100_001, "IVF1024,PQ96x4fs,Refine(SQ8)"),  # 4 sqrt(n) = 1265 -> 1024
    (1_000_000, "IVF4096,PQ96x4fs,Refine(SQ8)"),  # 4000 -> 4096
    (4_000_000, "IVF8192,PQ96x4fs,Refine(SQ8)"),  # 8000 -> 8192
])
def test_auto_factory_switches_kind_at_the_thresholds(n, expected):
    assert auto_factory(n, 384, **SIZES) == expected


def test_a_memory_budget_picks_the_most_accurate_kind_that_fits():
    gib = 2**30
    assert auto_factory(50_000, 384, **SIZES, memory_budget=gib) == "HNSW32"  # 50k x 1,808 B = 86 MiB
    assert auto_factory(50_000, 384, **SIZES, memory_budget=50 * 2**20) == "IVF1024,PQ96x4fs,Refine(SQ8)"  # 21 MiB
    assert auto_factory(50_000, 384, **SIZES, memory_budget=10 * 2**20) == "IVF1024,PQ48np"  # 2.7 MiB at 56 B
    assert auto_factory(500, 384, **SIZES, memory_budget=gib) == "Flat"
    assert auto_factory(4_000_000, 384, **SIZES, memory_budget=gib) == "IVF8192,PQ48np"  # 4M x 440 B > 1 GiB


def test_the_re_ranking_tier_reaches_the_recall_plain_pq_cannot():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, 20_000)] + 0.6 * rng.standard_normal((20_000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries, base = vectors[:300], vectors[300:]
    exact = exact_neighbours(base, queries, 10)
    recalls = {}
    for factory in ("IVF64,PQ8np", "IVF64,PQ16x4fs,Refine(SQ8)"):
        index = create_index(factory, 32)
        add_vectors(index, base)
        recalls[factory] = tune_search_effort(index, queries, exact, target_recall=0.95)[1]
    assert recalls["IVF64,PQ16x4fs,Refine(SQ8)"] >= 0.95 > recalls["IVF64,PQ8np"]


def test_auto_factory_rejects_pq_m_that_does_not_divide_the_dimension():
    with pytest.raises(PapersimError, match="pq_m=48 must divide the embedding dimension 100"):
        auto_factory(200_000, 100, **SIZES)
    assert auto_factory(500, 100, **SIZES) == "Flat"  # pq_m only matters once IVF-PQ is chosen


@pytest.mark.parametrize("factory", ["HNSWx", "IVF16,PQ7"])  # unparsable; PQ7 does not divide 32
def test_bad_factory_string_names_the_string_and_the_reason(factory):
    with pytest.raises(PapersimError, match=f"faiss cannot build index '{factory}' for dimension 32: ") as err:
        create_index(factory, 32)
    assert "Error in" not in str(err.value)  # faiss's C++ location is dropped, its reason kept


def test_recall_at_k_on_hand_made_ids():
    exact = np.array([[3, 2, 9, 7], [4, 5, 6, 8], [1, 2, -1, -1]])
    found = np.array([[1, 2, 3, 7], [4, -1, -1, -1], [-1, -1, -1, -1]])
    # top 3: query 0 finds 3 and 2 (2/3), query 1 finds 4 (1/3), -1 is never a hit, even against -1 (0/3)
    assert recall_at_k(found, exact, 3) == pytest.approx(1 / 3)
    # top 2: {1, 2} & {3, 2} -> 1/2; {4, -1} & {4, 5} -> 1/2; nothing -> 0
    assert recall_at_k(found, exact, 2) == pytest.approx(1 / 3)
    assert recall_at_k(exact, exact, 2) == 1.0


def test_flat_search_is_exact(data):
    corpus, queries, exact = data
    index = filled("Flat", corpus)
    np.testing.assert_array_equal(index.search(queries, 10)[1], exact)
    assert tune_search_effort(index, queries, exact, target_recall=TARGET) == (0, 1.0)


def test_hnsw_tuning_returns_the_smallest_effort_reaching_the_target(data):
    corpus, queries, exact = data
    index = filled("HNSW8", corpus)
    effort, recall = tune_search_effort(index, queries, exact, target_recall=TARGET, efforts=EFFORTS)
    assert recall >= TARGET and effort > EFFORTS[0]  # the first step is too little on this data
    assert search_recall(index, queries, exact) == recall  # the index is left at the returned effort
    set_search_effort(index, EFFORTS[EFFORTS.index(effort) - 1])
    assert search_recall(index, queries, exact) < TARGET


def test_tuning_returns_the_largest_effort_when_the_target_is_out_of_reach(data):
    corpus, queries, exact = data
    index = filled("HNSW8", corpus)
    effort, recall = tune_search_effort(index, queries, exact, target_recall=1.01, efforts=(10, 20, 40))
    assert effort == 40 and recall == search_recall(index, queries, exact) and recall < 1.01


@pytest.mark.parametrize(("factory", "knob"), [
    ("HNSW8", lambda i: i.hnsw.efSearch),
    ("IDMap,HNSW8", lambda i: faiss.downcast_index(i.index).hnsw.efSearch),
    ("HNSW8,RFlat", lambda i: faiss.downcast_index(i.base_index).hnsw.efSearch),
    ("PCA16,IVF8,Flat", lambda i: faiss.extract_index_ivf(i).nprobe),
])
def test_search_effort_reaches_through_wrappers(factory, knob):
    index = create_index(factory, DIM)
    set_search_effort(index, 77)
    assert knob(faiss.downcast_index(index)) == 77
    set_search_effort(index, 0)  # "no effort", as tuning reports for Flat: left unchanged
    assert knob(faiss.downcast_index(index)) == 77


def test_incremental_add_matches_one_build(data):
    corpus, queries, exact = data
    split = int(len(corpus) * 0.9)
    for factory in ("Flat", "HNSW8"):
        once = filled(factory, corpus)
        twice = filled(factory, corpus[:split])
        add_vectors(twice, corpus[split:])
        assert twice.ntotal == once.ntotal == len(corpus)
        if factory == "Flat":
            for a, b in zip(once.search(queries, 10), twice.search(queries, 10)):
                np.testing.assert_array_equal(a, b)
        else:
            assert tune_search_effort(twice, queries, exact, target_recall=TARGET, efforts=EFFORTS)[1] >= TARGET


def test_ivf_pq_trains_on_a_sample_then_takes_more_vectors(data):
    corpus, queries, exact = data
    split = int(len(corpus) * 0.9)
    index = create_index("IVF32,PQ8np", DIM)
    add_vectors(index, corpus[:split], train_sample=2_000)
    add_vectors(index, corpus[split:])  # already trained: encoded with the same codebooks
    assert index.is_trained and index.ntotal == len(corpus)
    effort, recall = tune_search_effort(index, queries, exact, target_recall=TARGET, efforts=(1, 4, 16, 32))
    # 8-byte codes of 32-d vectors lose detail: 0.95 is out of reach, so the largest effort comes back,
    # with a recall far above chance (10 / 4000 = 0.0025)
    assert effort == 32 and recall > 0.4
    own = index.search(corpus[split:split + 50], 1)[1][:, 0]
    assert np.mean(own == np.arange(split, split + 50)) > 0.5  # added vectors are found by their own id


def test_add_rejects_vectors_of_the_wrong_dimension():
    index = create_index("Flat", DIM)
    with pytest.raises(PapersimError, match=r"vectors have shape \(5, 16\), the index expects \(n, 32\)"):
        add_vectors(index, np.zeros((5, 16), dtype=np.float32))
    assert index.ntotal == 0


def test_training_on_too_few_vectors_says_so(data):
    index = create_index("IVF64,Flat", DIM)
    with pytest.raises(PapersimError, match="training the index on 10 vectors failed: .*10.*64"):
        add_vectors(index, data[0][:10])


def test_memory_bytes_is_the_serialized_size(data):
    corpus = data[0]
    flat, hnsw = filled("Flat", corpus), filled("HNSW8", corpus)
    assert memory_bytes(flat) == faiss.serialize_index(flat).nbytes
    assert 0 <= memory_bytes(flat) - corpus.nbytes < 100  # the vectors plus a small header
    assert memory_bytes(hnsw) > memory_bytes(flat) + len(corpus) * 2 * 8 * 4  # level-0 graph: 2 x M int32 ids


def test_queries_per_second_takes_the_best_of_repeats(monkeypatch):
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(ann, "time", SimpleNamespace(perf_counter=lambda: clock.now))  # no real timing

    class SlowFirstIndex:  # the first search pays a 0.25 s warm-up, later ones 0.0625 s and 0.125 s
        def __init__(self):
            self.delays, self.searches = [0.25, 0.0625, 0.125], []

        def search(self, queries, k):
            self.searches.append((len(queries), k))
            clock.now += self.delays.pop(0)

    index = SlowFirstIndex()
    qps = queries_per_second(index, np.zeros((100, DIM), dtype=np.float32), k=5, repeats=3)
    assert qps == 1_600  # 100 queries in the best run's 0.0625 s, not the warm-up's 0.25 s
    assert index.searches == [(100, 5)] * 3


def test_save_load_round_trip_keeps_results_and_effort(data, tmp_path):
    corpus, queries, _ = data
    index = filled("HNSW8", corpus)
    set_search_effort(index, 32)
    save_index(index, tmp_path / "papers.faiss")
    loaded = load_index(tmp_path / "papers.faiss")
    assert loaded.hnsw.efSearch == 32  # the tuned effort travels with the index
    for a, b in zip(index.search(queries, 10), loaded.search(queries, 10)):
        np.testing.assert_array_equal(a, b)


def truncated_flat(path):
    """A Flat index file cut short, as a crash mid-write leaves it."""
    save_index(filled("Flat", clustered(100)), path)
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize(("spoil", "reason"), [
    (lambda path: None, "could not open"),
    (lambda path: path.write_bytes(b"not a faiss index" * 10), "not recognized"),
    (truncated_flat, "read error"),
])
def test_load_names_the_path_of_a_missing_or_corrupt_index(tmp_path, spoil, reason):
    path = tmp_path / "papers.faiss"
    spoil(path)
    with pytest.raises(PapersimError, match=f"cannot read faiss index {re.escape(str(path))}: .*{reason}"):
        load_index(path)


# Every kind auto_factory builds, small: (factory, effort that makes a search of this size exhaustive).
KINDS = [("Flat", 0), ("HNSW32", 4096), ("IVF16,PQ32x4fs,Refine(SQ8)", 16), ("IVF16,PQ16np", 16)]


def brute_within(index, queries: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The top-k rows of `rows` by inner product with the index's own stored vectors: the ground truth."""
    scores = queries @ ann.reconstruct_rows(index, rows).T  # (n_queries, n_rows)
    return np.stack([rows[np.lexsort((rows, -s))][:k] for s in scores])


@pytest.mark.parametrize("factory, effort", KINDS)
def test_a_filtered_search_is_the_top_k_of_the_filtered_rows_on_every_index_kind(data, factory, effort,
                                                                                  monkeypatch):
    corpus, queries, _ = data
    index = create_index(factory, DIM)
    add_vectors(index, corpus)
    set_search_effort(index, effort)
    rng = np.random.default_rng(1)
    queries = queries[:20]
    for share in (0.005, 0.3):  # a narrow filter (fewer rows than k for some) and a broad one
        rows = np.sort(rng.choice(len(corpus), int(share * len(corpus)), replace=False))
        for exact_max in (ann.EXACT_WITHIN_MAX, 0):  # rows scored exactly | the index searched with a selector
            monkeypatch.setattr(ann, "EXACT_WITHIN_MAX", exact_max)
            scores, ids = ann.search_within(index, queries, 10, rows)
            assert np.isin(ids[ids >= 0], rows).all()  # never a row outside the filter
            assert ((ids >= 0).sum(axis=1) == min(10, len(rows))).all()  # k of them whenever the filter has k
            truth = brute_within(index, queries, rows, 10)
            if exact_max or factory in ("Flat", "HNSW32"):  # exact scan, or full vectors searched exhaustively
                assert (ids[:, :truth.shape[1]] == truth).all(), (factory, share, exact_max)
            else:  # compressed codes rank candidates by approximate scores, then re-rank (refine) or not
                assert recall_at_k(ids, truth, truth.shape[1]) >= 0.9, (factory, share)

"""Hard negatives for training pairs: candidates ranked by BM25 and dense miners, then filtered.

A candidate ranks high for the anchor yet is not its positive: it is dropped when it is the pair
itself, a duplicate of the positive, listed with the anchor, or scores too close to the positive
(the likeliest false negatives).
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from papersim.progress import Heartbeat, working_on
from papersim.retrieval import ann
from papersim.retrieval.dense import dense_search
from papersim.retrieval.lexical import BM25

if TYPE_CHECKING:  # pairs imports this module: a runtime import would be circular
    from papersim.training.pairs import MinePairsConfig

MINERS = ("bm25", "dense")
# Filters a hard-negative candidate goes through, in this order; the report counts each.
FILTERS = ("self", "duplicate", "same_group", "relative_margin")


@dataclass
class Candidates:
    """Ranked candidate documents of one miner for every anchor, with the positive's score."""

    indices: np.ndarray  # (n_anchors, range_max) corpus row, best first; -1: no candidate
    scores: np.ndarray  # (n_anchors, range_max)
    positive_scores: np.ndarray  # (n_anchors,)


def top_k_matches(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best positive `scores`, best first, equal scores by row; fewer when fewer match.

    Works on the matching rows only (a query matches a fraction of the corpus): partitioning the whole
    score row per anchor was 87% of BM25 mining at 1M papers (benchmarks/pipeline_scale.py)."""
    rows = np.flatnonzero(scores > 0)
    values = scores[rows]
    if len(rows) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]  # the k-th best score
        keep = values > kth
        keep[np.flatnonzero(values == kth)[: k - int(keep.sum())]] = True  # ties at the cut: lowest rows
        rows, values = rows[keep], values[keep]
    return rows[np.argsort(-values, kind="stable")]


def bm25_candidates(anchors: list[str], corpus: list[str], positives: np.ndarray, k: int) -> Candidates:
    """BM25 top-k over `corpus` for each anchor (only documents sharing a term); positives index `corpus`."""
    # Unstemmed, unlike search's BM25: stemming would change which negatives are mined. Rows, not ids, are used.
    bm25 = BM25([str(i) for i in range(len(corpus))], corpus, stemmer="")
    k = min(k, len(corpus))
    indices = np.full((len(anchors), k), -1, dtype=np.int64)  # -1: no candidate at that rank
    scores = np.zeros((len(anchors), k), dtype=np.float32)
    positive_scores = np.zeros(len(anchors), dtype=np.float32)
    for i, row in enumerate(bm25.score_rows(anchors)):  # row: (n_corpus,); None: only stop words
        if row is not None:
            # Ranked here, not by BM25.search: bm25s pads short rankings with arbitrary zero-score rows and
            # orders equal scores by its own selection, so the mined negatives would not be reproducible.
            top = top_k_matches(row, k)
            indices[i, :len(top)], scores[i, :len(top)] = top, row[top]
            positive_scores[i] = row[positives[i]]
    return Candidates(indices, scores, positive_scores)


def dense_candidates(anchor_emb: np.ndarray, corpus_emb: np.ndarray, positives: np.ndarray, k: int,
                     exact_max: int) -> tuple[Candidates, float]:
    """Cosine top-k of normalised embeddings, anchor_emb (n, d) against corpus_emb (m, d), and its recall.

    Exact (ties by row) up to `exact_max` papers; beyond, an HNSW index whose search effort is raised
    until recall@k against exact search reaches 0.95 on up to 200 anchors (the measured recall is returned).
    """
    positive_scores = np.einsum("nd,nd->n", anchor_emb, corpus_emb[positives])
    if len(corpus_emb) <= exact_max:
        indices, scores = dense_search(corpus_emb, anchor_emb, k)  # (n, k) each
        return Candidates(indices, scores, positive_scores), 1.0
    k = min(k, len(corpus_emb))
    index = ann.create_index("HNSW32", corpus_emb.shape[1])
    with Heartbeat(f"dense: an HNSW index of {len(corpus_emb):,} papers searched by {len(anchor_emb):,} anchors"):
        ann.add_vectors(index, corpus_emb)
        probe = anchor_emb[:200]
        _, recall = ann.tune_search_effort(index, probe, ann.exact_neighbours(corpus_emb, probe, k),
                                           target_recall=0.95, k=k)
        scores, indices = index.search(np.ascontiguousarray(anchor_emb, dtype=np.float32), k)  # (n, k) each
    order = np.lexsort((indices, -scores), axis=1)  # equal scores by row, as exact search orders them
    indices, scores = np.take_along_axis(indices, order, axis=1), np.take_along_axis(scores, order, axis=1)
    return Candidates(indices.astype(np.int64), scores, positive_scores), recall


def anchor_embeddings(pairs: pd.DataFrame, corpus_texts: list[str], corpus_emb: np.ndarray,
                      encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """(n_pairs, d): anchors that are a corpus abstract reuse its embedding; the rest are encoded once."""
    is_corpus = np.array([a == corpus_texts[r] for a, r in zip(pairs["anchor"], pairs["anchor_row"])], dtype=bool)
    out = np.empty((len(pairs), corpus_emb.shape[1]), dtype=corpus_emb.dtype)
    out[is_corpus] = corpus_emb[pairs["anchor_row"].to_numpy()[is_corpus]]
    others = pairs["anchor"][~is_corpus].tolist()
    if others:
        unique = sorted(set(others))
        emb = encode(unique)
        where = {t: i for i, t in enumerate(unique)}
        out[~is_corpus] = emb[[where[t] for t in others]]
    return out


def _gather(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """values[offsets[r]:offsets[r + 1]] for every r in `rows`, flat, with the position in `rows` each came from."""
    lengths = offsets[rows + 1] - offsets[rows]
    owner = np.repeat(np.arange(len(rows)), lengths)
    starts = np.repeat(offsets[rows] - (np.cumsum(lengths) - lengths), lengths)
    return owner, values[starts + np.arange(len(owner))]


def _group_codes(groups: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Each corpus row's similarity groups as integer codes: (offsets (n_rows + 1,), flat codes)."""
    lengths = np.fromiter((len(g) for g in groups), dtype=np.int64, count=len(groups))
    codes = pd.factorize(pd.Series([g for gs in groups for g in gs], dtype=object))[0].astype(np.int64)
    return np.concatenate([[0], np.cumsum(lengths)]), codes


def _shares_group(offsets: np.ndarray, codes: np.ndarray, anchors: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(n_pairs, n_ranks) True where a candidate row shares a similarity group with its pair's anchor row;
    `offsets` and `codes` from `_group_codes`."""
    n_codes = int(codes.max()) + 1 if len(codes) else 1
    pair, code = _gather(offsets, codes, anchors)
    anchor_keys = pair * n_codes + code  # (pair, group) of every anchor's group
    flat = candidates.reshape(-1)
    valid = np.flatnonzero(flat >= 0)
    owner, code = _gather(offsets, codes, flat[valid])
    position = valid[owner]  # flat (pair, rank) position of each candidate group
    hit = np.isin(position // candidates.shape[1] * n_codes + code, anchor_keys)
    shares = np.zeros(flat.shape, dtype=bool)
    shares[position[hit]] = True
    return shares.reshape(candidates.shape)


def _near_duplicates(corpus_emb: np.ndarray, candidates: np.ndarray, positives: np.ndarray, threshold: float,
                     block: int = 1024) -> np.ndarray:
    """(n_pairs, n_ranks) True where a candidate's cosine to the pair's positive reaches `threshold`,
    computed `block` pairs at a time (block x ranks x dim floats)."""
    out = np.zeros(candidates.shape, dtype=bool)
    for start in range(0, len(candidates), block):
        rows = candidates[start:start + block]
        cosine = np.einsum("prd,pd->pr", corpus_emb[np.maximum(rows, 0)], corpus_emb[positives[start:start + block]])
        out[start:start + block] = (cosine >= threshold) & (rows >= 0)
    return out


def select_negatives(
    pairs: pd.DataFrame, corpus: pd.DataFrame, miners: dict[str, Candidates], corpus_emb: np.ndarray | None,
    cfg: "MinePairsConfig", rng: np.random.Generator,
) -> tuple[list[list[int]], Counter]:
    """Up to num_negatives corpus rows per pair, taken in turn from each miner's filtered ranks.

    `pairs` has anchor_row and positive_row (corpus rows of the anchor's and the positive's paper);
    `corpus` has content_hash and similarity_groups. Returns the chosen rows per pair and the
    number of candidates each filter removed (plus how many slots were filled at random).
    The filters run on whole (pairs x ranks) arrays: a Python loop over every candidate took
    minutes at 50,000 pairs.
    """
    removed: Counter = Counter()
    anchors, positives = pairs["anchor_row"].to_numpy(), pairs["positive_row"].to_numpy()
    hashes = pd.factorize(corpus["content_hash"])[0]
    groups = corpus["similarity_groups"].tolist()
    offsets, codes = _group_codes(groups) if cfg.co_listing else (None, None)
    streams = []  # per miner: (pair, order key, row) of every kept candidate
    for m, cand in enumerate(miners.values()):
        rows = cand.indices[:, :cfg.range_max]
        left = rows >= 0
        left[:, :cfg.range_min] = False
        masks = {"self": (rows == anchors[:, None]) | (rows == positives[:, None]),
                 "duplicate": hashes[np.maximum(rows, 0)] == hashes[positives][:, None]}
        if corpus_emb is not None:
            masks["duplicate"] |= _near_duplicates(corpus_emb, rows, positives, cfg.near_duplicate_cosine)
        masks["same_group"] = (_shares_group(offsets, codes, anchors, rows) if cfg.co_listing
                               else np.zeros(rows.shape, dtype=bool))
        positive = cand.positive_scores[:, None]
        masks["relative_margin"] = (positive > 0) & (cand.scores[:, :cfg.range_max] > cfg.relative_margin * positive)
        for name in FILTERS:  # a candidate counts for the first filter that drops it
            hit = left & masks[name]
            removed[name] += int(hit.sum())
            left &= ~hit
        depth = np.cumsum(left, axis=1) - 1  # rank among this miner's kept candidates
        pair, rank = np.nonzero(left)
        streams.append((pair, depth[pair, rank] * len(miners) + m, rows[pair, rank]))
    pair, key, row = (np.concatenate(column) for column in zip(*streams)) if streams else (np.zeros(0, int),) * 3
    order = np.lexsort((key, pair))  # round-robin over miners, best ranks first, per pair
    pair, row = pair[order], row[order]
    first = np.sort(np.unique(pair * len(corpus) + row, return_index=True)[1])  # a row once per pair
    pair, row = pair[first], row[first]
    rank = np.arange(len(pair)) - np.searchsorted(pair, pair)  # position within the pair's picks
    take = rank < cfg.num_negatives
    picks = np.split(row[take], np.searchsorted(pair[take], np.arange(1, len(pairs))))
    chosen: list[list[int]] = []
    for p, (anchor_row, positive_row) in enumerate(zip(anchors.tolist(), positives.tolist())):
        picked = picks[p].tolist()
        anchor_groups = set(groups[anchor_row]) if cfg.co_listing else set()
        tries = 0
        while len(picked) < cfg.num_negatives and tries < 100:  # too few hard ones: a random paper
            row = int(rng.integers(len(corpus)))
            tries += 1
            if row not in (anchor_row, positive_row) and row not in picked and not (anchor_groups & set(groups[row])):
                picked.append(row)
                removed["random_fill"] += 1
        # Tiny corpora: any other paper will do. Only when still short: a permutation of the corpus per
        # pair made mining O(pairs x papers) (benchmarks/pipeline_scale.py: 678 s at 200k papers).
        for row in rng.permutation(len(corpus)).tolist() if len(picked) < cfg.num_negatives else []:
            if len(picked) >= cfg.num_negatives:
                break
            if row not in (anchor_row, positive_row) and row not in picked:
                picked.append(row)
                removed["random_fill"] += 1
        chosen.append(picked)
    return chosen, removed


def hard_negatives(
    pairs: pd.DataFrame, corpus: pd.DataFrame, cfg: "MinePairsConfig",
    encode: Callable[[list[str]], np.ndarray] | None, rng: np.random.Generator,
) -> tuple[list[list[int]], Counter, float | None]:
    """Rank one split's `corpus` (its papers) with each configured miner, then `select_negatives`.
    Returns the negatives per pair, the filters' counts and the dense miner's recall@range_max (None: no dense)."""
    corpus_texts = corpus["abstract"].tolist()
    positives = pairs["positive_row"].to_numpy()
    miners: dict[str, Candidates] = {}  # dense first, whatever cfg.miners' order: the round-robin follows it
    corpus_emb, recall = None, None
    if "dense" in cfg.miners:
        with working_on("abstracts"):
            corpus_emb = encode(corpus_texts)
        with working_on("anchors"):
            anchor_emb = anchor_embeddings(pairs, corpus_texts, corpus_emb, encode)
        miners["dense"], recall = dense_candidates(anchor_emb, corpus_emb, positives, cfg.range_max,
                                                   cfg.dense_exact_max)
    if "bm25" in cfg.miners:
        miners["bm25"] = bm25_candidates(pairs["anchor"].tolist(), corpus_texts, positives, cfg.range_max)
    return (*select_negatives(pairs, corpus, miners, corpus_emb, cfg, rng), recall)

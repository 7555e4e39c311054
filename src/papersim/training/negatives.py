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


def bm25_candidates(anchors: list[str], corpus: list[str], positives: np.ndarray, k: int) -> Candidates:
    """BM25 top-k over `corpus` for each anchor; positives index `corpus`."""
    # Unstemmed, unlike search's BM25: stemming would change which negatives are mined. Rows, not ids, are used.
    bm25 = BM25([str(i) for i in range(len(corpus))], corpus, stemmer="")
    k = min(k, len(corpus))
    indices = np.zeros((len(anchors), k), dtype=np.int64)
    scores = np.zeros((len(anchors), k), dtype=np.float32)
    positive_scores = np.zeros(len(anchors), dtype=np.float32)
    for i, row in enumerate(bm25.score_rows(anchors)):  # row: (n_corpus,)
        if row is None:  # only stop words or numbers: no term to match
            indices[i] = -1  # no candidates
            continue
        # Ranked here, not by BM25.search: bm25s orders equal scores (every zero-score row) differently,
        # and those rows fill the ranks of anchors with few matches, so the negatives would change.
        top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
        top = top[np.argsort(-row[top], kind="stable")]
        indices[i], scores[i] = top, row[top]
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
    ann.add_vectors(index, corpus_emb)
    probe = anchor_emb[:200]
    _, recall = ann.tune_search_effort(index, probe, ann.exact_neighbours(corpus_emb, probe, k),
                                       target_recall=0.95, k=k)
    scores, indices = index.search(np.ascontiguousarray(anchor_emb, dtype=np.float32), k)
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


def select_negatives(
    pairs: pd.DataFrame, corpus: pd.DataFrame, miners: dict[str, Candidates], corpus_emb: np.ndarray | None,
    cfg: "MinePairsConfig", rng: np.random.Generator,
) -> tuple[list[list[int]], Counter]:
    """Up to num_negatives corpus rows per pair, taken in turn from each miner's filtered ranks.

    `pairs` has anchor_row and positive_row (corpus rows of the anchor's and the positive's paper);
    `corpus` has content_hash and similarity_groups. Returns the chosen rows per pair and the
    number of candidates each filter removed (plus how many slots were filled at random).
    """
    removed: Counter = Counter()
    hashes = corpus["content_hash"].to_numpy()
    groups = corpus["similarity_groups"].tolist()
    chosen: list[list[int]] = []
    for p, (anchor_row, positive_row) in enumerate(zip(pairs["anchor_row"], pairs["positive_row"])):
        anchor_groups = set(groups[anchor_row]) if cfg.co_listing else set()
        streams = []
        for cand in miners.values():
            kept = []
            threshold = cfg.relative_margin * cand.positive_scores[p]
            for rank, (row, score) in enumerate(zip(cand.indices[p], cand.scores[p])):
                if rank < cfg.range_min or row < 0:
                    continue
                if row in (anchor_row, positive_row):
                    removed["self"] += 1
                elif hashes[row] == hashes[positive_row] or (
                    corpus_emb is not None
                    and float(corpus_emb[row] @ corpus_emb[positive_row]) >= cfg.near_duplicate_cosine
                ):
                    removed["duplicate"] += 1
                elif anchor_groups and anchor_groups & set(groups[row]):
                    removed["same_group"] += 1
                elif cand.positive_scores[p] > 0 and score > threshold:
                    removed["relative_margin"] += 1
                else:
                    kept.append(int(row))
            streams.append(kept)
        picked: list[int] = []
        for depth in range(cfg.range_max):  # round-robin over miners, best ranks first
            for kept in streams:
                if depth < len(kept) and kept[depth] not in picked and len(picked) < cfg.num_negatives:
                    picked.append(kept[depth])
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
        corpus_emb = encode(corpus_texts)
        miners["dense"], recall = dense_candidates(anchor_embeddings(pairs, corpus_texts, corpus_emb, encode),
                                                   corpus_emb, positives, cfg.range_max, cfg.dense_exact_max)
    if "bm25" in cfg.miners:
        miners["bm25"] = bm25_candidates(pairs["anchor"].tolist(), corpus_texts, positives, cfg.range_max)
    return (*select_negatives(pairs, corpus, miners, corpus_emb, cfg, rng), recall)

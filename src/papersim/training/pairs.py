"""Siamese training pairs from the ingested corpus: a leakage-free split, positives, hard negatives.

Only the papers' own text is used: titles, abstracts and groups (listing pages, categories).
No query or relevance judgment of any evaluation set is ever read here, so papers of a BEIR
collection are unlabelled text like any other.
"""

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
MINERS = ("bm25", "dense")
# Filters a hard-negative candidate goes through, in this order; the report counts each.
FILTERS = ("self", "duplicate", "same_group", "relative_margin")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$\\(])")


@dataclass(frozen=True)
class MinePairsConfig:
    """params.yaml `mine_pairs` section."""

    seed: int = 13  # fixes the split and every sampling choice
    val_fraction: float = 0.1  # papers whose pairs validate training (early stopping, best checkpoint)
    test_fraction: float = 0.1  # papers held out for the evaluate stage; never in any pair
    title_abstract: bool = True  # title -> own abstract, for papers with a usable title
    self_supervised: bool = True  # inverse cloze (one sentence -> the rest) for untitled / short titles
    min_title_chars: int = 20  # shorter titles ("Introduction", ids) are not a query: use the abstract
    co_listing: bool = True  # papers sharing a group (listing page, category) are positives
    max_group_size: int = 100  # larger groups (broad categories like cs.LG) say little about similarity
    max_colisted_per_paper: int = 2  # cap so that big groups don't dominate the pairs
    labelled_pairs: str = ""  # optional CSV/Parquet with anchor_id, positive_id columns
    num_negatives: int = 3  # hard negatives per pair (columns negative_1..negative_n)
    miners: list[str] = field(default_factory=lambda: ["bm25", "dense"])  # candidates taken in turn
    range_min: int = 1  # skip the very top ranks: the likeliest false negatives
    range_max: int = 50  # look no deeper: beyond this, negatives are no longer hard
    relative_margin: float = 0.95  # drop candidates scoring above 0.95 x the positive (NV-Retriever TopK-PercPos)
    near_duplicate_cosine: float = 0.98  # a candidate this close to the positive is the same paper
    model: str = ""  # dense miner's encoder: a sentence-transformers folder; "" = packaged all-MiniLM-L6-v2
    encode_batch_size: int = 32  # dense miner's encoding batch
    max_seq_length: int = 128  # as evaluate: the base model's vectors are then shared through the embedding cache
    backend: str = "auto"  # encoder backend (papersim.encoders.encode): openvino on CPUs (~2x torch), torch on GPUs

    def __post_init__(self) -> None:
        fractions = (self.val_fraction, self.test_fraction)
        if not (all(0 <= f < 1 for f in fractions) and sum(fractions) < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
        unknown = sorted(set(self.miners) - set(MINERS))
        if unknown or not self.miners:
            raise ValueError(f"miners: choose from {', '.join(MINERS)} (got {self.miners})")
        if not 0 <= self.range_min < self.range_max:
            raise ValueError("need 0 <= range_min < range_max")
        if self.num_negatives < 0 or self.max_colisted_per_paper < 0:
            raise ValueError("num_negatives and max_colisted_per_paper must be >= 0")
        if not 0 < self.relative_margin <= 1:
            raise ValueError("relative_margin must be in (0, 1]")


def seeded_unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, key): the same paper always lands the same way."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def paper_rng(seed: int, paper_id: str) -> np.random.Generator:
    """A random generator of a paper's own: its choices do not move when other papers come or go."""
    return np.random.default_rng([seed, int(seeded_unit(seed, paper_id) * 2**32)])


def assign_splits(paper_ids: list[str], cfg: MinePairsConfig) -> list[str]:
    """train / val / test per paper, from a seeded hash of its id (stable when papers are added)."""
    out = []
    for pid in paper_ids:
        u = seeded_unit(cfg.seed, pid)
        out.append("test" if u < cfg.test_fraction else "val" if u < cfg.test_fraction + cfg.val_fraction else "train")
    return out


def inverse_cloze(abstract: str, rng: np.random.Generator) -> tuple[str, str] | None:
    """(one sentence, the rest of the abstract); two disjoint halves when there is one sentence."""
    sentences = [s for s in SENTENCE_END.split(abstract) if s.strip()]
    if len(sentences) >= 3:
        i = int(rng.integers(len(sentences)))
        return sentences[i], " ".join(sentences[:i] + sentences[i + 1:])
    words = abstract.split()
    if len(words) < 8:
        return None
    half = len(words) // 2
    return " ".join(words[:half]), " ".join(words[half:])


@dataclass
class Candidates:
    """Ranked candidate documents of one miner for every anchor, with the positive's score."""

    indices: np.ndarray  # (n_anchors, range_max) corpus row, best first; -1: no candidate
    scores: np.ndarray  # (n_anchors, range_max)
    positive_scores: np.ndarray  # (n_anchors,)


def bm25_candidates(anchors: list[str], corpus: list[str], positives: np.ndarray, k: int) -> Candidates:
    """BM25 (bm25s, Lucene variant) top-k over `corpus` for each anchor; positives index `corpus`."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(corpus, show_progress=False), show_progress=False)
    tokens = bm25s.tokenize(anchors, return_ids=False, show_progress=False)
    k = min(k, len(corpus))
    indices = np.zeros((len(anchors), k), dtype=np.int64)
    scores = np.zeros((len(anchors), k), dtype=np.float32)
    positive_scores = np.zeros(len(anchors), dtype=np.float32)
    for i, query in enumerate(tokens):
        if not query:  # only stop words or numbers: no term to match (bm25s' get_scores raises on it)
            indices[i] = -1  # no candidates
            continue
        row = retriever.get_scores(query)  # (n_corpus,)
        top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
        top = top[np.argsort(-row[top], kind="stable")]
        indices[i], scores[i] = top, row[top]
        positive_scores[i] = row[positives[i]]
    return Candidates(indices, scores, positive_scores)


def dense_candidates(anchor_emb: np.ndarray, corpus_emb: np.ndarray, positives: np.ndarray, k: int) -> Candidates:
    """Cosine top-k of normalised embeddings; anchor_emb (n, d), corpus_emb (m, d)."""
    k = min(k, len(corpus_emb))
    indices = np.zeros((len(anchor_emb), k), dtype=np.int64)
    scores = np.zeros((len(anchor_emb), k), dtype=np.float32)
    for start in range(0, len(anchor_emb), 1024):  # (1024, m) score blocks bound memory
        block = anchor_emb[start:start + 1024] @ corpus_emb.T
        if k < block.shape[1]:
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        else:
            top = np.tile(np.arange(k), (len(block), 1))
        order = np.argsort(-np.take_along_axis(block, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        indices[start:start + len(block)] = top
        scores[start:start + len(block)] = np.take_along_axis(block, top, axis=1)
    positive_scores = np.einsum("nd,nd->n", anchor_emb, corpus_emb[positives])
    return Candidates(indices, scores, positive_scores)


def select_negatives(
    pairs: pd.DataFrame, corpus: pd.DataFrame, miners: dict[str, Candidates], corpus_emb: np.ndarray | None,
    cfg: MinePairsConfig, rng: np.random.Generator,
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
        for name, cand in miners.items():
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
        for row in rng.permutation(len(corpus)).tolist():  # tiny corpora: any other paper will do
            if len(picked) >= cfg.num_negatives:
                break
            if row not in (anchor_row, positive_row) and row not in picked:
                picked.append(row)
                removed["random_fill"] += 1
        chosen.append(picked)
    return chosen, removed


def _anchor_embeddings(pairs: pd.DataFrame, corpus_texts: list[str], corpus_emb: np.ndarray,
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


@dataclass
class PairsResult:
    train: pd.DataFrame
    val: pd.DataFrame
    split: pd.DataFrame  # paper_id, split
    report: dict


def positive_pairs(papers: pd.DataFrame, cfg: MinePairsConfig, labelled: pd.DataFrame | None) -> pd.DataFrame:
    """Positive pairs of one split's papers: anchor/positive texts, their corpus rows and the source."""
    rng = np.random.default_rng(cfg.seed)
    rows: list[tuple[str, str, int, int, str]] = []
    for i, (title, abstract, pid) in enumerate(zip(papers["title"], papers["abstract"], papers["paper_id"])):
        if len(title) >= cfg.min_title_chars:
            if cfg.title_abstract:
                rows.append((title, abstract, i, i, "title_abstract"))
        elif cfg.self_supervised:
            view = inverse_cloze(abstract, paper_rng(cfg.seed, pid))
            if view is not None:
                rows.append((view[0], view[1], i, i, "self_supervised"))
    if cfg.co_listing and cfg.max_colisted_per_paper:
        members: dict[str, list[int]] = {}
        for i, gs in enumerate(papers["similarity_groups"]):
            for g in gs:
                members.setdefault(g, []).append(i)
        for i, gs in enumerate(papers["similarity_groups"]):
            partners = sorted({j for g in gs for j in members[g] if j != i})
            if partners:
                take = rng.choice(partners, size=min(cfg.max_colisted_per_paper, len(partners)), replace=False)
                rows += [(papers["abstract"].iat[i], papers["abstract"].iat[int(j)], i, int(j), "co_listed")
                         for j in sorted(take)]
    if labelled is not None and len(labelled):
        index = {pid: i for i, pid in enumerate(papers["paper_id"])}
        for a, b in zip(labelled["anchor_id"], labelled["positive_id"]):
            if a in index and b in index:  # pairs crossing splits are dropped: no leakage
                rows.append((papers["abstract"].iat[index[a]], papers["abstract"].iat[index[b]], index[a], index[b],
                             "labelled"))
    pairs = pd.DataFrame(rows, columns=["anchor", "positive", "anchor_row", "positive_row", "source"])
    return pairs.drop_duplicates(["anchor", "positive"], ignore_index=True)


def mine_pairs(
    papers: pd.DataFrame, cfg: MinePairsConfig, encode: Callable[[list[str]], np.ndarray] | None,
    labelled: pd.DataFrame | None = None,
) -> PairsResult:
    """Split papers, build positives per split, add mined hard negatives; test papers stay untouched.

    `papers` is papers.parquet as a DataFrame; `encode` maps texts to L2-normalised embeddings
    (n, d) (the dense miner; None when it is not configured).
    """
    if "dense" in cfg.miners and encode is None:
        raise ValueError("the dense miner is configured but no encoder was given")
    papers = papers.reset_index(drop=True)
    split = assign_splits(papers["paper_id"].tolist(), cfg)
    group_sizes = Counter(g for gs in papers["groups"] for g in gs)
    similarity = [[g for g in gs if 2 <= group_sizes[g] <= cfg.max_group_size] for gs in papers["groups"]]
    papers = papers.assign(split=split, similarity_groups=similarity)
    report: dict = {"papers": dict(Counter(split)), "pairs": {}, "negatives_removed": {}, "negatives": {}}
    out = {}
    for name in ("train", "val"):
        part = papers[papers["split"] == name].reset_index(drop=True)
        pairs = positive_pairs(part, cfg, labelled)
        report["pairs"][name] = {"total": len(pairs), **dict(Counter(pairs["source"]))}
        removed: Counter = Counter()
        if cfg.num_negatives and len(pairs) and len(part) > cfg.num_negatives + 2:
            corpus_texts = part["abstract"].tolist()
            positives = pairs["positive_row"].to_numpy()
            miners: dict[str, Candidates] = {}
            corpus_emb = None
            if "dense" in cfg.miners:
                corpus_emb = encode(corpus_texts)
                miners["dense"] = dense_candidates(_anchor_embeddings(pairs, corpus_texts, corpus_emb, encode),
                                                   corpus_emb, positives, cfg.range_max)
            if "bm25" in cfg.miners:
                miners["bm25"] = bm25_candidates(pairs["anchor"].tolist(), corpus_texts, positives, cfg.range_max)
            rng = np.random.default_rng([cfg.seed, SPLITS.index(name)])
            negatives, removed = select_negatives(pairs, part, miners, corpus_emb, cfg, rng)
            for k in range(cfg.num_negatives):
                pairs[f"negative_{k + 1}"] = [corpus_texts[n[k]] for n in negatives]
            pairs["negative_ids"] = [[part["paper_id"].iat[r] for r in n] for n in negatives]
        report["negatives_removed"][name] = {f: removed.get(f, 0) for f in FILTERS}
        report["negatives"][name] = {"random_fill": removed.get("random_fill", 0),
                                     "per_pair": cfg.num_negatives if "negative_ids" in pairs else 0}
        pairs["anchor_id"] = part["paper_id"].to_numpy()[pairs["anchor_row"]] if len(pairs) else []
        pairs["positive_id"] = part["paper_id"].to_numpy()[pairs["positive_row"]] if len(pairs) else []
        out[name] = pairs.drop(columns=["anchor_row", "positive_row"])
    return PairsResult(out["train"], out["val"], papers[["paper_id", "split"]].copy(), report)

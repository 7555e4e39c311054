"""Siamese training pairs from the ingested corpus: a leakage-free split, positives, hard negatives.

Only the papers' own text is used: titles, abstracts and groups (listing pages, categories).
No query or relevance judgment of any evaluation set is ever read here, so papers of a BEIR
collection are unlabelled text like any other. Hard negatives are mined in negatives.py.
"""

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from papersim.data.groups import similarity_groups
from papersim.errors import PapersimError
from papersim.progress import working_on
from papersim.sampling import paper_rng, seeded_sample, seeded_unit
from papersim.training.negatives import FILTERS, MINERS, hard_negatives
from papersim.encoders.engine import EncodingEngine

SPLITS = ("train", "val", "test")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9$\\(])")


@dataclass(frozen=True)
class MinePairsConfig(EncodingEngine):
    """params.yaml `mine_pairs` section."""

    seed: int = 13  # fixes the split and every sampling choice
    val_fraction: float = 0.1  # papers whose pairs validate training (early stopping, best checkpoint)
    test_fraction: float = 0.1  # papers held out for the evaluate stage; never in any pair
    title_abstract: bool = True  # title -> own abstract, for papers with a usable title
    self_supervised: bool = True  # inverse cloze (one sentence -> the rest) for untitled / short titles
    min_title_chars: int = 20  # shorter titles ("Introduction", ids) are not a query: use the abstract
    co_listing: bool = True  # papers sharing a group (listing page, category) are positives
    # Whole listings held out ("unseen listings"): a seeded share of the similarity groups is test, another
    # val; every paper of such a group is in that split (test wins), so no pair, choice or training ever
    # sees the listing. What a new topic, corpus or site page is to the model.
    group_test_fraction: float = 0.2  # a fifth of the listings: 11 of the sample's 56 (fewer: intervals too wide)
    group_val_fraction: float = 0.2  # the similar task's choices are made on these (10 of the sample's)
    val_choice_fraction: float = 0.5  # of the other validation papers (known listings), kept for the similar
    # task's choice and out of every validation pair, so early stopping and the choice see different papers;
    # the held-out validation listings are all the choice's. Half: both keep enough papers to mean anything
    max_group_size: int = 100  # larger groups (broad categories like cs.LG) say little about similarity
    max_colisted_per_paper: int = 2  # cap so that big groups don't dominate the pairs
    labelled_pairs: str = ""  # optional CSV/Parquet with anchor_id, positive_id columns
    # Mining costs O(pairs x papers): only a seeded sample of pairs is kept and mined. Training reads
    # train.max_steps x batch_size pairs (320 in the CPU profile, 768k in the README's GPU recipe:
    # raise this there); the sample keeps a paper's pairs stable as the corpus grows. 0 = all.
    max_pairs: int = 50_000
    max_val_pairs: int = 2_000  # validation queries: nDCG@10 over 2k is stable to ~0.01; more costs memory
    dense_exact_max: int = 50_000  # dense miner: exact search up to this many papers, HNSW (recall measured) beyond
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
        self.check_engine()
        fractions = (self.val_fraction, self.test_fraction)
        if not (all(0 <= f < 1 for f in fractions) and sum(fractions) < 1):
            raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum below 1")
        groups = (self.group_val_fraction, self.group_test_fraction)
        if not (all(0 <= f < 1 for f in groups) and sum(groups) < 1):
            raise ValueError("group_val_fraction and group_test_fraction must be in [0, 1) and sum below 1")
        if not 0 <= self.val_choice_fraction <= 1:
            raise ValueError(f"val_choice_fraction must be in [0, 1], got {self.val_choice_fraction}")
        unknown = sorted(set(self.miners) - set(MINERS))
        if unknown or not self.miners:
            raise ValueError(f"miners: choose from {', '.join(MINERS)} (got {self.miners})")
        if not 0 <= self.range_min < self.range_max:
            raise ValueError("need 0 <= range_min < range_max")
        if min(self.num_negatives, self.max_colisted_per_paper, self.max_pairs, self.max_val_pairs) < 0:
            raise ValueError("num_negatives, max_colisted_per_paper, max_pairs and max_val_pairs must be >= 0")
        if not 0 < self.relative_margin <= 1:
            raise ValueError("relative_margin must be in (0, 1]")


def assign_splits(paper_ids: list[str], cfg: MinePairsConfig) -> list[str]:
    """train / val / test per paper, from a seeded hash of its id (stable when papers are added)."""
    out = []
    for pid in paper_ids:
        u = seeded_unit(cfg.seed, pid)
        out.append("test" if u < cfg.test_fraction else "val" if u < cfg.test_fraction + cfg.val_fraction else "train")
    return out


def group_split(group: str, cfg: MinePairsConfig) -> str:
    """test / val / train of a whole similarity group, from a seeded hash of its name (stable as papers join)."""
    u = seeded_unit(cfg.seed, f"group:{group}")
    return ("test" if u < cfg.group_test_fraction
            else "val" if u < cfg.group_test_fraction + cfg.group_val_fraction else "train")


def split_by_listing(paper_ids: list[str], similarity: list[list[str]], cfg: MinePairsConfig) -> pd.DataFrame:
    """paper_id, split, `unseen_groups` (the held-out groups of the paper's split, [] for a paper of known
    listings only) and `choice` (a validation paper kept for the similar task's choice: in no pair). A paper
    of a held-out test group is test, else of a held-out val group val, else split by its own hash
    (`assign_splits`): its listings are then known to training."""
    by_paper = assign_splits(paper_ids, cfg)
    splits, unseen = [], []
    for own, groups in zip(by_paper, similarity):
        held = {g: group_split(g, cfg) for g in groups}
        split = "test" if "test" in held.values() else "val" if "val" in held.values() else own
        splits.append(split)
        unseen.append(sorted(g for g, s in held.items() if s == split and split != "train"))
    choice = [split == "val" and (bool(held) or seeded_unit(cfg.seed, f"choice:{pid}") < cfg.val_choice_fraction)
              for pid, split, held in zip(paper_ids, splits, unseen)]
    return pd.DataFrame({"paper_id": paper_ids, "split": splits, "unseen_groups": unseen, "choice": choice})


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
class PairsResult:
    train: pd.DataFrame
    val: pd.DataFrame
    split: pd.DataFrame  # paper_id, split, unseen_groups
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


def read_labelled_pairs(path: str) -> pd.DataFrame | None:
    """The optional labelled positives (mine_pairs.labelled_pairs): Parquet or CSV; None when not configured."""
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise PapersimError(f"{path}: labelled pairs file not found (params.yaml mine_pairs.labelled_pairs)")
    frame = pd.read_parquet(file) if file.suffix in (".parquet", ".pq") else pd.read_csv(file, dtype=str)
    missing = {"anchor_id", "positive_id"} - set(frame.columns)
    if missing:
        raise PapersimError(f"{path}: needs columns anchor_id and positive_id (missing: {', '.join(sorted(missing))})")
    return frame


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
    similarity = similarity_groups(papers["groups"], cfg.max_group_size)
    splits = split_by_listing(papers["paper_id"].tolist(), similarity, cfg)
    # the choice's validation papers are in no pair: early stopping never sees them
    papers = papers.assign(split=splits["split"].where(~splits["choice"], "choice").to_numpy(),
                           similarity_groups=similarity)
    unseen = splits[splits["unseen_groups"].str.len() > 0]
    report: dict = {"papers": {**Counter(splits["split"]), "val_choice": int(splits["choice"].sum())},
                    "pairs": {}, "pairs_available": {},
                    "negatives_removed": {}, "negatives": {},
                    "unseen_listings": {name: {"groups": len({g for gs in part["unseen_groups"] for g in gs}),
                                               "papers": len(part)}
                                        for name, part in unseen.groupby("split")}}
    out = {}
    for name in ("train", "val"):
        part = papers[papers["split"] == name].reset_index(drop=True)
        pairs = positive_pairs(part, cfg, labelled)
        report["pairs_available"][name] = len(pairs)
        ids = part["paper_id"].to_numpy()
        keys = [f"{ids[a]}|{ids[b]}|{src}" for a, b, src in zip(pairs["anchor_row"], pairs["positive_row"],
                                                                  pairs["source"])]
        pairs = pairs.iloc[seeded_sample(keys, cfg.max_pairs if name == "train" else cfg.max_val_pairs,
                                         cfg.seed)].reset_index(drop=True)
        report["pairs"][name] = {"total": len(pairs), **dict(Counter(pairs["source"]))}
        removed: Counter = Counter()
        if cfg.num_negatives and len(pairs) and len(part) > cfg.num_negatives + 2:
            rng = np.random.default_rng([cfg.seed, SPLITS.index(name)])
            with working_on(f"mining {name} negatives"):
                negatives, removed, recall = hard_negatives(pairs, part, cfg, encode, rng)
            if recall is not None:
                report.setdefault("dense_recall", {})[name] = recall
            corpus_texts = part["abstract"].tolist()
            for k in range(cfg.num_negatives):
                pairs[f"negative_{k + 1}"] = [corpus_texts[n[k]] for n in negatives]
            pairs["negative_ids"] = [[part["paper_id"].iat[r] for r in n] for n in negatives]
        report["negatives_removed"][name] = {f: removed.get(f, 0) for f in FILTERS}
        report["negatives"][name] = {"random_fill": removed.get("random_fill", 0),
                                     "per_pair": cfg.num_negatives if "negative_ids" in pairs else 0}
        pairs["anchor_id"] = part["paper_id"].to_numpy()[pairs["anchor_row"]] if len(pairs) else []
        pairs["positive_id"] = part["paper_id"].to_numpy()[pairs["positive_row"]] if len(pairs) else []
        out[name] = pairs.drop(columns=["anchor_row", "positive_row"])
    return PairsResult(out["train"], out["val"], splits, report)

"""The evaluate stage's library: judged sets, the systems compared on them, and their scores.

Systems, on the same queries in the same run: `bm25` (bm25s), `base` (the untuned model),
`trained` (this run's model), `hybrid` (reciprocal-rank fusion of bm25 and trained),
`base_hybrid` (the same fusion of bm25 and base: what a user builds without papersim),
`served` (exactly what `papersim search` answers by default: the served encoder fused with bm25
as the train stage chose, papersim.training.selection) and `champion` (the registry's current model, when
one is given). Metrics come from papersim.evaluation.metrics (trec_eval definitions, graded relevance as
given); `served` is compared with every other system query by query (papersim.evaluation.significance).
"""

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from papersim.evaluation.metrics import per_query_scores, recall_curve
from papersim.evaluation.sets import EvalSet, listing_clusters
from papersim.evaluation.significance import PairedDifference, clustered_difference, mean_interval, paired_difference
from papersim.progress import Progress, track, working_on
from papersim.retrieval.dense import dense_hits, dense_search
from papersim.retrieval.fusion import Fusion, fuse_rankings
from papersim.retrieval.lexical import BM25, lexical_hits
from papersim.retrieval.passage import Hits, Rankings
from papersim.retrieval.similar import (DEFAULT_TERMS, Similar, answer_similar, drop_rows, duplicates,
                                        excluded_rows, lexical_neighbours, similar_hits)
from papersim.encoders.engine import EncodingEngine

SYSTEMS = ("bm25", "base", "trained", "hybrid", "base_hybrid", "served", "champion")
DENSE = ("base", "trained", "champion")  # dense systems reported as such
FUSED = {"hybrid": "trained", "base_hybrid": "base", "served": "served"}  # fused system -> its dense part
COMPARED_METRIC = "ndcg@10"  # the metric of the paired comparisons in the report
SIMILAR_METRIC = "precision@10"  # the similar task's: the share of a listing's first screen that belongs there
SIMILAR_SYSTEMS = ("bm25", "mlt", "base", "trained", "hybrid", "base_hybrid", "served", "champion")


@dataclass(frozen=True)
class EvaluateConfig(EncodingEngine):
    """params.yaml `evaluate` section."""

    beir_sets: list[str] = field(default_factory=lambda: ["data/raw/beir/cranfield"])  # BEIR folders, own corpus each
    # judged folders a shipped default was chosen on (the fusion rule, convex 0.5 on z-scores, on Cranfield's
    # judgments): labelled development sets in the table, as train.selection_sets are
    development_sets: list[str] = field(default_factory=lambda: ["data/raw/beir/cranfield"])
    test_split: bool = True  # also score the held-out split: title -> own abstract, co-listing precision
    similar: bool = True  # and "papers similar to this one" on it: held-out papers asking for their co-listed ones
    systems: list[str] = field(default_factory=lambda: list(SYSTEMS))  # a subset of SYSTEMS
    base_model: str = ""  # the untuned baseline; "" = the packaged all-MiniLM-L6-v2
    stemmer: str = "english"  # BM25's Snowball stemmer ("" = none), as Lucene's English analyzer
    rrf_k: int = 60  # RRF's constant: 60 is Cormack et al.'s default and robust across collections
    depth: int = 100  # ranked documents per query and system: recall@100 and MAP@100 need 100
    backend: str = "auto"  # encoder backend (papersim.encoders.encode): auto = openvino on a CPU, torch on a GPU
    max_seq_length: int = 128  # tokens per text when encoding; same as training
    batch_size: int = 32  # texts per encoding batch
    max_group_size: int = 100  # co-listing groups larger than this say little about similarity (as mine_pairs)
    # The test split of a large corpus is scored on a seeded sample (0 = all): 2,000 queries put a 95%
    # interval of about +-0.01 on nDCG@10; 200,000 papers keep brute-force search to minutes on a CPU.
    test_split_max_queries: int = 2_000
    test_split_max_docs: int = 200_000
    recall_ks: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100])  # the recall@k curve

    def __post_init__(self) -> None:
        self.check_engine()
        unknown = set(self.systems) - set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems {sorted(unknown)}: choose from {', '.join(SYSTEMS)}")
        for fused, part in FUSED.items():
            if fused in self.systems and not ({"bm25", part} - {"served"}) <= set(self.systems):
                raise ValueError(f"the {fused} system fuses bm25 and {part}: list both")
        if min(self.rrf_k, self.depth, self.batch_size, self.max_seq_length) < 1:
            raise ValueError("rrf_k, depth, batch_size and max_seq_length must be positive")
        if not self.beir_sets and not self.test_split:
            raise ValueError("nothing to evaluate: give beir_sets or set test_split: true")


Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors


def _colisted_precision(neighbours: Mapping[str, list[str]], groups: Mapping[str, frozenset[str]], k: int) -> float:
    """Mean share of a paper's k nearest neighbours (itself excluded) that share a group with it."""
    shares = [sum(bool(groups.get(n, frozenset()) & groups[pid]) for n in found[:k]) / k
              for pid, found in neighbours.items()]
    return float(np.mean(shares)) if shares else float("nan")


@dataclass(frozen=True)
class SetResult:
    scores: dict[str, dict[str, float]]  # system -> metric -> value
    curves: dict[str, dict[int, float]]  # system -> k -> recall@k
    n_queries: int
    n_skipped: int
    content_hash: str = ""  # of the set scored: the champion gate compares only equal sets
    query_ids: list[str] = field(default_factory=list)  # the scored queries, in the order of `per_query`
    per_query: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # system -> metric -> (n_queries,)
    sample: dict[str, int] = field(default_factory=dict)  # a capped set: queries/docs scored of those available
    compared_metric: str = COMPARED_METRIC  # the metric of this set's intervals and paired comparisons
    facts: dict = field(default_factory=dict)  # what the set holds (the similar task: papers and groups)
    clusters: list[str] = field(default_factory=list)  # per query (similar task: its listing): resampled together

    def compare(self, a: np.ndarray, b: np.ndarray) -> PairedDifference:
        """a - b paired by query; clustered by listing where the queries have clusters (papers of one listing
        share their relevant papers: they are not independent)."""
        return clustered_difference(a, b, self.clusters) if self.clusters else paired_difference(a, b)

    def intervals(self, metric: str | None = None) -> dict[str, dict[str, tuple[float, float]]]:
        """Each system's 95% bootstrap interval of its mean `metric` (default: every metric of the
        similar task, the compared one elsewhere) over these queries: metric -> system -> (low, high)."""
        metrics = [metric] if metric else (list(next(iter(self.per_query.values()), {}))
                                           if self.compared_metric == SIMILAR_METRIC else [self.compared_metric])
        progress = Progress("bootstrap intervals", total=len(metrics) * len(self.per_query), unit="intervals")

        def interval(values: np.ndarray) -> tuple[float, float]:
            if not self.clusters:
                found = mean_interval(values)
            else:
                d = clustered_difference(values, np.zeros_like(values), self.clusters)
                found = d.low, d.high
            progress.advance()
            return found

        out = {m: {system: interval(values[m]) for system, values in self.per_query.items()} for m in metrics}
        progress.done()
        return out

    def served_versus(self, metric: str | None = None) -> dict[str, PairedDifference]:
        """served minus each other system on `metric`, query by query (empty without `served`)."""
        metric = metric or self.compared_metric
        if "served" not in self.per_query:
            return {}
        served = self.per_query["served"][metric]
        return {system: self.compare(served, values[metric])
                for system, values in track(self.per_query.items(), "paired tests of served against each system",
                                            unit="systems") if system != "served"}

    def training_gain(self, metric: str | None = None) -> PairedDifference | None:
        """What training adds: trained minus base on `metric`, query by query (None without both)."""
        metric = metric or self.compared_metric
        if not {"trained", "base"} <= set(self.per_query):
            return None
        return self.compare(self.per_query["trained"][metric], self.per_query["base"][metric])


def encoder_folders(cfg: EvaluateConfig, trained: str, served: str, champion: str | None,
                    served_similar: str | None = None) -> tuple[dict[str, str], list[str]]:
    """Dense part -> encoder folder ("" = the packaged base) for the configured systems, and notes on
    systems left out (the champion when no champion folder is given). `served_similar`: the encoder
    answering the similar task, when it is scored."""
    folders = {"base": cfg.base_model, "trained": trained, "served": served}
    notes = []
    if champion is not None:
        folders["champion"] = champion
    elif "champion" in cfg.systems:
        notes.append("champion: skipped here (no --champion-model); the retrain flow's gate compares the "
                     "candidate with the registry champion on these sets")
    parts = set(cfg.systems) | {part for system, part in FUSED.items() if system in cfg.systems}
    if served_similar is not None and "served" in cfg.systems:
        folders["served_similar"] = served_similar
        parts.add("served_similar")
    return {k: v for k, v in folders.items() if k in parts}, notes


def _dense_parts(wanted: list[str]) -> list[str]:
    parts = [s for s in wanted if s in DENSE] + [part for s, part in FUSED.items() if s in wanted]
    return list(dict.fromkeys(parts))


def evaluate_set(eval_set: EvalSet, encoders: Mapping[str, Embed], cfg: EvaluateConfig,
                 served: Fusion | None = None) -> SetResult:
    """Score every configured system on one set.

    `encoders` maps dense parts (base, trained, champion, and `served`: the served encoder) to
    embedders; `served` is the served system's fusion. A system whose parts are missing is left out.
    """
    rrf = Fusion(method="rrf", rrf_k=cfg.rrf_k, depth=cfg.depth)
    fusions = {"hybrid": rrf, "base_hybrid": rrf, "served": served}
    wanted = [s for s in cfg.systems if (s not in DENSE or s in encoders)
              and (s not in FUSED or (FUSED[s] in encoders and fusions[s] is not None))]
    row_of = {pid: row for row, pid in enumerate(eval_set.doc_ids)}
    group_rows = np.array([row_of[pid] for pid in eval_set.group_queries] if eval_set.groups else [], dtype=np.int64)
    lexical: dict[str, Hits] = {}
    lexical_nb: dict[str, Hits] = {}  # a paper's neighbours by its own text (itself excluded)
    if "bm25" in wanted or any(s in FUSED for s in wanted):
        with working_on(eval_set.name):
            bm25 = BM25(eval_set.doc_ids, eval_set.doc_texts, cfg.stemmer)
            lexical = lexical_hits(bm25, eval_set.query_ids, eval_set.query_texts, cfg.depth)
        if len(group_rows):
            with working_on(f"{eval_set.name} papers asking for their neighbours"):
                found = lexical_hits(bm25, eval_set.group_queries, [eval_set.doc_texts[r] for r in group_rows],
                                     cfg.depth + 1)
            lexical_nb = {pid: ([d for d in ids if d != pid], [s for d, s in zip(ids, scores) if d != pid])
                          for pid, (ids, scores) in found.items()}
    dense: dict[str, dict[str, Hits]] = {}
    dense_nb: dict[str, dict[str, Hits]] = {}
    vectors: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # one encoding per embedder, shared by its parts
    for part in _dense_parts(wanted):
        embed = encoders[part]
        if id(embed) not in vectors:
            with working_on(f"{eval_set.name} documents, {part} encoder"):
                docs = embed(eval_set.doc_texts)  # (n_docs, dim)
            with working_on(f"{eval_set.name} queries, {part} encoder"):
                vectors[id(embed)] = (docs, embed(eval_set.query_texts))  # (n_docs, dim), (n_queries, dim)
        docs, queries = vectors[id(embed)]
        with working_on(f"{eval_set.name}, {part} encoder"):
            dense[part] = dense_hits(eval_set.doc_ids, docs, eval_set.query_ids, queries, cfg.depth)
            if len(group_rows):
                dense_nb[part] = dense_hits(eval_set.doc_ids, docs, eval_set.group_queries, docs[group_rows],
                                            cfg.depth, exclude=group_rows)
    rankings: dict[str, Rankings] = {}
    neighbours: dict[str, Rankings] = {}
    for system in wanted:
        if system in FUSED:
            rankings[system] = fuse_rankings(lexical, dense[FUSED[system]], fusions[system])
            if len(group_rows):
                neighbours[system] = fuse_rankings(lexical_nb, dense_nb[FUSED[system]], fusions[system])
        else:
            hits, hits_nb = (lexical, lexical_nb) if system == "bm25" else (dense[system], dense_nb.get(system, {}))
            rankings[system] = {qid: list(h[0]) for qid, h in hits.items()}
            if len(group_rows):
                neighbours[system] = {pid: list(h[0]) for pid, h in hits_nb.items()}
    scores, curves, per_query = {}, {}, {}
    query_ids: list[str] = []
    for system in wanted:
        query_ids, values = per_query_scores(rankings[system], eval_set.qrels)
        per_query[system] = values
        scores[system] = {metric: float(np.mean(v)) for metric, v in values.items()}
        if system in neighbours:
            scores[system]["colisted_precision@10"] = _colisted_precision(neighbours[system], eval_set.groups, 10)
        curves[system] = recall_curve(rankings[system], eval_set.qrels, cfg.recall_ks)
    n_skipped = len(eval_set.qrels) - len(query_ids)
    return SetResult(scores=scores, curves=curves, n_queries=len(query_ids), n_skipped=n_skipped,
                     content_hash=eval_set.content_hash, query_ids=query_ids, per_query=per_query,
                     sample=eval_set.sample)


def evaluate_similar(eval_set: EvalSet, encoders: Mapping[str, Embed], cfg: EvaluateConfig,
                     similar: Similar | None) -> SetResult:
    """Score "papers similar to this one" (sets.colisting_set): each query paper ranks the set's corpus.

    Systems: `bm25` (the whole paper as the BM25 query: what a user builds without papersim), `mlt`
    (BM25 with the paper's telling terms), `base`, `trained` and `champion` (the paper's dense neighbours,
    vectors as the search index makes them), `hybrid` / `base_hybrid` (RRF of bm25 and trained / base) and
    `served` (exactly `papersim similar`, through `answer_similar`: `similar`'s encoder and paper view
    (`encoders["served_similar"]`) and lexical query, fused as it says). Every system leaves the paper itself
    and its exact duplicates out.
    """
    row_of = {pid: row for row, pid in enumerate(eval_set.doc_ids)}
    rows = [row_of[q] for q in eval_set.query_ids]
    exclude = excluded_rows(rows, duplicates(eval_set.doc_hashes or eval_set.doc_ids))
    extra = max(len(e) for e in exclude)
    depth = cfg.depth
    with working_on(eval_set.name):
        bm25 = BM25(eval_set.doc_ids, eval_set.doc_texts, cfg.stemmer)
        found, scores = bm25.search(eval_set.query_texts, depth + extra)
    hits: dict[str, list[Hits]] = {
        "bm25": [drop_rows(([int(r) for r, x in zip(f, s) if x > 0], [float(x) for x in s if x > 0]), e, depth)
                 for f, s, e in zip(found, scores, exclude)]}
    terms = similar.terms if similar is not None and similar.lexical == "mlt" else DEFAULT_TERMS
    with working_on(f"{eval_set.name}, mlt"):
        hits["mlt"] = lexical_neighbours(bm25, eval_set.query_texts, terms, depth, exclude)
    vectors: dict[int, np.ndarray] = {}
    deep: dict[str, list[Hits]] = {}  # each dense part's neighbours, the excluded rows still in
    for part in ("base", "trained", "champion", "served_similar"):
        if part in encoders:
            embed = encoders[part]
            with working_on(f"{eval_set.name} papers, {part} encoder"):
                if id(embed) not in vectors:
                    vectors[id(embed)] = embed(eval_set.doc_texts)  # (n_docs, dim)
                docs = vectors[id(embed)]
                found, scores = dense_search(docs, docs[rows], depth + extra)
            deep[part] = [(f.tolist(), s.tolist()) for f, s in zip(found, scores)]
            hits[part] = [drop_rows(d, e, depth) for d, e in zip(deep[part], exclude)]
    rrf = Fusion(method="rrf", rrf_k=cfg.rrf_k, depth=depth)
    for system, part in (("hybrid", "trained"), ("base_hybrid", "base")):
        if part in hits:
            hits[system] = similar_hits(hits["bm25"], hits[part], rrf)
    if similar is not None and "served_similar" in hits:
        with working_on(f"{eval_set.name}, served"):
            hits["served"] = answer_similar(bm25, eval_set.query_texts, deep["served_similar"], exclude, similar)
    wanted = [s for s in SIMILAR_SYSTEMS if s in hits and (s in cfg.systems or s == "mlt")]
    scores_by_system, curves, per_query = {}, {}, {}
    query_ids: list[str] = []
    for system in wanted:
        ranking = {q: [eval_set.doc_ids[r] for r in h[0]] for q, h in zip(eval_set.query_ids, hits[system])}
        query_ids, values = per_query_scores(ranking, eval_set.qrels, recall_ks=(10, 100), precision_ks=(10,))
        per_query[system] = values
        scores_by_system[system] = {metric: float(np.mean(v)) for metric, v in values.items()}
        curves[system] = recall_curve(ranking, eval_set.qrels, cfg.recall_ks)
    return SetResult(scores=scores_by_system, curves=curves, n_queries=len(query_ids),
                     n_skipped=len(eval_set.qrels) - len(query_ids), content_hash=eval_set.content_hash,
                     query_ids=query_ids, per_query=per_query, sample=eval_set.sample,
                     compared_metric=SIMILAR_METRIC, facts=eval_set.facts,
                     clusters=listing_clusters(eval_set, query_ids))


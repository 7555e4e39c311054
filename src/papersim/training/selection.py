"""What a candidate serves, chosen after training on the validation split, without any judgment.

Pseudo-queries stand in for users: each validation paper asks for the rest of itself, by its title
(the document is then its abstract alone) or by one sentence of its abstract (inverse cloze: the
document is the paper without that sentence), half of the titled papers each way, so that short and
long queries both count. Every other non-test paper is a distractor. On these queries:

1. the encoder: the trained one serves only if its dense nDCG@10 beats the base model's by more
   than `select_min_gain`; otherwise the base model serves (training that did not help is not shipped);
2. the fusion: the served encoder's dense ranking and BM25's, fused with the dense weight alpha that
   ranks the pseudo-queries' own documents highest (`fusion.choose_alpha`), or a fixed alpha / RRF.
"""

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from papersim.errors import PapersimError
from papersim.evaluation.metrics import ndcg_at_k, precision_at_k
from papersim.evaluation.sets import EvalSet, colisting_set
from papersim.retrieval.dense import dense_hits, dense_search
from papersim.retrieval.fusion import ALPHA_GRID, Fusion, choose_alpha, fuse_rankings
from papersim.retrieval.lexical import BM25, lexical_hits
from papersim.retrieval.passage import Hits, passage_text
from papersim.retrieval.similar import (Similar, drop_rows, duplicates, excluded_rows, lexical_neighbours,
                                        similar_hits)
from papersim.sampling import paper_rng, seeded_unit
from papersim.training.pairs import inverse_cloze

ENCODERS = ("trained", "base")
Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors


@dataclass(frozen=True)
class SimilarChoice:
    """What the train config leaves to choose for the similar task (TrainConfig.similar_choice())."""

    encoder: str  # auto | trained | base
    min_gain: float
    fusion: str  # convex | rrf
    alpha: float | str  # auto or a dense weight
    normalisation: str
    depth: int
    rrf_k: int
    terms: tuple[int, ...]  # term counts to choose among

    def template(self) -> Fusion:
        return Fusion(self.fusion, 0.5 if self.alpha == "auto" else float(self.alpha), self.normalisation,
                      self.rrf_k, self.depth)


@dataclass(frozen=True)
class PseudoQueries:
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    relevant: dict[str, str]  # query id -> the one doc id that answers it
    kinds: dict[str, int] = field(default_factory=dict)  # "title" / "sentence" -> number of queries


def pseudo_queries(papers: pd.DataFrame, query_papers: set[str], seed: int, max_queries: int,
                   max_docs: int) -> PseudoQueries:
    """Up to `max_queries` pseudo-queries from `query_papers`, over up to `max_docs` papers (all of them
    when fewer; otherwise the query papers plus a seeded sample of the rest)."""
    papers = papers.reset_index(drop=True)
    keyed = sorted(papers["paper_id"], key=lambda pid: seeded_unit(seed, pid))  # a stable, seeded order
    asking_set = set([pid for pid in keyed if pid in query_papers][:max_queries])
    others = [pid for pid in keyed if pid not in asking_set][:max(max_docs - len(asking_set), 0)]
    keep = asking_set | set(others)
    doc_ids, doc_texts, query_ids, query_texts, relevant = [], [], [], [], {}
    kinds: Counter = Counter()
    for pid, title, abstract in zip(papers["paper_id"], papers["title"], papers["abstract"]):
        if pid not in keep:
            continue
        text = passage_text(title, abstract)
        if pid in asking_set:
            query = None
            view = inverse_cloze(abstract, paper_rng(seed, pid))
            if title.strip() and (view is None or seeded_unit(seed + 1, pid) < 0.5):
                query, text, kind = title, abstract, "title"
            elif view is not None:
                query, text, kind = view[0], passage_text(title, view[1]), "sentence"
            if query is not None:
                query_ids.append(f"q:{pid}")
                query_texts.append(query)
                relevant[f"q:{pid}"] = pid
                kinds[kind] += 1
        doc_ids.append(pid)
        doc_texts.append(text)
    return PseudoQueries(doc_ids, doc_texts, query_ids, query_texts, relevant, dict(kinds))


@dataclass(frozen=True)
class Serving:
    """The candidate's served system: written next to the trained model, copied into the index."""

    encoder: str  # "trained" | "base"
    base_model: str  # the base encoder's folder ("" = the packaged all-MiniLM-L6-v2)
    fusion: Fusion
    reason: str
    evidence: dict = field(default_factory=dict)  # pseudo-query scores behind the choices
    similar: Similar | None = None  # how "papers similar to this one" is answered (None: chosen before it was)

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "base_model": self.base_model, "fusion": self.fusion.to_dict(),
                "reason": self.reason, "evidence": self.evidence,
                **({"similar": self.similar.to_dict()} if self.similar is not None else {})}

    @classmethod
    def from_dict(cls, values: Mapping) -> "Serving":
        if values.get("encoder") not in ENCODERS:
            raise PapersimError(f"serving choice names encoder {values.get('encoder')!r}: expected one of "
                                f"{', '.join(ENCODERS)} (rerun the train stage)")
        return cls(encoder=values["encoder"], base_model=values.get("base_model", ""),
                   fusion=Fusion.from_dict(values["fusion"]), reason=values.get("reason", ""),
                   evidence=dict(values.get("evidence", {})),
                   similar=Similar.from_dict(values["similar"]) if "similar" in values else None)

    def tags(self) -> dict[str, str]:
        """The MLflow tags every run and version that serves this choice carries."""
        return {"papersim.served_encoder": self.encoder, "papersim.serving_reason": self.reason,
                "papersim.fusion": self.fusion.describe(),
                **({"papersim.similar": self.similar.describe()} if self.similar is not None else {})}

    def encoder_folder(self, trained: str) -> str:
        """The served encoder's folder: `trained`, or the base model's ("" = packaged)."""
        return trained if self.encoder == "trained" else self.base_model

    def similar_folder(self, trained: str) -> str:
        """The folder of the encoder whose vectors answer "papers similar to this one"."""
        if self.similar is None:
            return self.encoder_folder(trained)
        return trained if self.similar.encoder == "trained" else self.base_model


def _mean_ndcg(rankings: Mapping[str, list], relevant: Mapping[str, str]) -> float:
    return float(np.mean([ndcg_at_k(rankings[q], {relevant[q]: 1}, 10) for q in relevant]))


def select_serving(pq: PseudoQueries, embed: Mapping[str, Embed], template: Fusion, alpha_auto: bool,
                   select_encoder: bool, min_gain: float, stemmer: str, base_model: str) -> Serving:
    """Choose the served encoder (of `embed`'s "trained" and "base") and the fusion on `pq`.

    `template` is the configured fusion (method, normalisation, depth; alpha when not `alpha_auto`).
    """
    if not pq.query_ids:
        return Serving("base" if select_encoder else "trained", base_model, template,
                       "no validation paper gave a pseudo-query: nothing to compare on; "
                       + ("the base model serves" if select_encoder else "select_encoder is off"),
                       {"pseudo_queries": 0})
    lexical = lexical_hits(BM25(pq.doc_ids, pq.doc_texts, stemmer), pq.query_ids, pq.query_texts, template.depth)
    dense, evidence = {}, {"pseudo_queries": len(pq.query_ids), "query_kinds": pq.kinds,
                           "bm25/ndcg@10": _mean_ndcg({q: h[0] for q, h in lexical.items()}, pq.relevant)}
    for name in ENCODERS:
        if name in embed:
            dense[name] = dense_hits(pq.doc_ids, embed[name](pq.doc_texts), pq.query_ids,
                                     embed[name](pq.query_texts), template.depth)
            evidence[f"{name}/ndcg@10"] = _mean_ndcg({q: h[0] for q, h in dense[name].items()}, pq.relevant)
    if not select_encoder or "base" not in dense:
        encoder, reason = "trained", "select_encoder is off: the trained encoder serves"
    else:
        gain = evidence["trained/ndcg@10"] - evidence["base/ndcg@10"]
        encoder = "trained" if gain > min_gain else "base"
        reason = (f"trained {evidence['trained/ndcg@10']:.4f} vs base {evidence['base/ndcg@10']:.4f} dense "
                  f"nDCG@10 on {len(pq.query_ids)} validation pseudo-queries ({gain:+.4f}; "
                  f"{'>' if encoder == 'trained' else '<='} min_gain {min_gain}): the {encoder} encoder serves")
    fusion = template
    if template.method == "convex" and alpha_auto:
        alpha, table = choose_alpha(lexical, dense[encoder], pq.relevant, template)
        fusion = Fusion(method="convex", alpha=alpha, normalisation=template.normalisation,
                        rrf_k=template.rrf_k, depth=template.depth)
        evidence["alpha_ndcg@10"] = {f"{a:g}": v for a, v in table.items()}
        reason += f"; fusion alpha {alpha:g} (best of {len(table)} on the same pseudo-queries)"
    evidence["served/ndcg@10"] = _mean_ndcg(fuse_rankings(lexical, dense[encoder], fusion), pq.relevant)
    return Serving(encoder, base_model, fusion, reason, evidence)


def _precision_at_10(hits: list[Hits], task: EvalSet) -> float:
    return float(np.mean([precision_at_k([task.doc_ids[r] for r in h[0]], task.qrels[q], 10)
                          for q, h in zip(task.query_ids, hits)]))


def _pick(table: Mapping, centre: float) -> float | int:
    """The setting with the best score; ties go to the one nearest `centre` (the least committed), then the smaller."""
    best = max(table.values())
    return min((k for k, v in table.items() if v >= best - 1e-12), key=lambda k: (abs(k - centre), k))


def select_similar(task: EvalSet | None, embed: Mapping[str, Embed], choice: SimilarChoice, stemmer: str,
                   fallback_encoder: str) -> Similar:
    """Choose how papers are answered on `task` (validation papers asking for their co-listed papers,
    sets.colisting_set), by mean precision@10, one setting at a time through the served implementation:
    the encoder (trained only if it beats base's dense neighbours by more than `min_gain`), the number of
    telling terms (more-like-this alone), then the fusion weight of the two. Nothing to choose on (no
    validation paper has a co-listed paper): the configured or middle settings and `fallback_encoder`."""
    template = choice.template()
    if task is None:
        encoder = fallback_encoder if choice.encoder == "auto" else choice.encoder
        return Similar(encoder, template, choice.terms[len(choice.terms) // 2],
                       "no validation paper has a co-listed paper to find: nothing to choose on; "
                       f"the {encoder} encoder, the middle term count and {template.describe()}",
                       {"papers": 0})
    row_of = {pid: row for row, pid in enumerate(task.doc_ids)}
    rows = [row_of[q] for q in task.query_ids]
    exclude = excluded_rows(rows, duplicates(task.doc_hashes or task.doc_ids))
    depth = template.depth
    evidence: dict = {"papers": len(rows), **task.facts}
    dense = {}
    for name in ENCODERS:
        if name in embed:
            vectors = embed[name](task.doc_texts)  # (n_docs, dim)
            found, scores = dense_search(vectors, vectors[rows], depth + max(map(len, exclude)))
            dense[name] = [drop_rows((f.tolist(), s.tolist()), e, depth) for f, s, e in zip(found, scores, exclude)]
            evidence[f"{name}/precision@10"] = _precision_at_10(dense[name], task)
    if choice.encoder != "auto" or "base" not in dense:
        encoder = choice.encoder if choice.encoder != "auto" else "trained"
        reason = f"the {encoder} encoder (configured)"
    else:
        gain = evidence["trained/precision@10"] - evidence["base/precision@10"]
        encoder = "trained" if gain > choice.min_gain else "base"
        reason = (f"trained {evidence['trained/precision@10']:.4f} vs base {evidence['base/precision@10']:.4f} "
                  f"dense precision@10 on {len(rows)} validation papers ({gain:+.4f}; "
                  f"{'>' if encoder == 'trained' else '<='} min_gain {choice.min_gain}): the {encoder} encoder")
    bm25 = BM25(task.doc_ids, task.doc_texts, stemmer)
    lexical = {t: lexical_neighbours(bm25, task.query_texts, t, depth, exclude) for t in choice.terms}
    by_terms = {t: _precision_at_10(lexical[t], task) for t in choice.terms}
    terms = _pick(by_terms, choice.terms[len(choice.terms) // 2])
    evidence["mlt_precision@10_by_terms"] = {str(t): v for t, v in by_terms.items()}
    fusion = template
    if template.method == "convex" and choice.alpha == "auto":
        by_alpha = {}
        for alpha in ALPHA_GRID:
            candidate = Fusion("convex", alpha, template.normalisation, template.rrf_k, depth)
            by_alpha[alpha] = _precision_at_10(similar_hits(lexical[terms], dense[encoder], candidate), task)
        fusion = Fusion("convex", _pick(by_alpha, 0.5), template.normalisation, template.rrf_k, depth)
        evidence["served_precision@10_by_alpha"] = {f"{a:g}": v for a, v in by_alpha.items()}
        rrf = Fusion("rrf", 0.5, template.normalisation, template.rrf_k, depth)
        evidence["served_precision@10_rrf"] = _precision_at_10(similar_hits(lexical[terms], dense[encoder], rrf), task)
        if evidence["served_precision@10_rrf"] > by_alpha[fusion.alpha]:  # only when strictly better
            fusion = rrf
    evidence["served/precision@10"] = _precision_at_10(similar_hits(lexical[terms], dense[encoder], fusion), task)
    reason += f"; {terms} telling terms (best of {len(by_terms)}); {fusion.describe()}"
    return Similar(encoder, fusion, terms, reason, evidence)


def choose_serving(papers: pd.DataFrame, split: pd.DataFrame, embed: Mapping[str, Embed], cfg) -> Serving:
    """The train stage's choice: pseudo-queries from the val split over non-test papers, then
    `select_serving` with the train config's settings (cfg: papersim.training.train.TrainConfig); and the
    similar task's, on the val papers asking for their co-listed non-test papers (`select_similar`)."""
    test = set(split.loc[split["split"] == "test", "paper_id"])
    val = set(split.loc[split["split"] == "val", "paper_id"])
    pq = pseudo_queries(papers[~papers["paper_id"].isin(test)], val, cfg.seed, cfg.selection_queries,
                        cfg.selection_docs)
    serving = select_serving(pq, embed, cfg.serving_fusion(), cfg.fusion_alpha == "auto", cfg.select_encoder,
                             cfg.select_min_gain, cfg.stemmer, cfg.base_model)
    pool = set(papers["paper_id"]) - test
    task = colisting_set(papers, val, pool, cfg.max_group_size, "similar_val", cfg.similar_queries,
                         cfg.selection_docs, cfg.seed)
    similar = select_similar(task, embed, cfg.similar_choice(), cfg.stemmer, serving.encoder)
    return replace(serving, similar=similar)


def read_serving(path: Path) -> Serving:
    """models/serving.json as the train stage wrote it; a missing file says which stage to run."""
    if not Path(path).is_file():
        raise PapersimError(f"{path}: no serving choice; run the train stage first (`dvc repro train`)")
    return Serving.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

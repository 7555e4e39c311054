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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from papersim.errors import PapersimError
from papersim.evaluation.metrics import ndcg_at_k
from papersim.retrieval.dense import dense_hits
from papersim.retrieval.fusion import Fusion, choose_alpha, fuse_rankings
from papersim.retrieval.lexical import BM25, lexical_hits
from papersim.retrieval.passage import passage_text
from papersim.sampling import paper_rng, seeded_unit
from papersim.training.pairs import inverse_cloze

ENCODERS = ("trained", "base")
Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors


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

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "base_model": self.base_model, "fusion": self.fusion.to_dict(),
                "reason": self.reason, "evidence": self.evidence}

    @classmethod
    def from_dict(cls, values: Mapping) -> "Serving":
        if values.get("encoder") not in ENCODERS:
            raise PapersimError(f"serving choice names encoder {values.get('encoder')!r}: expected one of "
                                f"{', '.join(ENCODERS)} (rerun the train stage)")
        return cls(encoder=values["encoder"], base_model=values.get("base_model", ""),
                   fusion=Fusion.from_dict(values["fusion"]), reason=values.get("reason", ""),
                   evidence=dict(values.get("evidence", {})))

    def tags(self) -> dict[str, str]:
        """The MLflow tags every run and version that serves this choice carries."""
        return {"papersim.served_encoder": self.encoder, "papersim.serving_reason": self.reason,
                "papersim.fusion": self.fusion.describe()}

    def encoder_folder(self, trained: str) -> str:
        """The served encoder's folder: `trained`, or the base model's ("" = packaged)."""
        return trained if self.encoder == "trained" else self.base_model


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


def choose_serving(papers: pd.DataFrame, split: pd.DataFrame, embed: Mapping[str, Embed], cfg) -> Serving:
    """The train stage's choice: pseudo-queries from the val split over non-test papers, then
    `select_serving` with the train config's settings (cfg: papersim.training.train.TrainConfig)."""
    test = set(split.loc[split["split"] == "test", "paper_id"])
    val = set(split.loc[split["split"] == "val", "paper_id"])
    pq = pseudo_queries(papers[~papers["paper_id"].isin(test)], val, cfg.seed, cfg.selection_queries,
                        cfg.selection_docs)
    return select_serving(pq, embed, cfg.serving_fusion(), cfg.fusion_alpha == "auto", cfg.select_encoder,
                          cfg.select_min_gain, cfg.stemmer, cfg.base_model)


def read_serving(path: Path) -> Serving:
    """models/serving.json as the train stage wrote it; a missing file says which stage to run."""
    if not Path(path).is_file():
        raise PapersimError(f"{path}: no serving choice; run the train stage first (`dvc repro train`)")
    return Serving.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

"""What a candidate serves, chosen after training on evidence that training did not produce.

A model always wins the task it was just trained on: trained on one sentence -> the rest of its
abstract, it wins sentence pseudo-queries even when real questions find it far worse than the base
model. Nor does holding one pseudo-query family out help: on Cranfield's abstracts alone, training on
title -> abstract won the *sentence* pseudo-queries it never saw (+0.088 nDCG@10, 95% CI +0.046 to
+0.131) while Cranfield's real questions found it 0.075 worse than the base model. A paper's own
text asking for itself is one task whichever part asks (README "Quality"). So the evidence is, in
order of strength:

1. `judged`: the user's own judged queries (`selection_sets`, BEIR folders that evaluate never scores);
2. `pseudo-queries`: validation papers asking for themselves by their title or one sentence (inverse
   cloze), only when the self-retrieval pairs (`title_abstract`, `self_supervised`) are at most
   `selection_max_trained_share` of the training pairs (a candidate trained on listings or labelled
   pairs alone);
3. `none`: the base model serves search and the fusion keeps its documented default; the reason says so.

The trained encoder serves only if its dense nDCG@10 gain over the base model's is above `select_min_gain`
beyond noise (`verdict` of the gain minus select_min_gain: a paired 95% bootstrap interval above 0 and
p < 0.05). The fusion weight (`fusion_alpha: auto`) leaves the default (0.5) only on judged
queries, when the best weight, picked on half of them, beats 0.5 on the other half beyond noise
(`choose_weight`): pseudo-queries are never evidence for the weight, since they favour whichever system
shares their words (README "Fusion").

The similar task's choices (papersim.training.similar_choice) follow the same rule on the validation
listings, held out of training whole, their papers asking for each other, resampled by listing; with
none, the base encoder serves (the one training cannot have harmed).
"""

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from papersim.evaluation.metrics import ndcg_at_k
from papersim.evaluation.sets import EvalSet, listing_sets, load_beir_set
from papersim.evaluation.significance import paired_difference, verdict
from papersim.progress import track, working_on
from papersim.retrieval.choice import Serving
from papersim.retrieval.dense import dense_hits
from papersim.retrieval.fusion import ALPHA_GRID, Fusion, fuse_rankings
from papersim.retrieval.lexical import BM25, lexical_hits
from papersim.retrieval.passage import Hits, passage_text
from papersim.retrieval.similar import ENCODERS
from papersim.sampling import paper_rng, seeded_unit
from papersim.training.choice_rules import choose_weight, interval
from papersim.training.pairs import inverse_cloze
from papersim.training.similar_choice import PaperEmbed, select_similar

Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors


FAMILIES = ("title", "sentence")  # pseudo-query families: a title asks for its abstract; a sentence for the rest
SELF_RETRIEVAL = ("title_abstract", "self_supervised")  # pair sources in which a paper's own text asks for itself


def independent_families(train_pairs: Mapping[str, int] | None, max_share: float) -> tuple[str, ...]:
    """The pseudo-query families that are evidence for a model trained on `train_pairs` (pair source ->
    count, as mine_pairs reports them): all of them when self-retrieval pairs are at most `max_share` of
    the pairs, none otherwise (training on one family wins the other too). Unknown pairs (None): none."""
    if train_pairs is None:
        return ()
    total = sum(n for source, n in train_pairs.items() if source != "total")
    taught = sum(train_pairs.get(source, 0) for source in SELF_RETRIEVAL)
    return FAMILIES if taught <= max_share * total else ()


@dataclass(frozen=True)
class PseudoQueries:
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    relevant: dict[str, str]  # query id -> the one doc id that answers it
    kinds: dict[str, int] = field(default_factory=dict)  # "title" / "sentence" -> number of queries

    def to_set(self) -> EvalSet:
        """The pseudo-queries as a judged set (each query's own paper relevant), named by its kinds."""
        return EvalSet(name="pseudo-queries", doc_ids=self.doc_ids, doc_texts=self.doc_texts,
                       query_ids=self.query_ids, query_texts=self.query_texts,
                       qrels={q: {d: 1} for q, d in self.relevant.items()}, content_hash="",
                       facts=dict(self.kinds))


def pseudo_queries(papers: pd.DataFrame, query_papers: set[str], seed: int, max_queries: int,
                   max_docs: int, families: Sequence[str] = FAMILIES) -> PseudoQueries:
    """Up to `max_queries` pseudo-queries of `families` from `query_papers`, over up to `max_docs` papers
    (all of them when fewer; otherwise the query papers plus a seeded sample of the rest). A titled paper
    asks by its title or a sentence (half each way when both families are allowed), an untitled one by a
    sentence; a paper no allowed family fits is a distractor only."""
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
            view = inverse_cloze(abstract, paper_rng(seed, pid)) if "sentence" in families else None
            if "title" in families and title.strip() and (view is None or seeded_unit(seed + 1, pid) < 0.5):
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


def _ndcg(rankings: Mapping[str, list], qrels: Mapping[str, Mapping[str, int]], queries: Sequence[str]) -> np.ndarray:
    """Per-query nDCG@10 (graded), in the order of `queries`. (n_queries,)"""
    return np.array([ndcg_at_k(rankings[q], qrels[q], 10) for q in queries])


def select_serving(sets: Sequence[EvalSet], source: str, embed: Mapping[str, Embed], template: Fusion,
                   alpha_auto: bool, select_encoder: bool, min_gain: float, stemmer: str, base_model: str) -> Serving:
    """Choose the served encoder (of `embed`'s "trained" and "base") and the fusion weight on `sets`.

    `source` says what the sets are: "judged" (the user's own judged queries: evidence for the encoder and
    the weight), "pseudo-queries" (validation papers asking for themselves, `PseudoQueries.to_set`, used only
    when training did not teach them: evidence for the encoder, never for the weight: they favour whichever
    system shares their words) or "none". `template` is the configured fusion (alpha when not `alpha_auto`).
    """
    sets = [s for s in sets if s.query_ids]
    evidence: dict = {"evidence": source if sets else "none", "sets": {s.name: len(s.query_ids) for s in sets}}
    if not sets:
        why = ("no evidence that training did not produce (the pseudo-queries are what the self-retrieval "
               "training pairs taught)" if source == "none" else f"no query to choose on in the {source}")
        return Serving("base" if select_encoder else "trained", base_model, template,
                       f"{why}: the " + ("base model serves" if select_encoder else "trained model serves "
                                         "(select_encoder is off)") + "; the fusion keeps its configured default",
                       evidence)
    queries: list[str] = []
    lexical: dict[str, Hits] = {}
    dense: dict[str, dict[str, Hits]] = {name: {} for name in ENCODERS if name in embed}
    qrels: dict[str, dict[str, int]] = {}
    for task in sets:  # query ids prefixed by their set: several sets are pooled query by query
        ids = [f"{task.name}/{q}" for q in task.query_ids]
        queries += ids
        qrels.update({i: task.qrels[q] for i, q in zip(ids, task.query_ids)})
        with working_on(f"choosing the served encoder on {task.name}"):
            found = lexical_hits(BM25(task.doc_ids, task.doc_texts, stemmer), task.query_ids, task.query_texts,
                                 template.depth)
            lexical.update({i: found[q] for i, q in zip(ids, task.query_ids) if q in found})
            for name in dense:
                with working_on(f"{name} encoder, documents"):
                    docs = embed[name](task.doc_texts)  # (n_docs, dim)
                with working_on(f"{name} encoder, queries"):
                    hits = dense_hits(task.doc_ids, docs, task.query_ids, embed[name](task.query_texts),
                                      template.depth)
                dense[name].update({i: hits[q] for i, q in zip(ids, task.query_ids)})
    evidence["bm25/ndcg@10"] = float(np.mean(_ndcg({q: lexical.get(q, ([], []))[0] for q in queries}, qrels,
                                                    queries)))
    per_query = {name: _ndcg({q: h[0] for q, h in hits.items()}, qrels, queries) for name, hits in dense.items()}
    evidence.update({f"{name}/ndcg@10": float(np.mean(v)) for name, v in per_query.items()})
    on = f"{len(queries)} {source} ({', '.join(f'{s.name} {len(s.query_ids)}' for s in sets)})"
    if not select_encoder or "base" not in dense:
        encoder, reason = "trained", "select_encoder is off: the trained encoder serves"
    else:
        gain = paired_difference(per_query["trained"], per_query["base"])
        evidence["trained_minus_base"] = interval(gain)
        # the gain over min_gain, tested as any difference is (min_gain 0: the gain itself)
        over = paired_difference(per_query["trained"] - min_gain, per_query["base"]) if min_gain else gain
        encoder = "trained" if verdict(over) == "better" else "base"
        reason = (f"trained {evidence['trained/ndcg@10']:.4f} vs base {evidence['base/ndcg@10']:.4f} dense nDCG@10 "
                  f"on {on}: {gain.mean:+.4f} (95% CI {gain.low:+.4f} to {gain.high:+.4f}, p {over.p_value:.4f}: "
                  f"{'above' if encoder == 'trained' else 'not above'} min_gain {min_gain} beyond noise): "
                  f"the {encoder} encoder serves")
    fusion = template
    if template.method == "convex" and alpha_auto and source == "judged":
        by_alpha = {a: _ndcg(fuse_rankings(lexical, dense[encoder], replace(template, alpha=a)), qrels, queries)
                    for a in track(ALPHA_GRID, "choosing the fusion weight", unit="weights")}
        alpha, evidence["alpha"] = choose_weight(by_alpha, template.alpha)
        fusion = replace(template, alpha=alpha)
        reason += (f"; fusion alpha {alpha:g} (" + ("the default: no weight beat it beyond noise" if alpha ==
                   template.alpha else "beat the default beyond noise") + f" on the {source} queries)")
    elif template.method == "convex" and alpha_auto:
        reason += f"; fusion alpha {template.alpha:g}, the default (pseudo-queries are no evidence for the weight)"
    evidence["served/ndcg@10"] = float(np.mean(_ndcg(fuse_rankings(lexical, dense[encoder], fusion), qrels, queries)))
    return Serving(encoder, base_model, fusion, reason, evidence)


def choose_serving(papers: pd.DataFrame, split: pd.DataFrame, embed: Mapping[str, Embed], cfg,
                   train_pairs: Mapping[str, int] | None = None, paper_embed: PaperEmbed | None = None,
                   similar_encoders: Sequence[str] | None = None) -> Serving:
    """The train stage's choice (cfg: papersim.training.train.TrainConfig), on the strongest evidence there
    is: the user's own judged sets (`selection_sets`); else validation pseudo-queries over non-test papers
    when `train_pairs` (pair source -> count) did not teach them (`independent_families`); else none. Then
    the similar task's, on the validation listings' papers asking for each other (`select_similar`), its
    paper vectors from `paper_embed` (encoder name, view) -> embedder (None: `embed`'s, whatever the view),
    among `similar_encoders` (None: `embed`'s; merged ones are named by `merge_candidate`)."""
    test = set(split.loc[split["split"] == "test", "paper_id"])
    val = set(split.loc[split["split"] == "val", "paper_id"])
    families = independent_families(train_pairs, cfg.selection_max_trained_share)
    if cfg.selection_sets:
        sets, source = [load_beir_set(Path(folder)) for folder in cfg.selection_sets], "judged"
    elif families:
        pq = pseudo_queries(papers[~papers["paper_id"].isin(test)], val, cfg.seed, cfg.selection_queries,
                            cfg.selection_docs, families)
        sets, source = [pq.to_set()], "pseudo-queries"
    else:
        sets, source = [], "none"
    serving = select_serving(sets, source, embed, cfg.serving_fusion(), cfg.fusion_alpha == "auto",
                             cfg.select_encoder, cfg.select_min_gain, cfg.stemmer, cfg.base_model)
    serving.evidence.update({"train_pairs": dict(train_pairs or {}), "independent_families": list(families),
                             **({"selection_sets": list(cfg.selection_sets)} if cfg.selection_sets else {})})
    pool = set(papers["paper_id"]) - test  # validation listings held out whole: training never saw them
    choosing = split[split["choice"]] if "choice" in split else split  # validation papers in no pair
    tasks = listing_sets(papers, choosing, "val", cfg.max_group_size, pool, cfg.similar_queries,
                         cfg.selection_docs, cfg.seed, prefix="similar_val")
    paper_embed = paper_embed or (lambda name, view: embed[name])
    return replace(serving, similar=select_similar(tasks.get("similar_val_unseen"), paper_embed,
                                                   list(similar_encoders or embed),
                                                   cfg.similar_choice(), cfg.stemmer, tasks.get("similar_val")))

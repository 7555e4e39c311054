"""How "papers similar to this one" is answered, chosen on listings training never saw.

The validation listings are held out of training whole (mine_pairs' group split); their papers ask for
each other over the non-test papers, and scores are resampled by listing (a listing's papers share their
relevant set). One setting at a time, through the served implementation (papersim.retrieval.similar):
1. the encoder: trained only if its dense neighbours beat the base model's by more than `min_gain` beyond
   noise (`verdict` of the gain minus min_gain: a 95% interval by listing above 0 and p < 0.05), read at
   the default paper view;
2. the paper view (tokens, windows) and 3. the lexical query (the whole paper, or its telling terms):
   the first listed is the default, left only for a setting that wins on half the listings and beats it on
   the other half beyond noise (`choose_setting`);
4. the fusion weight, by the same rule (`choose_weight`).
Each choice is made on at least `min_listings` listings: with fewer, even a setting better on every paper
cannot reach p < 0.05 by listing, and the default serves. With no validation listing there is nothing to
choose on: the base encoder (the one training cannot have harmed) and the defaults serve; the reason says so.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from papersim.encoders.windows import PaperView
from papersim.evaluation.metrics import precision_at_k
from papersim.evaluation.sets import EvalSet, listing_clusters
from papersim.evaluation.significance import clustered_difference, verdict
from papersim.progress import Progress, working_on
from papersim.retrieval.dense import dense_search
from papersim.retrieval.fusion import ALPHA_GRID, Fusion
from papersim.retrieval.lexical import BM25
from papersim.retrieval.passage import Hits
from papersim.retrieval.similar import (ENCODERS, Similar, drop_rows, duplicates, excluded_rows, lexical_label,
                                        lexical_neighbours, paper_neighbours, similar_hits)
from papersim.training.choice_rules import choose_setting, choose_weight, interval

Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors
PaperEmbed = Callable[[str, PaperView], Embed]  # (encoder name, paper view) -> its embedder


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
    views: tuple[PaperView, ...]  # paper views to choose among, the default first
    lexical: tuple[tuple[str, int], ...]  # (lexical, terms) to choose among, the default first
    min_listings: int  # listings a choice is made on, at least

    def template(self) -> Fusion:
        return Fusion(self.fusion, 0.5 if self.alpha == "auto" else float(self.alpha), self.normalisation,
                      self.rrf_k, self.depth)


def too_few(listings: int, least: int) -> str:
    """Why a choice on `listings` listings keeps its default ("" when they are enough)."""
    plural = "listing" if listings == 1 else "listings"
    return f"only {listings} {plural}, fewer than similar_min_listings {least}" if listings < least else ""


def _precision_at_10(hits: list[Hits], task: EvalSet) -> np.ndarray:
    """Per-paper precision@10 of the listing-mates, in the order of task.query_ids. (n_papers,)"""
    return np.array([precision_at_k([task.doc_ids[r] for r in h[0]], task.qrels[q], 10)
                     for q, h in zip(task.query_ids, hits)])


def select_similar(task: EvalSet | None, paper_embed: PaperEmbed, encoders: Sequence[str], choice: SimilarChoice,
                   stemmer: str) -> Similar:
    """Choose how papers are answered on `task` (the papers of validation listings held out of training,
    asking for each other: sets.listing_sets), by precision@10; `encoders` names the encoders
    `paper_embed` can give ("trained", "base"). Nothing to choose on (None): the base encoder and the defaults."""
    template, view, (lexical, terms) = choice.template(), choice.views[0], choice.lexical[0]
    if task is None:
        encoder = "base" if choice.encoder == "auto" else choice.encoder
        return Similar(encoder, template, terms, "no validation listing held out of training: nothing to choose "
                       f"on; the {encoder} encoder and the defaults", {"papers": 0, "evidence": "none"},
                       lexical, view)
    row_of = {pid: row for row, pid in enumerate(task.doc_ids)}
    rows = [row_of[q] for q in task.query_ids]
    exclude = excluded_rows(rows, duplicates(task.doc_hashes or task.doc_ids))
    depth = template.depth
    clusters = listing_clusters(task, task.query_ids)  # papers of one listing move together
    evidence: dict = {"evidence": "validation listings held out of training, their papers asking for each other",
                      "papers": len(rows), **task.facts}
    weights = template.method == "convex" and choice.alpha == "auto"
    settings = Progress("choosing how similar papers are answered",
                        total=len([n for n in ENCODERS if n in encoders]) + len(choice.views) - 1
                        + len(choice.lexical) + (len(ALPHA_GRID) if weights else 0), unit="settings tried", eta=False)

    def neighbours(name: str, paper_view: PaperView) -> list[Hits]:
        with working_on(f"similar papers, {name} encoder at {paper_view.describe()}"):
            vectors = paper_embed(name, paper_view)(task.doc_texts)  # (n_docs, dim)
            found, scores = dense_search(vectors, vectors[rows], depth + max(map(len, exclude)))
        settings.advance()
        return [drop_rows((f.tolist(), s.tolist()), e, depth) for f, s, e in zip(found, scores, exclude)]

    dense = {name: neighbours(name, view) for name in ENCODERS if name in encoders}
    per_paper = {name: _precision_at_10(hits, task) for name, hits in dense.items()}
    evidence.update({f"{name}/precision@10": float(np.mean(v)) for name, v in per_paper.items()})
    if choice.encoder != "auto" or "base" not in dense:
        encoder = choice.encoder if choice.encoder != "auto" else "trained"
        reason = f"the {encoder} encoder (configured)"
    else:
        gain = clustered_difference(per_paper["trained"], per_paper["base"], clusters)
        evidence["trained_minus_base"] = interval(gain)
        over = (clustered_difference(per_paper["trained"] - choice.min_gain, per_paper["base"], clusters)
                if choice.min_gain else gain)  # the gain over min_gain, tested as any difference is
        listings = len(set(clusters))
        short = too_few(listings, choice.min_listings)
        encoder = "trained" if not short and verdict(over) == "better" else "base"
        reason = (f"trained {evidence['trained/precision@10']:.4f} vs base {evidence['base/precision@10']:.4f} "
                  f"dense precision@10 on {len(rows)} validation papers of {listings} listings: "
                  f"{gain.mean:+.4f} (95% CI by listing {gain.low:+.4f} to {gain.high:+.4f}, p {over.p_value:.4f}: "
                  + (short if short else f"{'above' if encoder == 'trained' else 'not above'} min_gain "
                                         f"{choice.min_gain} beyond noise") + f"): the {encoder} encoder")
    by_view = {view: dense[encoder], **{v: neighbours(encoder, v) for v in choice.views[1:]}}
    view, evidence["view"] = choose_setting({v: _precision_at_10(h, task) for v, h in by_view.items()}, view,
                                            clusters, label=PaperView.label, min_clusters=choice.min_listings)
    with working_on("similar papers"):
        bm25 = BM25(task.doc_ids, task.doc_texts, stemmer)

    def bm25_neighbours(kind: str, n: int) -> list[Hits]:
        with working_on(f"similar papers, bm25 of {lexical_label(kind, n)}"):
            found = (paper_neighbours(bm25, task.query_texts, depth, exclude) if kind == "paper" else
                     lexical_neighbours(bm25, task.query_texts, n, depth, exclude))
        settings.advance()
        return found

    by_lexical = {(kind, n): bm25_neighbours(kind, n) for kind, n in choice.lexical}
    (lexical, terms), evidence["lexical"] = choose_setting(
        {k: _precision_at_10(h, task) for k, h in by_lexical.items()}, (lexical, terms), clusters,
        label=lambda k: lexical_label(*k), min_clusters=choice.min_listings)
    fusion = template
    if weights:
        by_alpha = {}
        for a in ALPHA_GRID:
            by_alpha[a] = _precision_at_10(similar_hits(by_lexical[lexical, terms], by_view[view],
                                                        replace(template, alpha=a)), task)
            settings.advance()
        alpha, evidence["alpha"] = choose_weight(by_alpha, template.alpha, clusters, choice.min_listings)
        fusion = replace(template, alpha=alpha)
    settings.done()
    served = _precision_at_10(similar_hits(by_lexical[lexical, terms], by_view[view], fusion), task)
    evidence["served/precision@10"] = float(np.mean(served))
    moved = [what for what, chosen, default in (("paper view", view, choice.views[0]),
                                                 ("lexical query", (lexical, terms), choice.lexical[0]),
                                                 ("weight", fusion.alpha, template.alpha)) if chosen != default]
    short = too_few(evidence["view"]["other_half_listings"], choice.min_listings)  # each setting's other half
    reason += (f"; paper at {view.describe()}, bm25 of {lexical_label(lexical, terms)}, {fusion.describe()} ("
               + (f"{', '.join(moved)} beat the default beyond noise" if moved else
                  f"the defaults: {short} to confirm a setting on" if short else
                  "the defaults: nothing beat them beyond noise") + ")")
    return Similar(encoder, fusion, terms, reason, evidence, lexical, view)

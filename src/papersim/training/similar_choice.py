"""How "papers similar to this one" is answered, chosen on listings training never saw.

The validation listings are held out of training whole (mine_pairs' group split); their papers ask for
each other over the non-test papers, and scores are resampled by listing (a listing's papers share their
relevant set). No validation pair of these papers drives early stopping or the best checkpoint (mine_pairs'
`choice` papers): the choice is made on papers nothing else saw. One setting at a time, through the served implementation (papersim.retrieval.similar):
1. the encoder, among base, trained and merges of the two ((1 - a) x base + a x trained, WiSE-FT), by the
   served answer at the default settings (`choose_encoder`): a trained or merged encoder only if it beats
   base on validation papers of known listings (listing-mates trained on) beyond noise and by more than
   `min_gain`, and does not lose on the unseen listings beyond noise nor by more than `max_unseen_loss`
   (a site's new paper mostly lands in a listing it has; sometimes it starts one);
2. the paper view (tokens, windows) and 3. the lexical query (the whole paper, or its telling terms):
   the first listed is the default, left only for a setting that wins on half the listings and beats it on
   the other half beyond noise (`choose_setting`);
4. the fusion weight, by the same rule (`choose_weight`).
Each choice is made on at least `min_listings` listings: with fewer, even a setting better on every paper
cannot reach p < 0.05 by listing, and the default serves. With no validation listing there is nothing to
choose on: the base encoder (the one training cannot have harmed) and the defaults serve; the reason says so.
"""

from collections.abc import Callable, Mapping, Sequence
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
from papersim.retrieval.similar import (Similar, drop_rows, duplicates, encoder_label, excluded_rows, lexical_label,
                                        lexical_neighbours, merge_of, paper_neighbours, similar_hits)
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
    max_unseen_loss: float = 0.005  # how far below base on unseen listings a chosen encoder may be, on average

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


def _served(lexical: list[Hits], dense: list[Hits], fusion: Fusion, task: EvalSet) -> np.ndarray:
    return _precision_at_10(similar_hits(lexical, dense, fusion), task)


def choose_encoder(candidates: Sequence[str], scores: Mapping[str, Mapping[str, np.ndarray]],
                   clusters: Mapping[str, list[str]], choice: SimilarChoice) -> tuple[str, str, dict]:
    """Item by item, the rule the similar task's encoder obeys (scores: block -> encoder -> per-paper served
    precision@10; blocks "known" (validation papers of listings training saw) and "unseen" (validation
    listings held out whole); `candidates` the trained and merged encoders, "base" the default):

    - a candidate qualifies when it is better than base on the known block beyond noise, by more than
      `min_gain` (`verdict` at p < 0.05 / len(candidates): trying several is several chances), and on the
      unseen block neither worse beyond noise nor more than `max_unseen_loss` below base on average;
    - each block needs `min_listings` listings, and as many as a p below that level needs (c listings give
      none below 2 / 2^c: 7 for two candidates); fewer: nothing qualifies, the reason says so;
    - the qualifying candidate with the largest known gain serves (ties: the nearer base); none: base.

    Without a known block (an old split, or no paper of a known listing in validation) the unseen block
    decides alone: better there beyond noise. Returns (encoder name, reason, evidence)."""
    level = 0.05 / max(len(candidates), 1)
    blocks = [b for b in ("known", "unseen") if b in scores]
    listings = {b: len(set(clusters[b])) for b in blocks}
    # c listings give no sign-flip p below 2 / 2^c: a block on which no gain (or loss) could show is no evidence
    reachable = int(np.floor(np.log2(2 / level))) + 1
    short = "; ".join(f"{b}: {too_few(n, choice.min_listings) or f'only {n} listings, fewer than the {reachable} on which p < {level:.4g} can show'}"
                      for b, n in listings.items() if n < max(choice.min_listings, reachable))
    evidence: dict = {"rule": f"better on known listings at p < {level:.4g}, unseen not worse beyond noise nor "
                              f"below base by more than {choice.max_unseen_loss}" if "known" in scores else
                              f"better on unseen listings at p < {level:.4g}",
                      "listings": listings, "candidates": {}}
    qualified = {}
    for name in candidates:
        facts: dict = {}
        for block in blocks:
            gain = clustered_difference(scores[block][name], scores[block]["base"], clusters[block])
            facts[f"{block}_minus_base"] = interval(gain)
            if block == blocks[0]:  # the block that must show a gain: tested against min_gain
                over = (clustered_difference(scores[block][name] - choice.min_gain, scores[block]["base"],
                                             clusters[block]) if choice.min_gain else gain)
                facts["gain_p"] = round(over.p_value, 4)
                facts["gains"] = round(over.low, 4) > 0 and over.p_value < level
            else:
                facts["holds"] = verdict(gain) != "worse" and gain.mean >= -choice.max_unseen_loss
        facts["qualifies"] = not short and facts["gains"] and facts.get("holds", True)
        evidence["candidates"][name] = facts
        if facts["qualifies"]:
            qualified[name] = facts[f"{blocks[0]}_minus_base"]["mean"]
    if qualified:
        best = max(qualified.values())
        encoder = min((n for n, g in qualified.items() if g >= best - 1e-12),
                      key=lambda n: merge_of(n)[1] if merge_of(n)[1] is not None else 1.0)
    else:
        encoder = "base"

    def says(name: str) -> str:
        facts = evidence["candidates"][name]
        return f"{name} " + ", ".join(f"{b} {facts[f'{b}_minus_base']['mean']:+.4f} (95% CI by listing "
                                      f"{facts[f'{b}_minus_base']['ci95'][0]:+.4f} to "
                                      f"{facts[f'{b}_minus_base']['ci95'][1]:+.4f})" for b in blocks) \
            + f", p {facts['gain_p']:.4f}"

    counts = ", ".join(f"{n} {b} listings" for b, n in listings.items())
    if short:
        outcome = f"{short}: the base encoder"
    elif qualified:
        outcome = f"{says(encoder)}: the {encoder_label(*merge_of(encoder))}"
    else:
        outcome = "none qualifies (" + "; ".join(says(n) for n in candidates) + "): the base encoder"
    reason = (f"served precision@10 minus base's on validation papers ({counts}; {evidence['rule']}): {outcome}")
    return encoder, reason, evidence


def select_similar(task: EvalSet | None, paper_embed: PaperEmbed, encoders: Sequence[str], choice: SimilarChoice,
                   stemmer: str, known: EvalSet | None = None) -> Similar:
    """Choose how papers are answered, by precision@10: `task` holds the papers of validation listings held
    out of training asking for each other (sets.listing_sets' unseen block), `known` the validation papers
    of listings training saw asking for their co-listed papers. `encoders` names the encoders `paper_embed`
    can give ("base", "trained", "merged_A": papersim.retrieval.similar.merge_candidate). The encoder is
    chosen on both blocks (`choose_encoder`); the paper view, the lexical query and the weight on `task`.
    Nothing to choose on (None): the base encoder and the defaults."""
    template, view, (lexical, terms) = choice.template(), choice.views[0], choice.lexical[0]
    if task is None:
        encoder = "base" if choice.encoder == "auto" else choice.encoder
        return Similar(encoder, template, terms, "no validation listing held out of training: nothing to choose "
                       f"on; the {encoder} encoder and the defaults", {"papers": 0, "evidence": "none"},
                       lexical, view)
    blocks = {"unseen": task, **({"known": known} if known is not None and known.query_ids else {})}
    row_of = {b: {pid: r for r, pid in enumerate(t.doc_ids)} for b, t in blocks.items()}
    rows = {b: [row_of[b][q] for q in t.query_ids] for b, t in blocks.items()}
    exclude = {b: excluded_rows(rows[b], duplicates(t.doc_hashes or t.doc_ids)) for b, t in blocks.items()}
    depth = template.depth
    clusters = {b: listing_clusters(t, t.query_ids) for b, t in blocks.items()}  # a listing's papers move together
    evidence: dict = {"evidence": "validation listings held out of training, their papers asking for each other",
                      "papers": len(rows["unseen"]), **task.facts,
                      **({"known_papers": len(rows["known"])} if "known" in blocks else {})}
    candidates = [n for n in encoders if n != "base"]
    weights = template.method == "convex" and choice.alpha == "auto"
    settings = Progress("choosing how similar papers are answered",
                        total=(len(encoders) + 1) * len(blocks) + len(choice.views) - 1
                        + len(choice.lexical) - 1 + (len(ALPHA_GRID) if weights else 0), unit="settings tried", eta=False)

    def neighbours(name: str, paper_view: PaperView, block: str = "unseen") -> list[Hits]:
        on = blocks[block]
        with working_on(f"similar papers, {name} encoder at {paper_view.describe()}, {block} listings"):
            vectors = paper_embed(name, paper_view)(on.doc_texts)  # (n_docs, dim)
            found, scores = dense_search(vectors, vectors[rows[block]], depth + max(map(len, exclude[block])))
        settings.advance()
        return [drop_rows((f.tolist(), s.tolist()), e, depth) for f, s, e in zip(found, scores, exclude[block])]

    with working_on("similar papers"):
        bm25 = {b: BM25(t.doc_ids, t.doc_texts, stemmer) for b, t in blocks.items()}

    def bm25_neighbours(kind: str, n: int, block: str = "unseen") -> list[Hits]:
        on = blocks[block]
        with working_on(f"similar papers, bm25 of {lexical_label(kind, n)}, {block} listings"):
            found = (paper_neighbours(bm25[block], on.query_texts, depth, exclude[block]) if kind == "paper" else
                     lexical_neighbours(bm25[block], on.query_texts, n, depth, exclude[block]))
        settings.advance()
        return found

    dense = {b: {name: neighbours(name, view, b) for name in encoders} for b in blocks}
    default_lexical = {b: bm25_neighbours(lexical, terms, b) for b in blocks}
    per_paper = {name: _precision_at_10(hits, task) for name, hits in dense["unseen"].items()}
    evidence.update({f"{name}/precision@10": float(np.mean(v)) for name, v in per_paper.items()})
    served = {b: {name: _served(default_lexical[b], hits, template, blocks[b]) for name, hits in dense[b].items()}
              for b in blocks}
    evidence.update({f"{b}/{name}/served_precision@10": round(float(np.mean(v)), 4)
                     for b, by_name in served.items() for name, v in by_name.items()})
    if choice.encoder != "auto" or "base" not in dense["unseen"]:
        encoder = choice.encoder if choice.encoder != "auto" else "trained"
        reason = f"the {encoder} encoder (configured)"
    else:
        encoder, reason, evidence["encoder"] = choose_encoder(candidates, served, clusters, choice)
        if "trained" in per_paper:  # the dense comparison as before, for the record
            evidence["trained_minus_base"] = interval(clustered_difference(per_paper["trained"], per_paper["base"],
                                                                           clusters["unseen"]))
    clusters = clusters["unseen"]
    by_view = {view: dense["unseen"][encoder], **{v: neighbours(encoder, v) for v in choice.views[1:]}}
    view, evidence["view"] = choose_setting({v: _precision_at_10(h, task) for v, h in by_view.items()}, view,
                                            clusters, label=PaperView.label, min_clusters=choice.min_listings)
    by_lexical = {(lexical, terms): default_lexical["unseen"],
                  **{(kind, n): bm25_neighbours(kind, n) for kind, n in choice.lexical[1:]}}
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
    name, weight = merge_of(encoder)
    return Similar(name, fusion, terms, reason, evidence, lexical, view, weight)

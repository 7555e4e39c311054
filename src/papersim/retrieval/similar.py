"""Papers similar to a paper: its dense neighbours and a lexical ranking, fused.

The paper is the query. Its dense neighbours come from its own stored vector (no encoding at serving
time), made as `view` says (the first 256 tokens, or windows mean-pooled: papersim.encoders.windows); its
lexical neighbours from BM25 with the whole paper as the query (`paper_neighbours`) or with its `terms`
most telling terms (`BM25.more_like_this`, as Lucene's MoreLikeThis). The two lists are fused by `fuse`
with a fusion of this task's own (chosen on validation listings held out of training by the train stage):
the best weight for a title asking for its abstract is not the best for a paper asking for its neighbours.
The paper itself and its exact duplicates (same content hash) are never in its answer.
Evaluate, `papersim similar`, the registered model and the web page all rank through `answer_similar`.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from papersim.encoders.windows import PaperView
from papersim.errors import PapersimError
from papersim.retrieval.fusion import Fusion, fuse
from papersim.retrieval.lexical import BM25
from papersim.retrieval.passage import Hits

ENCODERS = ("trained", "base")
SIMILAR_ENCODERS = (*ENCODERS, "merged")  # merged: (1 - a) x base + a x trained, weight by weight (WiSE-FT)
LEXICAL = ("paper", "mlt")  # the whole paper as the BM25 query | its telling terms (more-like-this)
DEFAULT_TERMS = 25  # Lucene MoreLikeThis' default maxQueryTerms: an abstract's topic in one short query
DEFAULT_FUSION = Fusion(method="convex", alpha=0.5, normalisation="zscore", depth=100)  # nothing chosen yet


@dataclass(frozen=True)
class Similar:
    """How "papers similar to this one" is answered: stored with the index and the registered version."""

    encoder: str = "trained"  # whose vectors give the dense neighbours: trained | base | merged
    fusion: Fusion = DEFAULT_FUSION
    terms: int = DEFAULT_TERMS  # telling terms of the paper sent to BM25 (lexical "mlt"; 0: all of them)
    reason: str = ""
    evidence: dict = field(default_factory=dict)  # validation co-listing scores behind the choices
    lexical: str = "mlt"  # paper | mlt (an index written before the whole paper was tried: mlt)
    view: PaperView | None = None  # how the paper vectors are made (None: the search index's own vectors)
    merge_weight: float | None = None  # merged: the trained model's weight a (None for trained and base)

    def __post_init__(self) -> None:
        if self.encoder not in SIMILAR_ENCODERS:
            raise PapersimError(f"similar: encoder must be one of {', '.join(SIMILAR_ENCODERS)}, not "
                                f"{self.encoder!r} (rerun the train stage)")
        merged = self.encoder == "merged"
        if merged != (self.merge_weight is not None) or merged and not 0 < self.merge_weight < 1:
            raise PapersimError(f"similar: a merged encoder needs a merge weight in (0, 1) and only it has one; "
                                f"got encoder {self.encoder!r} with merge_weight {self.merge_weight!r}")
        if self.lexical not in LEXICAL:
            raise PapersimError(f"similar: lexical must be one of {', '.join(LEXICAL)}, not {self.lexical!r}")
        if self.terms < 0:
            raise PapersimError(f"similar: terms must be 0 (all) or positive, got {self.terms}")

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "fusion": self.fusion.to_dict(), "terms": self.terms,
                "lexical": self.lexical, **({"view": self.view.to_dict()} if self.view else {}),
                **({"merge_weight": self.merge_weight} if self.merge_weight is not None else {}),
                "reason": self.reason, "evidence": self.evidence}

    @classmethod
    def from_dict(cls, values: Mapping) -> "Similar":
        return cls(encoder=values.get("encoder", "trained"), fusion=Fusion.from_dict(values.get("fusion", {})),
                   terms=int(values.get("terms", DEFAULT_TERMS)), reason=values.get("reason", ""),
                   evidence=dict(values.get("evidence", {})), lexical=values.get("lexical", "mlt"),
                   view=PaperView.from_dict(values["view"]) if "view" in values else None,
                   merge_weight=values.get("merge_weight"))

    def describe(self) -> str:
        lexical = "the whole paper" if self.lexical == "paper" else \
            f"more-like-this ({self.terms or 'all'} terms)"
        view = self.view.describe() if self.view else "the search index's vectors"
        return f"{encoder_label(self.encoder, self.merge_weight)} ({view}) + bm25 of {lexical}, {self.fusion.describe()}"


def encoder_label(encoder: str, merge_weight: float | None = None) -> str:
    """An encoder as reasons and tables name it: "base encoder", "merged encoder (0.5 base + 0.5 trained)"."""
    if encoder != "merged":
        return f"{encoder} encoder"
    return f"merged encoder ({1 - merge_weight:g} base + {merge_weight:g} trained)"


def merge_candidate(a: float) -> str:
    """The similar choice's name for the encoder (1 - a) x base + a x trained: "trained" at a = 1."""
    return "trained" if a == 1 else f"merged_{a:g}"


def merge_of(candidate: str) -> tuple[str, float | None]:
    """(encoder, merge weight) of a candidate's name: "merged_0.5" -> ("merged", 0.5), "base" -> ("base", None)."""
    return ("merged", float(candidate.removeprefix("merged_"))) if candidate.startswith("merged_") else (candidate, None)


def lexical_label(lexical: str, terms: int) -> str:
    """One lexical setting's name in params, evidence and tables: paper, mlt25, mlt-all."""
    return "paper" if lexical == "paper" else f"mlt{terms}" if terms else "mlt-all"


def parse_lexical(label: str) -> tuple[str, int]:
    """(lexical, terms) from its name: "paper" (the whole paper), "mlt25" (25 telling terms), "mlt-all"."""
    if label == "paper":
        return "paper", DEFAULT_TERMS
    if label == "mlt-all":
        return "mlt", 0
    if label.startswith("mlt") and label[3:].isdigit() and int(label[3:]) > 0:
        return "mlt", int(label[3:])
    raise ValueError(f"lexical query {label!r}: expected paper, mltN (N telling terms, e.g. mlt25) or mlt-all")


def duplicates(hashes: Sequence[str]) -> dict[int, list[int]]:
    """Row -> every row of equal content (itself included), for the rows whose content is not unique."""
    frame = pd.DataFrame({"hash": list(hashes)})
    shared = frame[frame["hash"].duplicated(keep=False)]
    groups = shared.groupby("hash").indices  # hash -> positions in `shared`
    rows = shared.index.to_numpy()
    return {int(r): rows[positions].tolist() for positions in groups.values() for r in rows[positions]}


def excluded_rows(rows: Sequence[int], dups: Mapping[int, list[int]]) -> list[set[int]]:
    """Per row, the rows never to list as its neighbours: itself and its exact duplicates."""
    return [{int(row), *dups.get(int(row), ())} for row in rows]


def lexical_neighbours(bm25: BM25, texts: Sequence[str], terms: int, depth: int,
                       exclude: Sequence[Iterable[int]], within: Sequence[np.ndarray | None] | None = None
                       ) -> list[Hits]:
    """Each paper's more-like-this hits as (rows, scores), `exclude`d rows left out (and only rows
    `within` a filter's, per paper, where one is given)."""
    return [(rows.tolist(), scores.tolist())
            for rows, scores in bm25.more_like_this(texts, terms, depth, exclude, within)]


def paper_neighbours(bm25: BM25, texts: Sequence[str], depth: int, exclude: Sequence[Iterable[int]],
                     within: Sequence[np.ndarray | None] | None = None) -> list[Hits]:
    """Each paper's BM25 hits with its whole text as the query (what a user builds without papersim), as
    (rows, scores), `exclude`d rows left out (and only rows `within` a filter's, where one is given);
    documents sharing no term are not hits."""
    within = within if within is not None else [None] * len(texts)
    if all(w is None for w in within):
        found, scores = bm25.search(texts, depth + max(map(len, exclude), default=0))  # (n_papers, depth + extra)
        return [drop_rows(([int(r) for r, s in zip(f, x) if s > 0], [float(s) for s in x if s > 0]), e, depth)
                for f, x, e in zip(found, scores, exclude)]
    out = []
    for scores, e, w in zip(bm25.score_rows(texts), exclude, within):  # every row scored, the filter's kept
        rows = np.arange(len(bm25.doc_ids)) if w is None else np.asarray(w, dtype=np.int64)
        rows = rows[~np.isin(rows, np.fromiter(e, dtype=np.int64))] if len(e) else rows
        if scores is None or not len(rows):
            out.append(([], []))
            continue
        kept = rows[scores[rows] > 0]
        kept = kept[np.lexsort((kept, -scores[kept]))][:depth]
        out.append((kept.tolist(), scores[kept].astype(float).tolist()))
    return out


def drop_rows(hits: Hits, exclude: Iterable[int], depth: int) -> Hits:
    """`hits` without the excluded rows, cut to `depth`."""
    skip = set(exclude)
    kept = [(r, s) for r, s in zip(*hits) if r not in skip and r >= 0][:depth]
    return [r for r, _ in kept], [s for _, s in kept]


def similar_hits(lexical: Sequence[Hits], dense: Sequence[Hits], fusion: Fusion) -> list[Hits]:
    """Per paper, its lexical and dense neighbours (self and duplicates already out) fused: (rows, scores)."""
    return [fuse(lex, den, fusion) for lex, den in zip(lexical, dense)]


def answer_similar(bm25: BM25, texts: Sequence[str], dense: Sequence[Hits], exclude: Sequence[Iterable[int]],
                   cfg: Similar, within: Sequence[np.ndarray | None] | None = None) -> list[Hits]:
    """The served answer for papers given as their texts (passages) and dense neighbours (rows, cosines,
    at least `fusion.depth` + the excluded rows deep, of a filter's rows where `within` gives them):
    fused rows, best first, with their scores."""
    exclude = [set(e) for e in exclude]
    depth = cfg.fusion.depth
    lexical = (paper_neighbours(bm25, texts, depth, exclude, within) if cfg.lexical == "paper" else
               lexical_neighbours(bm25, texts, cfg.terms, depth, exclude, within))
    return similar_hits(lexical, [drop_rows(d, e, depth) for d, e in zip(dense, exclude)], cfg.fusion)

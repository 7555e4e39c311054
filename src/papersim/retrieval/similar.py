"""Papers similar to a paper: its dense neighbours and a lexical more-like-this ranking, fused.

The paper is the query. Its dense neighbours come from its own stored vector (no encoding at
serving time); its lexical neighbours from BM25 with its `terms` most telling terms as the query
(`BM25.more_like_this`, as Lucene's MoreLikeThis). The two lists are fused by `fuse` with a fusion of
this task's own (chosen on the validation split's co-listings by the train stage): the best weight
for a title asking for its abstract is not the best for a paper asking for its neighbours.
The paper itself and its exact duplicates (same content hash) are never in its answer.
Evaluate, `papersim similar`, the registered model and the web page all rank through `similar_hits`.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from papersim.errors import PapersimError
from papersim.retrieval.fusion import Fusion, fuse
from papersim.retrieval.lexical import BM25
from papersim.retrieval.passage import Hits

ENCODERS = ("trained", "base")
DEFAULT_TERMS = 25  # Lucene MoreLikeThis' default maxQueryTerms: an abstract's topic in one short query
DEFAULT_FUSION = Fusion(method="convex", alpha=0.5, normalisation="zscore", depth=100)  # nothing chosen yet


@dataclass(frozen=True)
class Similar:
    """How "papers similar to this one" is answered: stored with the index and the registered version."""

    encoder: str = "trained"  # whose vectors give the dense neighbours: trained | base
    fusion: Fusion = DEFAULT_FUSION
    terms: int = DEFAULT_TERMS  # telling terms of the paper sent to BM25
    reason: str = ""
    evidence: dict = field(default_factory=dict)  # validation co-listing scores behind the choices

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise PapersimError(f"similar: encoder must be one of {', '.join(ENCODERS)}, not {self.encoder!r} "
                                "(rerun the train stage)")
        if self.terms < 1:
            raise PapersimError(f"similar: terms must be positive, got {self.terms}")

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "fusion": self.fusion.to_dict(), "terms": self.terms,
                "reason": self.reason, "evidence": self.evidence}

    @classmethod
    def from_dict(cls, values: Mapping) -> "Similar":
        return cls(encoder=values.get("encoder", "trained"), fusion=Fusion.from_dict(values.get("fusion", {})),
                   terms=int(values.get("terms", DEFAULT_TERMS)), reason=values.get("reason", ""),
                   evidence=dict(values.get("evidence", {})))

    def describe(self) -> str:
        return f"{self.encoder} encoder + bm25 more-like-this ({self.terms} terms), {self.fusion.describe()}"


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
                       exclude: Sequence[Iterable[int]]) -> list[Hits]:
    """Each paper's more-like-this hits as (rows, scores), `exclude`d rows left out."""
    return [(rows.tolist(), scores.tolist()) for rows, scores in bm25.more_like_this(texts, terms, depth, exclude)]


def drop_rows(hits: Hits, exclude: Iterable[int], depth: int) -> Hits:
    """`hits` without the excluded rows, cut to `depth`."""
    skip = set(exclude)
    kept = [(r, s) for r, s in zip(*hits) if r not in skip and r >= 0][:depth]
    return [r for r, _ in kept], [s for _, s in kept]


def similar_hits(lexical: Sequence[Hits], dense: Sequence[Hits], fusion: Fusion) -> list[Hits]:
    """Per paper, its lexical and dense neighbours (self and duplicates already out) fused: (rows, scores)."""
    return [fuse(lex, den, fusion) for lex, den in zip(lexical, dense)]


def answer_similar(bm25: BM25, texts: Sequence[str], dense: Sequence[Hits], exclude: Sequence[Iterable[int]],
                   cfg: Similar) -> list[Hits]:
    """The served answer for papers given as their texts (passages) and dense neighbours (rows, cosines,
    at least `fusion.depth` + the excluded rows deep): fused rows, best first, with their scores."""
    exclude = [set(e) for e in exclude]
    depth = cfg.fusion.depth
    lexical = lexical_neighbours(bm25, texts, cfg.terms, depth, exclude)
    return similar_hits(lexical, [drop_rows(d, e, depth) for d, e in zip(dense, exclude)], cfg.fusion)


"""Fusing the lexical (BM25) and the dense ranking of one query into the ranking papersim serves.

- `convex`: score(d) = alpha * norm(dense) + (1 - alpha) * norm(bm25) over the union of both
  top-`depth` lists. A convex combination of normalised scores beats reciprocal-rank fusion and
  needs only a few queries to set alpha (Bruch et al., "An Analysis of Fusion Functions for Hybrid
  Retrieval", TOIS 2023). A document missing from one list gets that list's lowest normalised
  score: it ranked below everything listed.
- `rrf`: reciprocal-rank fusion (Cormack et al. 2009), score(d) = sum 1 / (rrf_k + rank(d)).

The weight itself is chosen by the train stage (papersim.training.selection.choose_weight).
Evaluate, `papersim search` and the registered model all rank through `fuse`.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from papersim.retrieval.passage import Hits

METHODS = ("convex", "rrf")
NORMALISATIONS = ("zscore", "minmax")
ALPHA_GRID = tuple(i / 10 for i in range(11))  # 0 = BM25 alone ... 1 = dense alone


@dataclass(frozen=True)
class Fusion:
    """How two rankings become one: stored with the index and the registered version."""

    method: str = "convex"
    alpha: float = 0.5  # dense weight of `convex`
    normalisation: str = "zscore"
    rrf_k: int = 60
    depth: int = 100  # candidates taken from each system

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"fusion method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"fusion normalisation must be one of {', '.join(NORMALISATIONS)}, "
                             f"not {self.normalisation!r}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"fusion alpha must be in [0, 1], got {self.alpha}")
        if min(self.rrf_k, self.depth) < 1:
            raise ValueError("rrf_k and depth must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "Fusion":
        return cls(**{k: values[k] for k in ("method", "alpha", "normalisation", "rrf_k", "depth") if k in values})

    def describe(self) -> str:
        if self.method == "rrf":
            return f"rrf (k={self.rrf_k})"
        return f"convex (alpha={self.alpha:g} dense, {self.normalisation} scores)"


def normalise(scores: np.ndarray, how: str) -> np.ndarray:
    """Scores of one ranked list on a common scale: z-scores, or min-max onto [0, 1]."""
    scores = np.asarray(scores, dtype=np.float64)  # (n,)
    if scores.size == 0:
        return scores
    if how == "minmax":
        low, high = scores.min(), scores.max()
        return (scores - low) / (high - low) if high > low else np.ones_like(scores)
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


def fuse(lexical: Hits, dense: Hits, fusion: Fusion) -> tuple[list, list[float]]:
    """One query's fused ranking: (keys best first, fused scores); ties go to the better dense score, then key.

    `lexical` holds only documents that share a term with the query (BM25 score > 0).
    """
    lex_keys, dense_keys = list(lexical[0])[:fusion.depth], list(dense[0])[:fusion.depth]
    if fusion.method == "rrf":
        dense_part = {key: 1.0 / (fusion.rrf_k + rank) for rank, key in enumerate(dense_keys, start=1)}
        lex_part = {key: 1.0 / (fusion.rrf_k + rank) for rank, key in enumerate(lex_keys, start=1)}
        dense_floor = lex_floor = 0.0
        alpha = 0.5  # equal weights: the sum of reciprocal ranks, halved
    else:
        dense_norm = normalise(np.asarray(dense[1], dtype=np.float64)[:len(dense_keys)], fusion.normalisation)
        lex_norm = normalise(np.asarray(lexical[1], dtype=np.float64)[:len(lex_keys)], fusion.normalisation)
        dense_part, lex_part = dict(zip(dense_keys, dense_norm)), dict(zip(lex_keys, lex_norm))
        dense_floor = float(dense_norm.min()) if dense_norm.size else 0.0
        lex_floor = float(lex_norm.min()) if lex_norm.size else 0.0
        alpha = fusion.alpha
    scored = []
    for key in dict.fromkeys([*dense_keys, *lex_keys]):
        d = dense_part.get(key, dense_floor)
        scored.append((alpha * d + (1 - alpha) * lex_part.get(key, lex_floor), d, key))
    scored.sort(key=lambda item: (-item[0], -item[1], item[2]))
    return [key for _, _, key in scored], [score for score, _, _ in scored]


def fuse_rankings(lexical: Mapping[str, Hits], dense: Mapping[str, Hits], fusion: Fusion) -> dict[str, list]:
    """`fuse` for every query of `dense` (a query absent from `lexical` matched no term)."""
    empty: Hits = ([], [])
    return {qid: fuse(lexical.get(qid, empty), hits, fusion)[0] for qid, hits in dense.items()}

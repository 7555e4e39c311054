"""A paper as the encoder sees it: its first `tokens` tokens, or all of it in windows mean-pooled.

MiniLM reads at most 256 tokens (the sentence-transformers limit of all-MiniLM-L6-v2; it was trained at
128); an abstract averages ~250 and some run past 500. For "papers similar to this one" the whole paper
is the query, so the paper side may be read in windows of `tokens` tokens, split where the model's own
tokenizer puts the boundaries (character offsets, so each window is a slice of the original text and
the embedding cache keys it like any text). The windows' unit vectors are averaged and re-normalised.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, dim) unit vectors

SPECIAL_TOKENS = 2  # [CLS] and [SEP] take two of the model's max_seq_length positions


@dataclass(frozen=True)
class PaperView:
    """How a paper is turned into its vector: `tokens` per window, one window (truncated) or up to `windows`."""

    tokens: int = 256  # MiniLM's own limit: an average abstract (~250 tokens) fits whole
    windows: int = 1  # 1: the first `tokens` tokens; > 1: up to that many windows, mean-pooled

    def __post_init__(self) -> None:
        if not 1 <= self.tokens <= 512 or self.windows < 1:
            raise ValueError(f"paper view: tokens must be 1..512 and windows >= 1, got {self.tokens}, {self.windows}")

    def describe(self) -> str:
        return f"{self.tokens} tokens" + (f" x up to {self.windows} windows, mean-pooled" if self.windows > 1 else "")

    def label(self) -> str:
        """The view as params name it: "256", or "128x4" for up to 4 windows of 128 tokens."""
        return f"{self.tokens}" + (f"x{self.windows}" if self.windows > 1 else "")

    @classmethod
    def parse(cls, label: str | int) -> "PaperView":
        """A view from its params name ("256", "128x4"); a bad name says what is expected."""
        tokens, _, windows = str(label).partition("x")
        try:
            return cls(int(tokens), int(windows or 1))
        except ValueError:
            raise ValueError(f"paper view {label!r}: expected TOKENS or TOKENSxWINDOWS, e.g. 256 or 128x4, "
                             "tokens 1..512") from None

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "windows": self.windows}

    @classmethod
    def from_dict(cls, values: dict) -> "PaperView":
        return cls(int(values.get("tokens", 128)), int(values.get("windows", 1)))


@lru_cache(maxsize=4)
def _tokenizer(folder: str):
    from transformers import AutoTokenizer  # the tokenizer sentence-transformers loads from the same folder

    return AutoTokenizer.from_pretrained(folder)


def split_windows(texts: Sequence[str], tokenizer, tokens: int, windows: int) -> tuple[list[str], np.ndarray]:
    """Each text cut into at most `windows` consecutive slices of `tokens` - 2 word pieces each, at the
    tokenizer's own offsets. Returns (slices, owner): owner[i] is the text slice i came from. (n_slices,)"""
    width = max(tokens - SPECIAL_TOKENS, 1)
    offsets = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False, verbose=False)["offset_mapping"]
    slices, owner = [], []
    for i, (text, spans) in enumerate(zip(texts, offsets)):
        starts = list(range(0, max(len(spans), 1), width))[:windows]
        for start in starts:
            piece = spans[start:start + width]
            slices.append(text[piece[0][0]:piece[-1][1]] if piece else text)
            owner.append(i)
    return slices, np.asarray(owner, dtype=np.int64)


def pool_windows(vectors: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Mean of each text's window vectors (n_slices, dim), re-normalised to unit length. (n, dim)"""
    out = np.zeros((n, vectors.shape[1]), dtype=np.float32)
    np.add.at(out, owner, vectors)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def windowed_embed(embed: Embed, model_folder: Path, view: PaperView) -> Embed:
    """`embed` (an encoder at `view.tokens`) reading each paper as `view` says; truncation is `embed` itself."""
    if view.windows == 1:
        return embed

    def paper_vectors(texts: list[str]) -> np.ndarray:
        slices, owner = split_windows(texts, _tokenizer(str(model_folder)), view.tokens, view.windows)
        return pool_windows(embed(slices), owner, len(texts))

    return paper_vectors

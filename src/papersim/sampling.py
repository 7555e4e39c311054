"""Seeded choices keyed by a paper's id: the same paper always lands the same way, whatever else
is in the corpus, so splits and samples stay stable when papers come or go."""

import hashlib

import numpy as np


def seeded_unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, key)."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def paper_rng(seed: int, paper_id: str) -> np.random.Generator:
    """A random generator of a paper's own: its choices do not move when other papers come or go."""
    return np.random.default_rng([seed, int(seeded_unit(seed, paper_id) * 2**32)])


def seeded_sample(keys: list[str], n: int, seed: int) -> list[int]:
    """Positions of up to n keys, chosen by their seeded hash (all of them when n <= 0 or there are
    fewer), in their original order. A key stays chosen as others are added unless it is displaced."""
    if n <= 0 or len(keys) <= n:
        return list(range(len(keys)))
    ranked = sorted(range(len(keys)), key=lambda i: seeded_unit(seed, keys[i]))
    return sorted(ranked[:n])

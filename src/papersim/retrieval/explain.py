"""Why a paper is in an answer: the query's terms that contributed most to its BM25 match.

BM25 scores a document as a sum over the query's terms of idf x saturated tf; the index (bm25s) stores
each (term, document) summand, so a term's part in a match is one lookup. The terms are stems; each is
shown as the first word of the query that stems to it ("network" for "network"/"networks"). Explaining
does not touch the ranking: it runs on the answer's rows after they are chosen.
"""

import re
from collections.abc import Sequence

import numpy as np

from papersim.retrieval.lexical import BM25

WHY_TERMS = 5  # terms shown per answer: enough to see the shared topic, few enough to read at a glance
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s' default token pattern, so the words are the indexed ones


def query_terms(bm25: BM25, text: str) -> dict[int, tuple[str, int]]:
    """Vocabulary id -> (the first word of `text` with that stem, its count in `text`), for the text's
    indexed, non-stopword terms."""
    import bm25s

    stop = set(bm25s.stopwords.STOPWORDS_EN)
    vocab = bm25.retriever.vocab_dict
    found: dict[int, tuple[str, int]] = {}
    for word in TOKEN.findall(text.lower()):
        if word in stop:
            continue
        stem = bm25.stemmer.stemWord(word) if bm25.stemmer is not None else word
        term = vocab.get(stem)
        if term is None:
            continue
        shown, count = found.get(term, (word, 0))
        found[term] = (shown, count + 1)
    return found


def why(bm25: BM25, text: str, rows: Sequence[int], only: Sequence[int] | None = None,
        top: int = WHY_TERMS) -> list[list[str]]:
    """Per row, up to `top` words of `text` by their part in the row's BM25 score, largest first.

    `only` restricts the query to these vocabulary ids (more-like-this: the telling terms it sent);
    a row sharing no term gets an empty list. Cost: one binary search per (query term, row).
    """
    terms = query_terms(bm25, text)
    if only is not None:
        keep = {int(t) for t in only}
        terms = {t: v for t, v in terms.items() if t in keep}
    rows = np.asarray(list(rows), dtype=np.int64)  # (n_rows,)
    if not len(rows) or not terms:
        return [[] for _ in rows]
    data, indices, indptr = (bm25.retriever.scores[key] for key in ("data", "indices", "indptr"))
    ids = np.fromiter(terms, dtype=np.int64)
    parts = np.zeros((len(ids), len(rows)))  # (n_terms, n_rows): a term's summand in each row's score
    for i, term in enumerate(ids):
        docs = indices[indptr[term]:indptr[term + 1]]  # sorted row ids holding the term
        at = np.searchsorted(docs, rows)
        hit = (at < len(docs)) & (docs[np.minimum(at, len(docs) - 1)] == rows)
        weight = terms[int(term)][1] if only is None else 1  # a whole-text query repeats a term as it occurs
        parts[i, hit] = data[indptr[term] + at[hit]] * weight
    words = [terms[int(t)][0] for t in ids]
    out = []
    for column in parts.T:
        order = np.lexsort((np.arange(len(ids)), -column))[:top]
        out.append([words[i] for i in order if column[i] > 0])
    return out

"""Why a paper is in an answer: each word's part in its BM25 match adds up to BM25's own score."""

import numpy as np

from papersim.retrieval.explain import query_terms, why
from papersim.retrieval.lexical import BM25

TEXTS = ["Graph neural networks for molecules and message passing",
         "A study of networks: neural message passing on graphs",
         "Supersonic wing flutter in wind tunnels",
         "Flutter of wings at supersonic speed, a wind tunnel study"]


def test_the_parts_of_the_words_add_up_to_the_bm25_score_largest_first():
    bm25 = BM25([f"d{i}" for i in range(len(TEXTS))], TEXTS)
    query = "neural networks passing messages on graphs, graph networks"
    scores = next(bm25.score_rows([query]))
    terms = query_terms(bm25, query)
    assert terms[bm25.retriever.vocab_dict["network"]] == ("networks", 2)  # the first word with the stem, twice
    data, indices, indptr = (bm25.retriever.scores[k] for k in ("data", "indices", "indptr"))
    for row in (0, 1):
        parts = {}
        for term, (word, count) in terms.items():
            docs = indices[indptr[term]:indptr[term + 1]]
            if row in docs:
                parts[word] = data[indptr[term] + np.searchsorted(docs, row)] * count
        assert np.isclose(sum(parts.values()), scores[row], rtol=1e-5)
        assert why(bm25, query, [row], top=10)[0] == sorted(parts, key=lambda w: -parts[w])
    assert why(bm25, query, [2, 3]) == [[], []]  # sharing no word: nothing to show


def test_a_more_like_this_query_explains_with_its_telling_terms_only():
    bm25 = BM25([f"d{i}" for i in range(len(TEXTS))], TEXTS)
    telling = bm25.telling_terms([TEXTS[3]], 2)[0]
    words = why(bm25, TEXTS[3], [2], only=telling)[0]
    assert 0 < len(words) <= 2
    assert {bm25.retriever.vocab_dict[bm25.stemmer.stemWord(w)] for w in words} <= set(telling.tolist())

"""Papers similar to a paper: telling terms, more-like-this, duplicates left out, the two signals fused."""

import numpy as np
import pytest

from papersim.errors import PapersimError
from papersim.retrieval.fusion import Fusion, fuse
from papersim.retrieval.lexical import BM25
from papersim.encoders.windows import PaperView
from papersim.retrieval.similar import (Similar, answer_similar, drop_rows, duplicates, excluded_rows, lexical_label,
                                        lexical_neighbours, paper_neighbours, parse_lexical)

DOCS = [
    "Wing flutter of swept wings at supersonic speed measured in a wind tunnel.",  # 0: the paper asking
    "Flutter of swept wings at supersonic speed: a wind tunnel study.",  # 1: its neighbour
    "Panel flutter at supersonic speed.",  # 2: shares two telling words
    "Heat transfer in laminar boundary layers measured in a wind tunnel.",  # 3: shares only common words
    "Contrastive learning of sentence embeddings.",  # 4: nothing in common
    "Wing flutter of swept wings at supersonic speed measured in a wind tunnel.",  # 5: an exact duplicate of 0
    "Measured results of a study.",  # 6: common words only
]


def test_telling_terms_are_the_paper_s_rarest_repeated_words_not_its_common_ones():
    bm25 = BM25([f"d{i}" for i in range(len(DOCS))], DOCS, stemmer="english")
    vocab = {i: w for w, i in bm25.retriever.vocab_dict.items()}
    (terms,) = bm25.telling_terms(["flutter flutter flutter of swept wings measured in a wind tunnel zebra"], 2)
    words = [vocab[int(t)] for t in terms]
    assert words[0] == "flutter"  # three times in the text: the heaviest
    assert "zebra" not in words  # no other document holds it: it finds nothing
    assert len(words) == 2


def test_more_like_this_ranks_by_shared_telling_terms_and_leaves_out_excluded_rows():
    bm25 = BM25([f"d{i}" for i in range(len(DOCS))], DOCS, stemmer="english")
    ((rows, scores),) = bm25.more_like_this([DOCS[0]], terms=5, depth=10, exclude=[{0, 5}])
    assert rows[0] == 1 and 0 not in rows and 5 not in rows and 4 not in rows  # 4 shares no term
    assert list(scores) == sorted(scores, reverse=True) and min(scores) > 0
    ((capped, _),) = bm25.more_like_this([DOCS[0]], terms=5, depth=2, exclude=[{0, 5}])
    assert list(capped) == list(rows[:2])


def test_duplicates_are_every_row_of_equal_content_and_each_paper_excludes_its_own():
    dups = duplicates(["a", "b", "a", "c", "b", "a"])
    assert dups == {0: [0, 2, 5], 2: [0, 2, 5], 5: [0, 2, 5], 1: [1, 4], 4: [1, 4]}
    assert excluded_rows([0, 3, 4], dups) == [{0, 2, 5}, {3}, {1, 4}]


def test_drop_rows_removes_the_excluded_and_faiss_padding_then_cuts():
    assert drop_rows(([5, 0, -1, 2, 7], [0.9, 0.8, 0.0, 0.5, 0.4]), {0}, 2) == ([5, 2], [0.9, 0.5])


def test_the_answer_fuses_both_signals_and_never_lists_the_paper_or_its_duplicate():
    ids = [f"d{i}" for i in range(len(DOCS))]
    bm25 = BM25(ids, DOCS, stemmer="english")
    exclude = excluded_rows([0], duplicates(DOCS))
    assert exclude == [{0, 5}]
    # Dense neighbours as a real encoder would give them: the duplicate first (cosine 1), then the topic.
    dense = [([5, 0, 2, 1, 3, 6, 4], [1.0, 1.0, 0.9, 0.85, 0.4, 0.3, 0.1])]
    fusion = Fusion(method="convex", alpha=0.5, depth=100)
    (answer,) = answer_similar(bm25, [DOCS[0]], dense, exclude, Similar("base", fusion, terms=10))
    rows, scores = answer
    assert 0 not in rows and 5 not in rows
    assert set(rows[:2]) == {1, 2} and scores == sorted(scores, reverse=True)
    # Exactly the shared fusion of the two lists, each without the excluded rows.
    lexical = lexical_neighbours(bm25, [DOCS[0]], 10, 100, exclude)[0]
    assert answer == fuse(lexical, drop_rows(dense[0], {0, 5}, 100), fusion)
    # Dense alone (alpha 1) orders by cosine; lexical alone (alpha 0) by BM25: the weight matters.
    dense_only = answer_similar(bm25, [DOCS[0]], dense, exclude, Similar("base", Fusion(alpha=1.0), 10))[0][0]
    lexical_only = answer_similar(bm25, [DOCS[0]], dense, exclude, Similar("base", Fusion(alpha=0.0), 10))[0][0]
    assert dense_only[:2] == [2, 1] and lexical_only[0] == 1


def test_similar_config_round_trips_and_rejects_unknown_encoders():
    similar = Similar("trained", Fusion(method="rrf"), 50, "chosen", {"papers": 3})
    assert Similar.from_dict(similar.to_dict()) == similar
    assert "50 terms" in similar.describe() and "rrf" in similar.describe()
    whole = Similar("base", Fusion(), 25, "", {}, "paper", PaperView(256, 3))
    assert Similar.from_dict(whole.to_dict()) == whole and "the whole paper" in whole.describe()
    assert "256 tokens x up to 3 windows" in whole.describe()
    # An index written before the lexical query and the view were chosen: more-like-this over the index's vectors.
    old = Similar.from_dict({"encoder": "base", "fusion": {}, "terms": 50})
    assert old.lexical == "mlt" and old.view is None and "the search index's vectors" in old.describe()
    with pytest.raises(PapersimError, match="encoder must be one of"):
        Similar("champion")
    with pytest.raises(PapersimError, match="terms must be 0"):
        Similar(terms=-1)
    with pytest.raises(PapersimError, match="lexical must be one of"):
        Similar(lexical="words")


def test_lexical_settings_parse_from_their_names_and_a_bad_name_says_what_is_expected():
    assert parse_lexical("paper") == ("paper", 25) and parse_lexical("mlt50") == ("mlt", 50)
    assert parse_lexical("mlt-all") == ("mlt", 0)
    assert [lexical_label(*parse_lexical(x)) for x in ("paper", "mlt50", "mlt-all")] == ["paper", "mlt50", "mlt-all"]
    for bad in ("mlt0", "mlt", "words", "mlt-5"):
        with pytest.raises(ValueError, match="expected paper, mltN"):
            parse_lexical(bad)


def test_the_whole_paper_as_the_query_ranks_by_every_shared_word_and_leaves_out_excluded_rows():
    ids = [f"d{i}" for i in range(len(DOCS))]
    bm25 = BM25(ids, DOCS, stemmer="english")
    exclude = excluded_rows([0], duplicates(DOCS))
    ((rows, scores),) = paper_neighbours(bm25, [DOCS[0]], 100, exclude)
    assert 0 not in rows and 5 not in rows and 4 not in rows  # itself, its duplicate, nothing shared
    assert rows[0] == 1 and scores == sorted(scores, reverse=True)
    assert 3 in rows and 6 in rows  # whole-paper queries also match on common words ("measured", "wind tunnel")
    # All telling terms is more-like-this without the cut; the served answer takes whichever the config says.
    every = lexical_neighbours(bm25, [DOCS[0]], 0, 100, exclude)[0]
    assert set(every[0]) >= set(lexical_neighbours(bm25, [DOCS[0]], 2, 100, exclude)[0][0])
    dense = [([1, 2, 3, 6, 4], [0.9, 0.8, 0.4, 0.3, 0.1])]
    served = answer_similar(bm25, [DOCS[0]], dense, exclude, Similar("base", Fusion(alpha=0.0), lexical="paper"))
    assert served[0][0][:len(rows)] == rows  # lexical weight only: the whole-paper ranking, dense-only rows after


def test_more_like_this_costs_one_pass_over_the_postings_of_its_terms():
    """A paper's 25 terms touch only the documents holding them: scores equal BM25 of those terms as a query."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    docs = [" ".join(rng.choice(words, size=40)) for _ in range(500)]
    bm25 = BM25([f"d{i}" for i in range(500)], docs, stemmer="")
    (terms,) = bm25.telling_terms([docs[0]], 25)
    ((rows, scores),) = bm25.more_like_this([docs[0]], 25, 500, exclude=[set()])
    vocab = {i: w for w, i in bm25.retriever.vocab_dict.items()}
    expected = bm25.retriever.get_scores([vocab[int(t)] for t in terms])
    assert np.allclose(scores, expected[rows], atol=1e-5)
    assert set(rows) == set(np.flatnonzero(expected > 0))

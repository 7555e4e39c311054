"""Judged sets: BEIR folders, and the held-out split asked by its titles."""

import pandas as pd
import pytest

from papersim.errors import PapersimError
from papersim.evaluation.sets import colisting_set, held_out_set, load_beir_set
from tests.conftest import held_out_corpus, write_beir


def test_beir_set_reads_judged_queries_and_passages(tmp_path):
    s = load_beir_set(write_beir(tmp_path / "mini"))
    assert s.name == "mini" and s.doc_ids == ["d1", "d2", "d3", "d4"]
    assert s.doc_texts[0] == "wing flutter. supersonic wing flutter measured in a wind tunnel"
    assert s.query_ids == ["1", "2", "3"]  # query 4 has no judgments
    assert s.qrels["1"] == {"d1": 2, "d3": 1}
    assert load_beir_set(tmp_path / "mini").content_hash == s.content_hash


def test_beir_errors_name_file_and_line(tmp_path):
    with pytest.raises(PapersimError, match=r"test.tsv, line 3: expected"):
        load_beir_set(write_beir(tmp_path / "bad", qrels="query-id\tcorpus-id\tscore\n1\td1\t2\n1\td3\n"))
    with pytest.raises(PapersimError, match=r"queries.jsonl: not found"):
        folder = write_beir(tmp_path / "noq")
        (folder / "queries.jsonl").unlink()
        load_beir_set(folder)
    folder = write_beir(tmp_path / "badjson")
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{oops\n', encoding="utf-8")
    with pytest.raises(PapersimError, match=r"corpus.jsonl, line 2: not valid JSON"):
        load_beir_set(folder)


def test_held_out_titles_ask_for_their_own_abstracts():
    papers, split = held_out_corpus()
    s = held_out_set(papers, split, max_group_size=2)
    assert s.query_ids == ["a", "b", "e"]  # d has no title
    assert s.qrels["a"] == {"a": 1} and s.doc_texts[0] == "flutter of thin panels at supersonic speeds"
    assert s.group_queries == ["a", "b"]  # e is alone in its group: no one to find
    assert held_out_set(papers, split.assign(split="train"), 2) is None


def test_a_large_test_split_is_scored_on_a_seeded_sample_that_includes_its_queries_documents():
    import pandas as pd

    n = 500
    papers = pd.DataFrame({"paper_id": [f"p{i}" for i in range(n)], "title": [f"Title {i}" for i in range(n)],
                           "abstract": [f"abstract {i}" for i in range(n)], "groups": [[] for _ in range(n)],
                           "content_hash": [f"h{i}" for i in range(n)]})
    split = pd.DataFrame({"paper_id": papers["paper_id"], "split": ["test" if i % 5 == 0 else "train"
                                                                     for i in range(n)]})
    whole = held_out_set(papers, split, 100)
    assert len(whole.query_ids) == 100 and len(whole.doc_ids) == n and whole.sample == {}
    assert held_out_set(papers, split, 100, max_queries=100, max_docs=n) == whole  # caps not reached: same set
    capped = held_out_set(papers, split, 100, max_queries=30, max_docs=120)
    assert capped.sample == {"queries": 30, "of_queries": 100, "docs": 120, "of_docs": n}
    assert set(capped.query_ids) <= set(capped.doc_ids)  # every query's own abstract is among the documents
    assert capped.content_hash != whole.content_hash
    assert held_out_set(papers, split, 100, max_queries=30, max_docs=120) == capped  # seeded: the same sample


def test_similar_set_asks_each_held_out_paper_for_the_papers_listed_with_it():
    papers, split = held_out_corpus()
    papers = papers.assign(groups=[["page1"], ["page1"], ["page1", "page2"], ["page2"], ["big"]])
    test = set(split.loc[split["split"] == "test", "paper_id"])
    s = colisting_set(papers, test, set(papers["paper_id"]), max_group_size=3, name="similar")
    # a, b, c share page1 (3 papers); c, d share page2; e is alone in `big`: nothing to find
    assert s.query_ids == ["a", "b", "d"]
    assert s.qrels == {"a": {"b": 1, "c": 1}, "b": {"a": 1, "c": 1}, "d": {"c": 1}}
    assert s.query_texts[0] == "Panel flutter. flutter of thin panels at supersonic speeds"  # the whole paper asks
    assert set(s.doc_ids) == set("abcde") and s.facts == {"papers": 3, "groups": 2, "docs": 5,
                                                  "relevant_per_paper": 1.7}
    # Groups larger than max_group_size mean nothing: page1 (3 papers) drops out at 2.
    assert colisting_set(papers, test, set(papers["paper_id"]), 2, "similar").query_ids == ["d"]
    # Validation: the pool leaves the test papers out, so they are never anyone's answer.
    val = colisting_set(papers, {"a", "b"}, {"a", "b", "c"}, 3, "similar_val")
    assert val.qrels == {"a": {"b": 1, "c": 1}, "b": {"a": 1, "c": 1}} and "d" not in val.doc_ids
    assert colisting_set(papers, {"e"}, set(papers["paper_id"]), 3, "similar") is None


def test_an_exact_duplicate_is_not_a_relevant_answer():
    papers, split = held_out_corpus()
    papers = papers.assign(groups=[["page1"]] * 3 + [[], []], content_hash=["x", "x", "y", "z", "w"])
    s = colisting_set(papers, {"a"}, set(papers["paper_id"]), 5, "similar")
    assert s.qrels == {"a": {"c": 1}}  # b has a's content: it is a duplicate, not a neighbour
    assert s.doc_hashes[s.doc_ids.index("b")] == "x"


def test_known_and_unseen_listings_are_two_sets_and_unseen_papers_find_only_their_held_out_listing():
    from papersim.evaluation.sets import listing_sets

    papers, _ = held_out_corpus()
    papers = papers.assign(groups=[["page1"], ["page1"], ["page1", "page2"], ["page2"], ["page2"]])
    # page2 was held out whole (c, d, e test, their unseen listing page2); a is a test paper of a known listing.
    split = pd.DataFrame({"paper_id": list("abcde"), "split": ["test", "train", "test", "test", "test"],
                          "unseen_groups": [[], [], ["page2"], ["page2"], ["page2"]]})
    sets = listing_sets(papers, split, "test", 3, set(papers["paper_id"]))
    assert sets["similar"].query_ids == ["a"] and sets["similar"].qrels == {"a": {"b": 1, "c": 1}}
    unseen = sets["similar_unseen"]
    # c is on page1 too, but only the held-out listing counts: its page1 neighbours a and b are not asked for
    assert unseen.qrels == {"c": {"d": 1, "e": 1}, "d": {"c": 1, "e": 1}, "e": {"c": 1, "d": 1}}
    assert unseen.facts["groups"] == 1 and unseen.name == "similar_unseen"
    old = listing_sets(papers, split.drop(columns="unseen_groups"), "test", 3, set(papers["paper_id"]))
    assert list(old) == ["similar"]  # a split written before listings were held out: known listings only

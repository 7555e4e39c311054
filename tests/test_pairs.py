import numpy as np
import pandas as pd
import pytest

from papersim.data.groups import similarity_groups
from papersim.encoders.load import load_encoder
from papersim.errors import PapersimError
from papersim.training.negatives import Candidates, bm25_candidates, select_negatives
from papersim.training.pairs import (
    MinePairsConfig,
    assign_splits,
    inverse_cloze,
    mine_pairs,
    read_labelled_pairs,
)


def corpus_frame(n: int = 60) -> pd.DataFrame:
    """Papers on a few topics, some listed on shared pages, one exact duplicate text."""
    topics = ["graph neural networks for molecules", "contrastive image representation learning",
              "reinforcement learning for robot control", "speech recognition with transformers"]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        rows.append({
            "paper_id": f"p{i}",
            "title": f"A study of {topic}, variant {i}",
            "abstract": f"We study {topic}. Our method number {i} improves results. "
                        f"Experiments on benchmark {i % 7} confirm it. Code is released.",
            "groups": [f"page:{i % 5}"] if i % 3 == 0 else [],
            "content_hash": f"h{i}",
        })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def encode(tiny_model_dir):
    model = load_encoder(str(tiny_model_dir), 64)
    return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)


def test_split_is_deterministic_and_stable_when_papers_are_added():
    cfg = MinePairsConfig(val_fraction=0.2, test_fraction=0.2)
    ids = [f"paper-{i}" for i in range(2000)]
    first = assign_splits(ids, cfg)
    assert assign_splits(ids + ["new-1", "new-2"], cfg)[:2000] == first
    shares = {s: first.count(s) / len(ids) for s in ("train", "val", "test")}
    assert shares["train"] == pytest.approx(0.6, abs=0.04) and shares["test"] == pytest.approx(0.2, abs=0.03)
    assert assign_splits(ids, MinePairsConfig(seed=99, val_fraction=0.2, test_fraction=0.2)) != first


def test_inverse_cloze_takes_one_sentence_out_or_splits_a_single_sentence():
    rng = np.random.default_rng(0)
    sentence, rest = inverse_cloze("First point here. Second point here. Third point here.", rng)
    assert sentence in ("First point here.", "Second point here.", "Third point here.") and sentence not in rest
    assert sorted((rest + " " + sentence).split()) == sorted("First point here. Second point here. Third point here.".split())
    assert inverse_cloze("one two three four five six seven eight", rng) == ("one two three four", "five six seven eight")
    assert inverse_cloze("too short", rng) is None


def test_relative_margin_and_filters_are_counted_on_hand_made_rankings():
    corpus = pd.DataFrame({"content_hash": ["a", "b", "b", "c", "d", "e"],
                           "similarity_groups": [["g"], [], [], ["g"], [], []]})
    pairs = pd.DataFrame({"anchor_row": [0], "positive_row": [1]})
    ranked = Candidates(indices=np.array([[5, 0, 1, 2, 3, 4]]), scores=np.array([[9.0, 8.0, 7.0, 6.0, 5.0, 4.0]]),
                        positive_scores=np.array([6.0]))
    cfg = MinePairsConfig(num_negatives=2, range_min=1, range_max=6, relative_margin=0.9, miners=["bm25"])
    chosen, removed = select_negatives(pairs, corpus, {"bm25": ranked}, None, cfg, np.random.default_rng(0))
    # rank 0 (row 5) is skipped by range_min; rows 0 and 1 are the pair itself; row 2 duplicates the
    # positive's text; row 3 shares group g with the anchor; row 4 (5.0 <= 0.9 * 6.0) is kept.
    assert chosen[0][0] == 4
    assert removed["self"] == 2 and removed["duplicate"] == 1 and removed["same_group"] == 1
    assert removed["random_fill"] == 1 and chosen[0][1] not in (0, 1, 3)
    strict = MinePairsConfig(num_negatives=1, range_min=0, range_max=6, relative_margin=0.5, miners=["bm25"])
    _, removed = select_negatives(pairs, corpus, {"bm25": ranked}, None, strict, np.random.default_rng(0))
    assert removed["relative_margin"] == 2  # rows 5 (9.0) and 4 (5.0) both exceed 0.5 * 6.0


def test_bm25_ranks_the_lexical_match_first():
    corpus = ["graph neural networks for molecules", "speech recognition", "robot control policies"]
    ranked = bm25_candidates(["molecules graph"], corpus, np.array([0]), k=3)
    assert ranked.indices[0][0] == 0 and ranked.positive_scores[0] == ranked.scores[0][0] > 0


def test_bm25_gives_no_candidates_to_an_anchor_of_only_stop_words():
    ranked = bm25_candidates(["the of and"], ["graph neural networks", "speech recognition"], np.array([0]), k=2)
    assert (ranked.indices[0] == -1).all()


def test_only_groups_of_two_up_to_max_group_size_count_for_similarity():
    groups = [["page:a", "solo", "cs.LG"], ["page:a", "cs.LG"], ["cs.LG"], []]
    assert similarity_groups(groups, max_group_size=2) == [["page:a"], ["page:a"], [], []]
    assert similarity_groups(groups, max_group_size=3) == [["page:a", "cs.LG"], ["page:a", "cs.LG"], ["cs.LG"], []]


def test_labelled_pairs_are_read_from_csv_or_parquet_and_checked(tmp_path):
    assert read_labelled_pairs("") is None
    frame = pd.DataFrame({"anchor_id": ["p1", "p2"], "positive_id": ["p3", "p4"]})
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    frame.to_parquet(tmp_path / "pairs.parquet", index=False)
    for name in ("pairs.csv", "pairs.parquet"):
        pd.testing.assert_frame_equal(read_labelled_pairs(str(tmp_path / name)), frame)
    frame[["anchor_id"]].to_csv(tmp_path / "half.csv", index=False)
    with pytest.raises(PapersimError, match=r"half\.csv: needs columns anchor_id and positive_id \(missing: positive_id\)"):
        read_labelled_pairs(str(tmp_path / "half.csv"))
    with pytest.raises(PapersimError, match=r"absent\.csv: labelled pairs file not found"):
        read_labelled_pairs(str(tmp_path / "absent.csv"))


def test_mine_pairs_keeps_test_papers_out_of_every_pair(encode):
    papers = corpus_frame()
    cfg = MinePairsConfig(val_fraction=0.2, test_fraction=0.2, num_negatives=2, range_max=20, max_group_size=20)
    result = mine_pairs(papers, cfg, encode)
    split = dict(zip(result.split["paper_id"], result.split["split"]))
    for name, pairs in (("train", result.train), ("val", result.val)):
        used = set(pairs["anchor_id"]) | set(pairs["positive_id"]) | {p for ids in pairs["negative_ids"] for p in ids}
        assert used and {split[p] for p in used} == {name}
        assert not pairs.duplicated(["anchor", "positive"]).any()
        assert pairs["negative_ids"].map(len).eq(2).all()
        assert all(a not in negs and b not in negs
                   for a, b, negs in zip(pairs["anchor_id"], pairs["positive_id"], pairs["negative_ids"]))
    sources = result.report["pairs"]["train"]
    assert sources["title_abstract"] > 0 and sources["co_listed"] > 0
    assert set(result.report["negatives_removed"]["train"]) == {"self", "duplicate", "same_group", "relative_margin"}
    again = mine_pairs(papers, cfg, encode)
    pd.testing.assert_frame_equal(result.train, again.train)  # deterministic for a seed


def test_short_titles_get_self_supervised_pairs_and_labelled_pairs_stay_within_a_split(encode):
    papers = corpus_frame(40)
    papers.loc[:9, "title"] = "Intro"
    cfg = MinePairsConfig(val_fraction=0.0, test_fraction=0.5, num_negatives=1, range_max=10, co_listing=False)
    split = dict(zip(papers["paper_id"], assign_splits(papers["paper_id"].tolist(), cfg)))
    train_ids = [p for p in papers["paper_id"] if split[p] == "train"]
    test_ids = [p for p in papers["paper_id"] if split[p] == "test"]
    labelled = pd.DataFrame({"anchor_id": [train_ids[0], train_ids[1]], "positive_id": [train_ids[2], test_ids[0]]})
    result = mine_pairs(papers, cfg, encode, labelled)
    counts = result.report["pairs"]["train"]
    assert counts["self_supervised"] == sum(1 for p in train_ids if int(p[1:]) <= 9)
    assert counts["labelled"] == 1  # the pair crossing into the test split is dropped


def test_dense_miner_without_an_encoder_is_an_error():
    with pytest.raises(ValueError, match="no encoder"):
        mine_pairs(corpus_frame(10), MinePairsConfig(), None)

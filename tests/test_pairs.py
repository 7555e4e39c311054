import numpy as np
import pandas as pd
import pytest

from papersim.encoders.load import load_encoder
from papersim.errors import PapersimError
from papersim.training.pairs import (
    MinePairsConfig,
    assign_splits,
    group_split,
    inverse_cloze,
    mine_pairs,
    read_labelled_pairs,
    split_by_listing,
)
from tests.conftest import corpus_frame


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


def test_only_a_seeded_sample_of_pairs_is_mined_and_it_is_stable_as_papers_are_added(encode):
    cfg = MinePairsConfig(val_fraction=0.2, test_fraction=0.2, num_negatives=1, miners=["bm25"], max_pairs=10,
                          max_val_pairs=3)
    small = mine_pairs(corpus_frame(60), cfg, None)
    assert len(small.train) == 10 and len(small.val) == 3
    assert small.report["pairs_available"]["train"] > 10 and small.report["pairs"]["train"]["total"] == 10
    uncapped = mine_pairs(corpus_frame(60), MinePairsConfig(val_fraction=0.2, test_fraction=0.2, num_negatives=1,
                                                            miners=["bm25"], max_pairs=0, max_val_pairs=0), None)
    assert len(uncapped.train) == small.report["pairs_available"]["train"]
    grown = mine_pairs(corpus_frame(64), cfg, None)  # four more papers: most sampled pairs stay
    kept = set(zip(small.train["anchor_id"], small.train["positive_id"]))
    assert len(kept & set(zip(grown.train["anchor_id"], grown.train["positive_id"]))) >= 7


def listed_frame(n: int = 120):
    """corpus_frame with every paper on one of 24 listing pages (5 papers each)."""
    papers = corpus_frame(n)
    return papers.assign(groups=[[f"page:{i % 24}"] for i in range(n)])


def test_whole_listings_are_held_out_and_none_of_their_papers_reaches_a_pair_or_a_choice(tiny_model_dir):
    from papersim.training.selection import choose_serving
    from papersim.training.train import TrainConfig

    papers = listed_frame()
    cfg = MinePairsConfig(val_fraction=0.1, test_fraction=0.1, group_test_fraction=0.25, group_val_fraction=0.25,
                          miners=["bm25"], num_negatives=1, range_max=20)
    result = mine_pairs(papers, cfg, None)
    split = result.split.set_index("paper_id")
    held = {g: group_split(g, cfg) for g in {f"page:{i}" for i in range(24)}}
    assert {"test", "val", "train"} <= set(held.values())
    for pid, groups in zip(papers["paper_id"], papers["groups"]):
        page = held[groups[0]]
        if page != "train":  # every paper of a held-out listing is in that listing's split, and says so
            assert split.loc[pid, "split"] == page and list(split.loc[pid, "unseen_groups"]) == groups
        else:
            assert len(split.loc[pid, "unseen_groups"]) == 0
    unseen_test = {pid for pid, groups in zip(papers["paper_id"], papers["groups"]) if held[groups[0]] == "test"}
    test = set(split.index[split["split"] == "test"])
    assert unseen_test and unseen_test < test  # known-listing test papers besides (by their own hash)
    choice = set(split.index[split["choice"]])  # the similar task's choice papers: held-out val listings, half the rest
    val = set(split.index[split["split"] == "val"])
    assert {pid for pid in val if len(split.loc[pid, "unseen_groups"])} <= choice <= val
    for pairs in (result.train, result.val):
        used = (set(pairs["anchor_id"]) | set(pairs["positive_id"])
                | {p for ids in pairs.get("negative_ids", []) for p in ids})
        assert not used & test and not used & choice  # no pair, so no early stopping, saw a choice paper
    assert result.report["unseen_listings"]["test"]["papers"] == len(unseen_test)
    # The choices: the similar task is chosen on the validation listings alone, over non-test papers.
    asked = []

    def spy(texts):
        asked.extend(texts)
        return np.eye(len(texts), 8, dtype=np.float32)

    passages = dict(zip(papers["paper_id"], papers["title"] + ". " + papers["abstract"]))
    serving = choose_serving(papers, result.split, {"trained": spy, "base": spy}, TrainConfig(), {"co_listed": 9})
    evidence = serving.similar.evidence
    assert evidence["evidence"].startswith("validation listings held out") and evidence["papers"] > 0
    assert evidence["groups"] == sum(s == "val" for s in held.values())
    assert asked and not {passages[p] for p in test} & set(asked)  # no test paper was encoded for any choice
    # Stable as papers join: a new paper of a held-out listing joins that listing's split.
    grown = pd.concat([papers, papers.iloc[[0]].assign(paper_id="new", content_hash="hn")], ignore_index=True)
    again = mine_pairs(grown, cfg, None).split.set_index("paper_id")
    assert again.loc["new", "split"] == split.loc["p0", "split"] and (again.loc[split.index, "split"] ==
                                                                    split["split"]).all()


def test_half_the_known_listing_validation_papers_are_kept_for_the_choice_and_out_of_every_pair():
    ids = [f"p{i}" for i in range(2000)]
    cfg = MinePairsConfig(val_fraction=0.3, test_fraction=0.1)
    split = split_by_listing(ids, [[] for _ in ids], cfg)  # no listings: every validation paper is known-listing
    val = split[split["split"] == "val"]
    assert 0.4 < val["choice"].mean() < 0.6 and not split.loc[split["split"] != "val", "choice"].any()
    assert split_by_listing(ids + ["new"], [[] for _ in ids] + [[]], cfg)["choice"][:2000].tolist() == \
        split["choice"].tolist()  # stable as papers join
    none = split_by_listing(ids, [[] for _ in ids], MinePairsConfig(val_fraction=0.3, val_choice_fraction=0))
    assert not none["choice"].any()
    with pytest.raises(ValueError, match="val_choice_fraction"):
        MinePairsConfig(val_choice_fraction=1.5)

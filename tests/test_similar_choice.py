"""The similar task's choice on held-out validation listings: encoder, paper view, lexical query, weight."""

import numpy as np

from papersim.encoders.windows import PaperView
from papersim.evaluation.sets import colisting_set
from papersim.training.similar_choice import choose_encoder, select_similar
from papersim.training.train import TrainConfig
from tests.test_selection import bag_of_words, listed_corpus, noise


def by_name(embedders: dict):
    """A paper_embed whose vectors are the same whatever the view, and the encoder names it has."""
    return (lambda name, view: embedders[name]), list(embedders)


def task(n: int = 96, pages: int = 12, listed: int | None = None):
    """The first half of `n` papers asking for their page-mates: paper i is on page i % pages (its abstract
    names its shelf, so a bag of words finds its page-mates), only the first `listed` pages a listing (the
    rest are papers of no listing: distractors)."""
    listed = pages if listed is None else listed
    page = [i % pages for i in range(n)]
    papers = listed_corpus(n).assign(
        abstract=lambda f: [f"{a} Shelved under shelf{k}." for a, k in zip(f["abstract"], page)],
        groups=[[f"page{k}"] if k < listed else [] for k in page])
    return colisting_set(papers, {f"p{i}" for i in range(n // 2)}, set(papers["paper_id"]), 100, "similar_val")


def test_the_similar_task_takes_the_encoder_whose_neighbours_share_the_page_and_records_why():
    choice = TrainConfig().similar_choice()
    good = select_similar(task(), *by_name({"trained": bag_of_words, "base": noise}), choice, "english")
    assert good.encoder == "trained" and "the trained encoder" in good.reason
    assert good.evidence["trained/precision@10"] > good.evidence["base/precision@10"] + 0.3
    assert set(good.evidence["lexical"]["by_setting"]) == {"paper", "mlt25", "mlt100"}
    assert set(good.evidence["view"]["by_setting"]) == {"256", "128"}
    assert len(good.evidence["alpha"]["by_weight"]) == 11 and good.evidence["trained_minus_base"]["ci95"][0] > 0
    bad = select_similar(task(), *by_name({"trained": noise, "base": bag_of_words}), choice, "english")
    assert bad.encoder == "base" and "none qualifies" in bad.reason and "the base encoder" in bad.reason
    # Made to serve the noise encoder, the fusion leans on the words: a low dense weight, far above noise alone.
    forced = select_similar(task(), *by_name({"trained": noise}), TrainConfig(similar_encoder="trained")
                            .similar_choice(), "english")
    assert forced.encoder == "trained" and forced.fusion.alpha <= 0.3
    assert forced.evidence["served/precision@10"] > forced.evidence["trained/precision@10"] + 0.3


def test_the_paper_view_and_the_lexical_query_keep_their_defaults_unless_beaten_beyond_noise():
    asked = []

    def paper_embed(name, view):  # 128 tokens reads the paper well, 256 is noise: 128 must win beyond noise
        asked.append((name, view))
        return bag_of_words if view == PaperView(128, 1) else noise

    cfg = TrainConfig(similar_encoder="base", similar_alpha=1.0)  # dense only: the view alone decides
    chosen = select_similar(task(), paper_embed, ["base"], cfg.similar_choice(), "english")
    assert chosen.view == PaperView(128, 1) and "paper view beat the default beyond noise" in chosen.reason
    assert chosen.evidence["view"]["picked_minus_default_other_half"]["ci95"][0] > 0
    assert set(asked) == {("base", PaperView(256, 1)), ("base", PaperView(128, 1))}
    # Equal views: the default (the first listed) serves; so does the default lexical query.
    same = select_similar(task(), *by_name({"base": bag_of_words}), cfg.similar_choice(), "english")
    assert same.view == PaperView(256, 1) and same.lexical == "paper" and "the defaults" in same.reason
    mlt_first = TrainConfig(similar_encoder="base", similar_lexical=["mlt50", "paper"]).similar_choice()
    assert mlt_first.lexical[0] == ("mlt", 50)


def test_on_one_two_or_three_listings_no_choice_leaves_its_default_however_much_better_on_every_paper():
    """With c listings no sign-flip p falls below 2/2^c: 3 listings cannot show p < 0.05 (2/8), whatever the
    papers say. The trained encoder and the 128-token view find every paper's page-mates, the base encoder
    and 256 tokens find noise; still the base encoder, 256 tokens, the whole paper and 0.5 serve."""
    def paper_embed(name, view):
        return bag_of_words if name == "trained" or view == PaperView(128, 1) else noise

    for listings in (1, 2, 3):
        for least in (6, 2):  # the stated minimum, and the smallest the config allows: the test alone decides
            choice = TrainConfig(similar_min_listings=least).similar_choice()
            similar = select_similar(task(96, pages=4, listed=listings), paper_embed, ["trained", "base"], choice,
                                     "english")
            evidence = similar.evidence
            assert evidence["trained/precision@10"] > evidence["base/precision@10"] + 0.5, listings
            assert (similar.encoder, similar.view, similar.lexical, similar.fusion.alpha) == (
                "base", PaperView(256, 1), "paper", 0.5), (listings, least)
            if least == 6:
                named = "1 listing" if listings == 1 else f"{listings} listings"
                assert f"only {named}, fewer than similar_min_listings 6: the base encoder" in similar.reason
            else:
                assert evidence["trained_minus_base"]["p"] >= 2 / 2 ** listings and "the base encoder" in similar.reason
            # with a known block of as few listings beside it, where trained is better on every paper too
            both = select_similar(task(96, pages=4, listed=listings), paper_embed, ["trained", "base"], choice,
                                  "english", known=task(96, pages=4, listed=listings))
            assert (both.encoder, both.view, both.fusion.alpha) == ("base", PaperView(256, 1), 0.5), listings


def test_without_validation_listings_the_similar_task_serves_the_base_encoder_and_the_defaults():
    similar = select_similar(None, *by_name({"trained": noise, "base": bag_of_words}),
                             TrainConfig().similar_choice(), "english")
    assert similar.encoder == "base" and similar.lexical == "paper" and similar.view == PaperView(256, 1)
    assert similar.fusion.alpha == 0.5
    assert "nothing to choose on" in similar.reason and similar.evidence == {"papers": 0, "evidence": "none"}
    fixed = select_similar(None, *by_name({}), TrainConfig(similar_encoder="base", similar_alpha=0.3,
                                                           similar_views=["128x4"]).similar_choice(), "english")
    assert fixed.encoder == "base" and fixed.fusion.alpha == 0.3 and fixed.view == PaperView(128, 4)


def test_a_bad_view_or_lexical_name_is_refused_with_the_expected_form():
    import pytest

    with pytest.raises(ValueError, match="TOKENS or TOKENSxWINDOWS"):
        TrainConfig(similar_views=["long"])
    with pytest.raises(ValueError, match="expected paper, mltN"):
        TrainConfig(similar_lexical=["abstract"])
    with pytest.raises(ValueError, match="at least one setting"):
        TrainConfig(similar_views=[])
    with pytest.raises(ValueError, match="similar_min_listings must be at least 2"):
        TrainConfig(similar_min_listings=1)
    assert np.isclose(TrainConfig().similar_choice().template().alpha, 0.5)


def scores(n_listings: int, per_listing: int = 3, **gains: float) -> tuple[dict, list[str]]:
    """Per-paper precision@10 on `n_listings` listings: base 0.2, each named candidate 0.2 + its gain."""
    clusters = [f"page{i}" for i in range(n_listings) for _ in range(per_listing)]
    base = np.full(len(clusters), 0.2)
    return {"base": base, **{name: base + gain for name, gain in gains.items()}}, clusters


def test_an_encoder_serves_only_better_on_known_listings_and_holding_on_unseen_ones():
    choice = TrainConfig().similar_choice()  # min 6 listings, at most 0.005 below base on unseen listings
    known, known_clusters = scores(8, trained=0.10, merged_0_5=0.05)
    unseen, unseen_clusters = scores(8, trained=-0.02, merged_0_5=0.0)
    rename = {"merged_0_5": "merged_0.5"}
    known, unseen = ({rename.get(k, k): v for k, v in block.items()} for block in (known, unseen))
    clusters = {"known": known_clusters, "unseen": unseen_clusters}
    encoder, reason, evidence = choose_encoder(["merged_0.5", "trained"], {"known": known, "unseen": unseen},
                                               clusters, choice)
    # trained gains most on known listings but pays 0.02 on unseen ones: the merge serves
    assert encoder == "merged_0.5" and "merged encoder (0.5 base + 0.5 trained)" in reason
    assert evidence["candidates"]["trained"]["gains"] and not evidence["candidates"]["trained"]["holds"]
    assert "p < 0.025" in evidence["rule"]  # two candidates: two chances, half the level each
    # a loss on unseen listings within max_unseen_loss and within noise is allowed; the larger known gain serves
    unseen["trained"] = unseen["base"] + np.where(np.arange(24) // 3 % 2, -0.018, 0.010)  # -0.004 on average
    assert choose_encoder(["merged_0.5", "trained"], {"known": known, "unseen": unseen}, clusters, choice)[0] == "trained"
    # equal gains: the one nearer base
    known["trained"] = known["merged_0.5"]
    assert choose_encoder(["merged_0.5", "trained"], {"known": known, "unseen": unseen}, clusters, choice)[0] == "merged_0.5"
    # worse beyond noise on unseen listings (on every listing), if by little: base
    unseen = {**unseen, "trained": unseen["base"] - 0.004, "merged_0.5": unseen["base"] - 0.004}
    assert choose_encoder(["merged_0.5", "trained"], {"known": known, "unseen": unseen}, clusters,
                          TrainConfig(similar_max_unseen_loss=0.01).similar_choice())[0] == "base"


def test_no_choice_of_encoder_on_one_two_or_three_listings_of_either_block():
    for listings in (1, 2, 3):
        for least in (6, 2):
            choice = TrainConfig(similar_min_listings=least).similar_choice()
            known, known_clusters = scores(listings, trained=0.5)
            unseen, unseen_clusters = scores(8, trained=0.5)
            for blocks, clusters in (({"known": known, "unseen": unseen}, {"known": known_clusters,
                                                                             "unseen": unseen_clusters}),
                                     ({"known": unseen, "unseen": known}, {"known": unseen_clusters,
                                                                            "unseen": known_clusters}),
                                     ({"unseen": known}, {"unseen": known_clusters})):
                encoder, reason, evidence = choose_encoder(["trained"], blocks, clusters, choice)
                assert encoder == "base" and reason.endswith("the base encoder"), (listings, least, reason)


def test_a_merged_encoder_is_chosen_by_name_and_served_as_merged():
    merged = select_similar(task(), *by_name({"base": noise, "merged_0.5": bag_of_words, "trained": noise}),
                            TrainConfig().similar_choice(), "english", known=task())
    assert (merged.encoder, merged.merge_weight) == ("merged", 0.5)
    assert merged.describe().startswith("merged encoder (0.5 base + 0.5 trained)")
    assert merged.evidence["encoder"]["candidates"]["merged_0.5"]["qualifies"]
    assert merged.evidence["known/merged_0.5/served_precision@10"] > merged.evidence["known/base/served_precision@10"]

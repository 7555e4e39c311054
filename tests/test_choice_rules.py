"""A setting leaves its default only when it wins on queries (or listings) it was not picked on."""

import numpy as np

from papersim.training.choice_rules import choose_setting, choose_weight


def test_a_weight_leaves_the_default_only_when_it_wins_on_queries_it_was_not_picked_on():
    rng = np.random.default_rng(0)
    flat = {a: np.full(40, 0.5) for a in (0.0, 0.5, 1.0)}
    assert choose_weight(flat, 0.5)[0] == 0.5  # ties: the default
    clear = {0.0: np.full(40, 0.9), 0.5: np.full(40, 0.5) + rng.normal(0, 0.01, 40), 1.0: np.full(40, 0.2)}
    alpha, evidence = choose_weight(clear, 0.5)
    assert alpha == 0.0 and evidence["picked_minus_default_other_half"]["ci95"][0] > 0
    assert set(evidence["by_weight"]) == {"0", "0.5", "1"}
    # Better on the even (picking) half only: on the other half it is no better, so the default stays.
    lucky = {0.5: np.full(40, 0.5), 0.8: np.tile([0.9, 0.5], 20)}
    alpha, evidence = choose_weight(lucky, 0.5)
    assert evidence["picked_on_half"] == 0.8 and alpha == 0.5
    assert evidence["picked_minus_default_other_half"]["mean"] == 0


def test_a_named_setting_needs_a_win_beyond_noise_over_listings_not_papers():
    # 12 listings of 5 papers: "mlt25" wins by 0.2 in every listing; "mlt100" wins big in one listing only.
    clusters = [f"page{i // 5}" for i in range(60)]
    base = np.full(60, 0.3)
    scores = {"paper": base, "mlt25": base + 0.2, "mlt100": np.where(np.arange(60) < 5, 0.9, 0.3)}
    chosen, evidence = choose_setting(scores, "paper", clusters, min_clusters=6)
    assert chosen == "mlt25" and evidence["picked_minus_default_other_half"]["ci95"][0] > 0
    # confirmed on the 6 other listings: the exact sign-flip p of 6 listings all better, 2/64
    assert evidence["other_half_listings"] == 6 and evidence["picked_minus_default_other_half"]["p"] == round(2 / 64, 4)
    one_listing = {"paper": base, "mlt100": scores["mlt100"]}  # 5 papers that move together are one draw
    chosen, evidence = choose_setting(one_listing, "paper", clusters)
    assert chosen == "paper"
    # Ties go to the default, wherever it is listed; then to the order given.
    assert choose_setting({"a": base, "b": base}, "b")[0] == "b"
    assert choose_setting({"a": base, "b": base, "c": base + 0.1}, "a", label=str.upper)[1]["by_setting"] == {
        "A": 0.3, "B": 0.3, "C": 0.4}


def test_on_one_two_or_three_listings_a_setting_better_on_every_paper_by_a_lot_keeps_the_default():
    """Each listing's papers move together: with c listings no sign-flip p falls below 2/2^c, and a half of
    3 listings is 1 or 2 of them. The other setting is better on every paper by 0.6; the default stays, and
    the evidence counts listings, not papers."""
    for listings in (1, 2, 3):
        clusters = [f"page{i % listings}" for i in range(40)]
        scores = {"paper": np.full(40, 0.2), "mlt25": np.full(40, 0.8) + np.linspace(0, 0.01, 40)}
        for least in (2, 6):
            chosen, evidence = choose_setting(scores, "paper", clusters, min_clusters=least)
            assert chosen == "paper", (listings, least)
            assert evidence["other_half_listings"] == listings // 2
            assert "too_few" in evidence or evidence["picked_minus_default_other_half"]["p"] >= 0.05
    # 4 listings, 2 to confirm on: no stated minimum stops it, the exact test does (p = 2/4).
    clusters = [f"page{i % 4}" for i in range(40)]
    chosen, evidence = choose_setting({"paper": np.full(40, 0.2), "mlt25": np.full(40, 0.8)}, "paper", clusters)
    assert chosen == "paper" and evidence["picked_minus_default_other_half"]["p"] == 0.5
    chosen, evidence = choose_setting({"paper": np.full(40, 0.2), "mlt25": np.full(40, 0.8)}, "paper", clusters,
                                      min_clusters=6)
    assert chosen == "paper" and evidence["too_few"] == "2 to confirm on, fewer than 6 listings"

"""Fusing BM25 and dense rankings: normalisation, convex and reciprocal-rank fusion."""

import pytest

from papersim.retrieval.fusion import (
    Fusion,
    fuse,
    fuse_rankings,
    normalise,
)


def test_normalise_maps_scores_to_zscores_or_unit_range_and_survives_constant_lists():
    assert normalise([3.0, 1.0, 2.0], "minmax").tolist() == [1.0, 0.0, 0.5]
    z = normalise([3.0, 1.0, 2.0], "zscore")
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0) and z[0] > z[2] > z[1]
    assert normalise([2.0, 2.0], "minmax").tolist() == [1.0, 1.0]
    assert normalise([2.0, 2.0], "zscore").tolist() == [0.0, 0.0]


def test_convex_fusion_weighs_normalised_scores_and_floors_missing_documents():
    lexical = (["a", "b", "c"], [9.0, 3.0, 1.0])  # minmax: a 1, b 0.25, c 0
    dense = (["b", "d", "a"], [0.9, 0.8, 0.5])  # minmax: b 1, d 0.75, a 0
    fusion = Fusion(method="convex", alpha=0.5, normalisation="minmax")
    keys, scores = fuse(lexical, dense, fusion)
    # a: .5*0 + .5*1 = .5; b: .5*1 + .5*.25 = .625; d: .5*.75 + .5*0 (missing: floor 0) = .375; c: 0
    assert keys == ["b", "a", "d", "c"] and scores == pytest.approx([0.625, 0.5, 0.375, 0.0])
    assert fuse(lexical, dense, Fusion(alpha=1.0, normalisation="minmax"))[0][:3] == ["b", "d", "a"]
    assert fuse(lexical, dense, Fusion(alpha=0.0, normalisation="minmax"))[0][:2] == ["a", "b"]


def test_a_query_without_lexical_matches_ranks_by_dense_alone():
    assert fuse(([], []), (["y", "x"], [0.9, 0.7]), Fusion(alpha=0.3))[0] == ["y", "x"]
    assert fuse_rankings({}, {"q": (["x", "y"], [0.7, 0.9])}, Fusion())["q"] == ["y", "x"]  # ordered by score


def test_rrf_sums_reciprocal_ranks_and_cuts_at_depth():
    lexical, dense = (["a", "b", "c"], [3.0, 2.0, 1.0]), (["c", "a"], [0.9, 0.8])
    keys, scores = fuse(lexical, dense, Fusion(method="rrf", rrf_k=60))
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62 (halved: equal weights)
    assert keys == ["a", "c", "b"] and scores[0] == pytest.approx((1 / 61 + 1 / 62) / 2)
    assert fuse(lexical, dense, Fusion(method="rrf", depth=1))[0] == ["c", "a"]  # tie 1/61 each: better dense first


def test_fusion_rejects_unknown_methods_and_alpha_outside_unit_interval():
    with pytest.raises(ValueError, match="method"):
        Fusion(method="sum")
    with pytest.raises(ValueError, match="alpha"):
        Fusion(alpha=1.5)
    assert Fusion.from_dict(Fusion(alpha=0.7).to_dict()) == Fusion(alpha=0.7)


def test_the_dense_weight_moves_a_document_as_computed_by_hand():
    # Dense puts each query's own document first, BM25 ranks it third.
    lexical = {f"q{i}": ([f"n{i}", f"m{i}", f"d{i}"], [5.0, 4.0, 3.9]) for i in range(5)}
    dense = {f"q{i}": ([f"d{i}", f"n{i}", f"m{i}"], [0.9, 0.5, 0.4]) for i in range(5)}
    # By hand, z-scores (population std): BM25 n 1.409, m -0.604, d -0.805; dense d 1.389, n -0.463, m -0.926.
    # d overtakes m from alpha 0.080 and n from alpha 0.545: at alpha 0 it is third, up to 0.5 second, from 0.6 first.
    expected = {0.0: 3, **{a / 10: 2 for a in range(1, 6)}, **{a / 10: 1 for a in range(6, 11)}}
    for alpha, rank in expected.items():
        ranked = fuse_rankings(lexical, dense, Fusion(alpha=alpha))
        assert all(ranked[f"q{i}"].index(f"d{i}") + 1 == rank for i in range(5)), alpha

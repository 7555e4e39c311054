"""The co-listing loss: co-listed papers are never each other's in-batch negatives."""

import math

import pytest
import torch

from papersim.training.losses import NO_GROUP, group_codes, masked_ranking_loss, shared_group_mask


def test_group_codes_pad_and_share_codes_across_rows():
    codes = group_codes([["page:a"], [], ["page:b", "cat"]], [["page:a", "cat"], [], ["page:b"]], width=3)
    assert codes == [[0, 1, NO_GROUP], [NO_GROUP] * 3, [2, 1, NO_GROUP]]
    mask = shared_group_mask(torch.tensor(codes))
    assert mask.tolist() == [[True, False, True], [False, False, False], [True, False, True]]


def test_a_co_listed_candidate_is_neither_positive_nor_negative():
    # Row 0 and row 1 are on one page; row 2 on another. Anchor 0 is as close to positive 1 as to its own.
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    positives = torch.tensor([[1.0, 0.1], [1.0, 0.1], [-1.0, 0.1]])
    same_page = torch.tensor([[0], [0], [1]])
    other_pages = torch.tensor([[0], [1], [2]])
    masked = masked_ranking_loss(anchors, positives, same_page, scale=20.0)
    unmasked = masked_ranking_loss(anchors, positives, other_pages, scale=20.0)
    assert masked < unmasked  # without the mask, positive 1 is a hard "negative" of anchor 0 (and back)
    # With every other candidate masked, each row's softmax holds its positive alone: the loss is zero.
    assert masked_ranking_loss(anchors, positives, torch.tensor([[0], [0], [0]]), scale=20.0).item() == \
        pytest.approx(0.0, abs=1e-6)


def test_unrelated_rows_give_the_symmetric_in_batch_loss():
    anchors = torch.eye(4)
    positives = torch.eye(4)
    loss = masked_ranking_loss(anchors, positives, torch.full((4, 1), NO_GROUP), scale=1.0)
    expected = -math.log(math.e / (math.e + 3))  # cosine 1 against three cosines 0, both directions alike
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_mined_negatives_join_the_anchor_side_softmax():
    anchors, positives = torch.eye(2), torch.eye(2)
    codes = torch.full((2, 1), NO_GROUP)
    close = torch.tensor([[1.0, 0.01], [0.01, 1.0]])  # each anchor's near twin as a hard negative
    far = -torch.eye(2)
    assert masked_ranking_loss(anchors, positives, codes, 20.0, close) > \
        masked_ranking_loss(anchors, positives, codes, 20.0, far)

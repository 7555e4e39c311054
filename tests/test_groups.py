"""The group-size rule shared by pair mining and the held-out evaluation set."""

from papersim.data.groups import similarity_groups


def test_only_groups_of_two_up_to_max_group_size_count_for_similarity():
    groups = [["page:a", "solo", "cs.LG"], ["page:a", "cs.LG"], ["cs.LG"], []]
    assert similarity_groups(groups, max_group_size=2) == [["page:a"], ["page:a"], [], []]
    assert similarity_groups(groups, max_group_size=3) == [["page:a", "cs.LG"], ["page:a", "cs.LG"], ["cs.LG"], []]

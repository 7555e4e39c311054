"""Filters: what a date range or a group keeps, and the requests refused with their rule."""

import numpy as np
import pytest

from papersim.errors import PapersimError
from papersim.retrieval.filters import Filter, allowed_rows, date_bounds, group_rows, show_date

DATES = ["2019-03-12", "2019-03", "2019", None, "--03-20", "2020-01-01", "2018-12-31"]


def rows(flt: Filter, groups=None) -> list[int]:
    return allowed_rows(flt, len(DATES), date_bounds(DATES), groups).tolist()


def test_a_date_of_any_precision_spans_its_days_and_undated_papers_match_no_date_filter():
    first, last = date_bounds(DATES)
    assert [str(d) for d in first[:3]] == ["2019-03-12", "2019-03-01", "2019-01-01"]
    assert [str(d) for d in last[:3]] == ["2019-03-12", "2019-03-31", "2019-12-31"]
    assert np.isnat(first[3]) and np.isnat(first[4])  # no date; a day without its year
    assert rows(Filter(since="2019-03-15")) == [1, 2, 5]  # March 2019 and 2019 reach past the 15th
    assert rows(Filter(until="2019-02")) == [2, 6]  # only "2019" (from January) and 2018 start by February
    assert rows(Filter(since="2019", until="2019")) == [0, 1, 2]
    assert rows(Filter()) == list(range(len(DATES)))  # no filter: every paper, dated or not


def test_groups_keep_papers_in_any_of_them():
    groups = group_rows([["a"], ["b", "c"], [], ["c"], None, ["a"], ["d"]])
    assert rows(Filter(groups=("c",)), groups) == [1, 3]
    assert rows(Filter(groups=("a", "d", "unknown")), groups) == [0, 5, 6]
    assert rows(Filter(until="2019", groups=("a",)), groups) == [0]  # both: dated by 2019 and in a


@pytest.mark.parametrize("kwargs, message", [
    ({"since": "2019-13"}, "since: '2019-13' is not a date"),
    ({"until": "2019-02-30"}, "until: '2019-02-30' is not a date"),
    ({"since": "yesterday"}, "since: 'yesterday' is not a date (YYYY-MM-DD, YYYY-MM or YYYY)"),
    ({"since": "2020", "until": "2019-06"}, "since 2020 is after until 2019-06"),
    ({"groups": tuple(f"g{i}" for i in range(21))}, "too many groups in one filter (21, at most 20)"),
])
def test_a_bad_filter_is_refused_with_its_rule(kwargs, message):
    with pytest.raises(PapersimError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Filter(**kwargs)


def test_an_index_without_dates_says_to_rebuild_it():
    with pytest.raises(PapersimError, match="holds no paper dates: rebuild it"):
        allowed_rows(Filter(since="2019"), 3, None, None)


def test_a_date_shows_as_a_listing_shows_it():
    assert [show_date(d) for d in ("2019-03-12", "2019-03", "2019", "--03-20", None, "2019-13")] == [
        "12 Mar 2019", "Mar 2019", "2019", "Mar 20", "", "2019-13"]

"""Reading a paper's optional metadata: dates of any common form as ISO 8601, author lists, categories, links."""

import pyarrow as pa
import pytest

from papersim.data.metadata import (
    map_unique,
    paper_url,
    parse_authors,
    parse_categories,
    parse_date,
    with_year,
)


@pytest.mark.parametrize("text, iso", [
    ("2019-03-12", "2019-03-12"),
    ("2019-03", "2019-03"),
    ("2019", "2019"),
    (" 2019-03-12T17:59:53Z ", "2019-03-12"),
    ("2019-03-12 23:30:00-05:00", "2019-03-12"),  # the day as the source writes it, not moved to UTC
    ("2019/03/12", "2019-03-12"),
    ("Mar 12, 2019", "2019-03-12"),
    ("12 Mar 2019", "2019-03-12"),
    ("12 March 2019", "2019-03-12"),
    ("March 2019", "2019-03"),
    ("Sept. 3, 2001", "2001-09-03"),
    ("Tue, 12 Mar 2019 17:59:53 GMT", "2019-03-12"),
    ("Mar 20", "--03-20"),  # a listing page's header
    ("--02-29", "--02-29"),  # some year has it
    ("", None),
    ("   ", None),
    (None, None),
])
def test_dates_read_as_iso_8601_of_the_precision_given(text, iso):
    assert parse_date(text) == iso


@pytest.mark.parametrize("text, why", [
    ("2019-02-30", "no such day"),
    ("2019-13", "no such month"),
    ("0999", "years 1000-2100"),
    ("2101-01-01", "years 1000-2100"),
    ("Foo 12, 2019", "not a date"),
    ("March", "not a date"),
    ("20190312", "not a date"),
    ("yesterday", "not a date"),
    ("2019-03-12T25", "not a date"),
])
def test_impossible_or_unreadable_dates_are_errors(text, why):
    with pytest.raises(ValueError, match=why):
        parse_date(text)


def test_a_year_completes_a_day_without_one():
    assert with_year("--03-20", 2024) == "2024-03-20"
    assert with_year("--03-20", 0) == "--03-20" and with_year("2019-03", 2024) == "2019-03"
    assert with_year(None, 2024) is None
    with pytest.raises(ValueError, match="not a date in 2023"):
        with_year("--02-29", 2023)


@pytest.mark.parametrize("value, names", [
    ("A. Vaswani, N. Shazeer,\n and J. Uszkoreit", ["A. Vaswani", "N. Shazeer", "J. Uszkoreit"]),
    ("Ada Lovelace and Charles Babbage", ["Ada Lovelace", "Charles Babbage"]),
    ("Smith, J.; Doe, A.;", ["Smith, J.", "Doe, A."]),  # ';' present: the commas belong to the names
    ("['Ada Lovelace', ' Alan Turing ', '']", ["Ada Lovelace", "Alan Turing"]),
    ('["Grace Hopper"]', ["Grace Hopper"]),
    (["Grace Hopper", None, "  "], ["Grace Hopper"]),
    ("Alexander Anderson", ["Alexander Anderson"]),  # 'and' inside a name is no separator
    (None, []),
    ("", []),
])
def test_authors_from_lists_literals_and_strings(value, names):
    assert parse_authors(value) == names


@pytest.mark.parametrize("value, categories", [
    ("cs.LG stat.ML", ["cs.LG", "stat.ML"]),  # arXiv's metadata: space-separated
    ("cond-mat.stat-mech hep-th", ["cond-mat.stat-mech", "hep-th"]),
    ("Machine Learning", ["Machine Learning"]),  # words, not category tokens: one category
    ("cs.LG; Machine Learning", ["cs.LG", "Machine Learning"]),
    ("['cs.CV', 'cs.LG']", ["cs.CV", "cs.LG"]),
    (["stat.ML", " cs.LG "], ["stat.ML", "cs.LG"]),  # source order kept
    (None, []),
])
def test_categories_like_groups_plus_space_separated_tokens(value, categories):
    assert parse_categories(value) == categories


@pytest.mark.parametrize("url, arxiv_id, doi, link", [
    (" https://example.org/paper?id=1 ", "1706.03762", None, "https://example.org/paper?id=1"),  # url first
    ("HTTP://example.org", None, None, "HTTP://example.org"),
    (None, "1706.03762", "10.1000/x", "https://arxiv.org/abs/1706.03762"),
    (None, "arXiv:1706.03762v5", None, "https://arxiv.org/abs/1706.03762"),
    (None, "0704.0001", None, "https://arxiv.org/abs/0704.0001"),
    (None, "cs/0112017v1", None, "https://arxiv.org/abs/cs/0112017"),
    (None, "math.GT/0309136", None, "https://arxiv.org/abs/math.GT/0309136"),
    (None, "", "10.1145/3292500.3330701", "https://doi.org/10.1145/3292500.3330701"),
    (None, None, "doi:10.1000/xyz(1)", "https://doi.org/10.1000/xyz(1)"),
    (None, None, "https://dx.doi.org/10.1000/xyz", "https://doi.org/10.1000/xyz"),
    (None, None, None, None),
])
def test_a_url_is_given_or_made_from_the_arxiv_id_or_doi(url, arxiv_id, doi, link):
    assert paper_url(url, arxiv_id, doi) == link


@pytest.mark.parametrize("url, arxiv_id, doi, message", [
    ("ftp://example.org/a.pdf", None, None, "url 'ftp://example.org/a.pdf' is not an http(s) URL"),
    ("www.example.org", None, None, "url 'www.example.org' is not an http(s) URL"),
    ("https://", None, None, "is not an http(s) URL"),
    (None, "attention", None, "arxiv_id 'attention' is not an arXiv id"),
    (None, "1501.0001", None, "arxiv_id '1501.0001' is not an arXiv id"),  # 1501.00010 read as a number
    (None, "1713.01234", None, "is not an arXiv id"),  # no month 13
    (None, None, "11.1000/x", "doi '11.1000/x' is not a DOI"),
])
def test_malformed_links_name_the_field_and_value(url, arxiv_id, doi, message):
    with pytest.raises(ValueError) as err:
        paper_url(url, arxiv_id, doi)
    assert message in str(err.value)


def test_map_unique_parses_each_distinct_value_once_and_names_the_bad_rows():
    seen = []

    def parse(text):
        seen.append(text)
        return parse_date(text)

    values, errors = map_unique(pa.array(["Mar 2019", None, "soon", "Mar 2019", "soon"], pa.large_string()), parse)
    assert values.to_pylist() == ["2019-03", None, None, "2019-03", None]
    assert errors == {2: "not a date", 4: "not a date"}
    assert sorted(seen) == ["Mar 2019", "soon"]
    assert map_unique(pa.nulls(3, pa.string()), parse)[0].to_pylist() == [None] * 3

"""One reader per file format: JSONL, CSV, Parquet and saved listing pages, in bounded batches with line numbers,
metadata included."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from papersim.data import formats
from papersim.data.normalise import normalise_batch, title_id
from papersim.data.sources import SourceSpec, read_source, resolve_format
from papersim.errors import PapersimError
from tests.conftest import paper, read_all, write_jsonl, write_page

METADATA = ("authors", "date", "updated", "url", "venue", "categories")


def test_jsonl_with_a_column_mapping_reads_ids_titles_abstracts_and_groups(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"arxiv_id": "1", "titles": "T one", "summaries": "A one is long enough", "terms": ["cs.LG", "cs.AI"]},
        {"arxiv_id": "2", "titles": "T two", "summaries": "A two is long enough", "terms": "stat.ML;cs.LG"},
    ])
    spec = SourceSpec(str(path), "jsonl", name="mine", id_prefix="ax:",
                      columns={"id": "arxiv_id", "title": "titles", "abstract": "summaries", "groups": "terms"})
    _, (batch,) = read_all(spec)
    assert batch.paper_id == ["ax:1", "ax:2"]
    assert batch.title == ["T one", "T two"]
    assert batch.groups == [["cs.AI", "cs.LG"], ["cs.LG", "stat.ML"]]
    assert batch.lines == [1, 2] and batch.source == "mine"


def test_batches_are_bounded_and_line_numbers_skip_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [paper(i) for i in range(5)])
    path.write_text(path.read_text().replace("\n", "\n\n", 1))  # blank line after line 1
    batches, _ = read_all(SourceSpec(str(path)), batch_rows=2)
    assert [len(b) for b in batches] == [1, 2, 2]  # batches hold at most 2 lines, blank ones included
    assert [line for b in batches for line in b.lines] == [1, 3, 4, 5, 6]


def test_malformed_json_line_is_a_parse_failure_with_its_line_number(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [paper(1)])
    with path.open("a") as f:
        f.write('{"id": "p2", "title": "broken\n')
    (batch,), _ = read_all(SourceSpec(str(path)))
    assert len(batch) == 1
    assert [(f.line, f.message.split(":")[0]) for f in batch.failures] == [(2, "not valid JSON")]


def test_csv_reads_list_literal_groups_and_huge_fields(tmp_path):
    path = tmp_path / "a.csv"
    big = "x" * 300_000  # above the csv module's default field limit
    path.write_text(f'titles,summaries,terms\nT1,"Abstract, with a comma",\"[\'cs.LG\', \'cs.CV\']"\nT2,{big},cs.AI\n')
    spec = SourceSpec(str(path), columns={"title": "titles", "abstract": "summaries", "groups": "terms"})
    assert resolve_format(spec) == "csv"
    _, (batch,) = read_all(spec)
    assert batch.abstract[0] == "Abstract, with a comma"
    assert len(batch.abstract[1]) == 300_000
    assert batch.groups == [["cs.CV", "cs.LG"], ["cs.AI"]]
    assert batch.paper_id[0] == title_id("T1", "") and batch.lines == [2, 3]


def test_csv_missing_the_abstract_column_names_file_columns_and_fix(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,title,summary\n1,T,S\n")
    with pytest.raises(PapersimError) as err:
        read_all(SourceSpec(str(path)))
    msg = str(err.value)
    assert str(path) in msg and "no column 'abstract' for the abstract" in msg
    assert "columns found: id, title, summary" in msg and "columns: {abstract: <column name>}" in msg


def test_parquet_rows_are_numbered(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "title": ["T a", "T b"], "abstract": ["A a", "A b"]}), path)
    batches, (batch,) = read_all(SourceSpec(str(path)))
    assert batches[0].unit == "row" and batch.lines == [1, 2] and batch.paper_id == ["a", "b"]


def test_listing_pages_strip_the_header_and_group_by_page(tmp_path):
    write_page(tmp_path / "pages" / "page_a.txt", [("Title A", "Abstract A, with $\\ell_1$ LaTeX."), ("Title B", "Abstract B.")])
    write_page(tmp_path / "pages" / "page_b.txt", [("Title A", "Abstract A, with $\\ell_1$ LaTeX.")])
    spec = SourceSpec(str(tmp_path / "pages"))
    assert resolve_format(spec) == "hf_pages"
    _, batches = read_all(spec)
    assert [b.title for b in batches] == [["Title A", "Title B"], ["Title A"]]
    assert batches[0].abstract[0] == "Abstract A, with $\\ell_1$ LaTeX."  # LaTeX kept as text
    assert batches[0].groups[0] == ["page:page_a"] and batches[1].groups[0] == ["page:page_b"]
    assert batches[0].lines == [11, 15]
    assert batches[0].paper_id[0] == batches[1].paper_id[0] == title_id("Title A", "")


def test_listing_page_with_an_odd_number_of_paragraphs_points_at_the_break(tmp_path):
    path = tmp_path / "page.txt"
    write_page(path, [("Title A", "A long abstract about things. " * 5)])
    path.write_text(path.read_text() + "Title B without abstract\n\nTitle C\n\n" + "Abstract C. " * 30 + "\n")
    with pytest.raises(PapersimError) as err:
        read_all(SourceSpec(str(path)))
    msg = str(err.value)
    assert str(path) in msg and "an odd number" in msg and "title has no abstract" in msg
    assert "line 17: 'Title C'" in msg


@pytest.mark.parametrize("name, content, message", [
    ("empty.jsonl", "", "file is empty"),
    ("blank.jsonl", "\n\n", "file is empty"),
    ("empty.csv", "", "file is empty"),
    ("empty.txt", "", "file is empty"),
])
def test_empty_files_are_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(PapersimError, match=message):
        read_all(SourceSpec(str(tmp_path / name)))


def test_jsonl_edge_cases_numbers_crlf_blank_lines_and_no_final_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "READ_BLOCK", 7)  # lines straddle many read blocks
    path = tmp_path / "a.jsonl"
    path.write_bytes(
        b'{"id": 5, "title": "Numeric id", "abstract": "An abstract long enough."}\r\n'
        b"   \r\n"
        b'{"id": "x", "title": "Second", "abstract": "Another abstract here.", "groups": "a; b"}\n'
        b"\n"
        b'  {"id": "y", "title": "Indented", "abstract": "Third abstract, no final newline."}'
    )
    batches, rows = read_all(SourceSpec(str(path)), batch_rows=2)
    assert [b.lines for b in batches] == [[1], [3], [5]]
    assert [r.paper_id for r in rows] == [["5"], ["x"], ["y"]]
    assert rows[1].groups == [["a", "b"]] and rows[2].title == ["Indented"]


def test_parquet_with_integer_ids_and_string_groups_reads_row_by_row(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [7, 8], "title": ["T a", "T b"], "abstract": ["A a", "A b"],
                             "groups": ["x;y", None]}), path)
    _, (batch,) = read_all(SourceSpec(str(path)))
    assert batch.paper_id == ["7", "8"] and batch.groups == [["x", "y"], []]


def normalised(spec, batch_rows: int = 1000) -> tuple[list[dict], dict[int, dict[str, str]]]:
    """(each row's metadata as papers.parquet stores it, row -> {rule: what is wrong}) over all batches."""
    rows, invalid = [], {}
    for raw in read_source(spec, batch_rows):
        batch = normalise_batch(raw, spec)
        invalid |= {len(rows) + i: found for i, found in batch.invalid.items()}
        columns = {name: getattr(batch, name).to_pylist() for name in METADATA}
        rows += [dict(zip(columns, values)) for values in zip(*columns.values())]
    return rows, invalid


def test_csv_metadata_columns_are_read_and_normalised(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text(
        "id,title,abstract,authors,published,updated,link,arxiv_id,doi,venue,categories\n"
        '1,T1,A1,"Ada  Lovelace, Charles Babbage and Alan Turing",Mar 12 2019,2019-03-12T17:59:53Z,,1706.03762,,'
        '" NeurIPS\u00a0 2017 ",cs.LG stat.ML\n'
        '2,T2,A2,"Hopper, G.; Doe, J.",2019/03,,,,doi:10.1000/xyz,,"[\'cs.CV\']"\n'
        "3,T3,A3,,,,,,,,\n", encoding="utf-8")
    rows, invalid = normalised(SourceSpec(str(path), columns={"date": "published", "url": "link"}))
    assert invalid == {}
    assert rows[0] == {"authors": ["Ada Lovelace", "Charles Babbage", "Alan Turing"], "date": "2019-03-12",
                       "updated": "2019-03-12", "url": "https://arxiv.org/abs/1706.03762", "venue": "NeurIPS 2017",
                       "categories": ["cs.LG", "stat.ML"]}
    assert rows[1] == {"authors": ["Hopper, G.", "Doe, J."], "date": "2019-03", "updated": None,
                       "url": "https://doi.org/10.1000/xyz", "venue": None, "categories": ["cs.CV"]}
    assert rows[2] == {"authors": [], "date": None, "updated": None, "url": None, "venue": None, "categories": []}


def test_unreadable_metadata_is_null_and_named_with_its_value(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        paper(1, date="2019-02-30", updated="soon", url="ftp://example.org/p1"),
        paper(2, date="2019", arxiv_id="not-an-id"),
        paper(3, date=2019, updated="2020-01"),
    ])
    rows, invalid = normalised(SourceSpec(str(path)))
    assert invalid == {
        0: {"date_valid": "date '2019-02-30' is not a date (no such day); updated 'soon' is not a date",
            "url_valid": "url 'ftp://example.org/p1' is not an http(s) URL"},
        1: {"url_valid": "arxiv_id 'not-an-id' is not an arXiv id"},
    }
    assert [(r["date"], r["updated"], r["url"]) for r in rows] == [
        (None, None, None), ("2019", None, None), ("2019", "2020-01", None)]


def test_a_corpus_without_metadata_reads_null_and_empty(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"id": "p1", "title": "T", "abstract": "A"}])
    rows, invalid = normalised(SourceSpec(str(path)))
    assert rows == [{"authors": [], "date": None, "updated": None, "url": None, "venue": None, "categories": []}]
    assert invalid == {}


def test_one_column_feeds_two_fields(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [paper(1, categories=["cs.LG", "stat.ML"], published="2020-05-01")])
    spec = SourceSpec(str(path), columns={"groups": "categories", "date": "published", "updated": "published"})
    (rows,), _ = normalised(spec)
    _, (batch,) = read_all(spec)
    assert batch.groups == [["cs.LG", "stat.ML"]] and rows["categories"] == ["cs.LG", "stat.ML"]
    assert rows["date"] == rows["updated"] == "2020-05-01"
    csv_path = tmp_path / "b.csv"
    csv_path.write_text("title,abstract,categories\nT,A,cs.LG;cs.IR\n")
    (rows,), _ = normalised(SourceSpec(str(csv_path), columns={"groups": "categories"}))
    assert rows["categories"] == ["cs.LG", "cs.IR"]


def test_jsonl_metadata_reads_alike_whatever_types_the_source_uses(tmp_path):
    usual = [paper(i, authors=["Ada Lovelace", "Alan Turing"], date="2019-03-12", url="https://a.org/1",
                   venue="ICML", categories=["cs.LG"]) for i in range(3)]
    other_types = [paper(i, authors="Grace Hopper and Ada Lovelace", date=2019, updated=2020.0, venue=7,
                         categories="cs.LG stat.ML", arxiv_id="cs/0112017") for i in range(3)]
    # authors as a string: Arrow infers types, and would read these dates as timestamps moved to UTC
    timestamps = [paper(i, authors="Grace Hopper", date="2019-03-12T23:59:53-05:00", doi="10.1000/x")
                  for i in range(3)]
    for name, records in (("usual", usual), ("other_types", other_types), ("timestamps", timestamps),
                          ("mixed", usual[:1] + other_types[:1] + timestamps[:1])):
        fast = write_jsonl(tmp_path / f"{name}.jsonl", records)
        slow = write_jsonl(tmp_path / f"{name}_slow.jsonl", records)
        with slow.open("a") as f:
            f.write("{not json}\n")  # Arrow rejects the batch: it is read line by line
        assert normalised(SourceSpec(str(fast)))[0] == normalised(SourceSpec(str(slow)))[0], name
    assert normalised(SourceSpec(str(tmp_path / "timestamps.jsonl")))[0][0]["date"] == "2019-03-12"
    rows, _ = normalised(SourceSpec(str(tmp_path / "mixed.jsonl")))
    assert rows[0] == {"authors": ["Ada Lovelace", "Alan Turing"], "date": "2019-03-12", "updated": None,
                       "url": "https://a.org/1", "venue": "ICML", "categories": ["cs.LG"]}
    assert rows[1] == {"authors": ["Grace Hopper", "Ada Lovelace"], "date": "2019", "updated": "2020",
                       "url": "https://arxiv.org/abs/cs/0112017", "venue": "7", "categories": ["cs.LG", "stat.ML"]}
    assert rows[2]["date"] == "2019-03-12" and rows[2]["url"] == "https://doi.org/10.1000/x"  # the day as written


def test_parquet_metadata_of_arrow_types_and_as_strings(tmp_path):
    import datetime

    typed = tmp_path / "typed.parquet"
    pq.write_table(pa.table({
        "id": ["a", "b"], "title": ["T a", "T b"], "abstract": ["A a", "A b"],
        "authors": [["Ada Lovelace"], []], "date": pa.array([datetime.date(2019, 3, 12), None], pa.date32()),
        "updated": pa.array([datetime.datetime(2020, 1, 2, 3, 4, 5), None], pa.timestamp("s")),
        "categories": ["cs.LG stat.ML", None],
    }), typed)
    as_strings = tmp_path / "strings.parquet"
    pq.write_table(pa.table({"id": ["a"], "title": ["T a"], "abstract": ["A a"], "authors": ["Ada Lovelace"],
                             "date": ["Mar 12, 2019"], "updated": ["2020-01-02"],
                             "categories": [["cs.LG", "stat.ML"]]}), as_strings)
    rows, invalid = normalised(SourceSpec(str(typed)))
    assert invalid == {} and rows[1]["date"] is None and rows[1]["authors"] == []
    assert rows[0] == normalised(SourceSpec(str(as_strings)))[0][0] == {
        "authors": ["Ada Lovelace"], "date": "2019-03-12", "updated": "2020-01-02", "url": None, "venue": None,
        "categories": ["cs.LG", "stat.ML"]}


PAGE = "new\n\nSubscribe\n\n{date}\n\nTitle A\n\nAbstract A is long enough.\n\nTitle B\n\nAbstract B, long too.\n"


@pytest.mark.parametrize("header, year, date", [
    ("Mar 20", 0, "--03-20"),  # the page shows no year: ISO 8601's day without its year
    ("Mar 20", 2024, "2024-03-20"),
    ("Mar 14, 2023", 2024, "2023-03-14"),  # the page's own year wins
])
def test_every_paper_of_a_listing_page_gets_the_page_date(tmp_path, header, year, date):
    (tmp_path / "page.txt").write_text(PAGE.format(date=header))
    rows, invalid = normalised(SourceSpec(str(tmp_path / "page.txt"), year=year))
    assert [r["date"] for r in rows] == [date, date] and invalid == {}
    assert [r["updated"] for r in rows] == [None, None]


def test_a_listing_page_without_a_date_has_none(tmp_path):
    (tmp_path / "page.txt").write_text(PAGE.format(date="byAK and the research community"))
    rows, _ = normalised(SourceSpec(str(tmp_path / "page.txt"), year=2024))
    assert [r["date"] for r in rows] == [None, None]

"""One reader per file format: JSONL, CSV, Parquet and saved listing pages, in bounded batches with line numbers."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from papersim.data import formats
from papersim.data.normalise import title_id
from papersim.data.sources import SourceSpec, resolve_format
from papersim.errors import PapersimError
from tests.conftest import paper, read_all, write_jsonl, write_page


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

"""Raw records as the slow path collects them and the Arrow columns of the fast paths, read alike."""

import datetime

import pyarrow as pa

from papersim.data.records import RawBatch, _list_column, _Rows, _text_column


def test_rows_parse_list_metadata_and_read_numbers_as_the_source_wrote_them():
    rows = _Rows("a.jsonl", "line")
    rows.add(1, {"title": "T", "abstract": "A", "authors": "Ada Lovelace and Alan Turing", "date": 2019.0,
                 "updated": float("nan"), "venue": 7, "categories": "cs.LG stat.ML", "arxiv_id": "1706.03762"})
    rows.add(2, {"abstract": "B"})
    batch = rows.batch()
    assert batch.authors.to_pylist() == [["Ada Lovelace", "Alan Turing"], []]
    assert batch.categories.to_pylist() == [["cs.LG", "stat.ML"], []]
    assert batch.date.to_pylist() == ["2019", None] and batch.updated.to_pylist() == [None, None]
    assert batch.venue.to_pylist() == ["7", None] and batch.arxiv_id.to_pylist() == ["1706.03762", None]


def test_a_batch_without_metadata_columns_has_them_all_null():
    batch = RawBatch("a.jsonl", "line", [1, 2], pa.array(["a", "b"]), pa.array(["T", "U"]), pa.array(["A", "B"]),
                     pa.array([[], []], pa.list_(pa.string())))
    assert batch.date.to_pylist() == batch.authors.to_pylist() == batch.doi.to_pylist() == [None, None]


def test_arrow_columns_read_like_the_slow_path_or_are_refused():
    assert _text_column(pa.array([2019, None])).to_pylist() == ["2019", None]
    assert _text_column(pa.array([2019.0, 2019.5])).to_pylist() == ["2019", "2019.5"]
    stamps = pa.array([datetime.datetime(2019, 3, 12, 23, 0)], pa.timestamp("s"))
    assert _text_column(stamps) is None  # JSON: Arrow's guess, may differ from the text; the slow path reads it
    assert _text_column(stamps, temporal=True).to_pylist() == ["2019-03-12 23:00:00"]  # Parquet: a real timestamp
    assert _text_column(pa.array([["a"]])) is None
    assert _list_column(pa.array([["a"], None])).type == pa.list_(pa.string())
    assert _list_column(pa.array(["a, b"], pa.large_string())).to_pylist() == ["a, b"]
    assert _list_column(pa.array([[{"name": "a"}]])) is None and _list_column(pa.array([1])) is None

"""Rejected rows: written to rejected.parquet with file, line, rules and reason, quoted per rule in the report."""

import pyarrow.parquet as pq

from papersim.data.normalise import normalise_batch
from papersim.data.rejection import REJECTED_SCHEMA, Rejection, reject_rows
from papersim.data.sources import SourceSpec, read_source
from papersim.data.validation import RowRules
from tests.conftest import paper, write_jsonl

RULES = RowRules(min_abstract_chars=10, max_abstract_chars=40, require_title=True)


def test_a_row_with_bad_metadata_is_written_and_reported_with_its_value(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [paper(1), paper(2, date="2019-02-30", doi="12.3/x")])
    spec = SourceSpec(str(path))
    (raw,) = read_source(spec, 10)
    batch = normalise_batch(raw, spec)
    with pq.ParquetWriter(tmp_path / "rejected.parquet", REJECTED_SCHEMA) as writer:
        rejection = Rejection(writer, RULES)
        rejection.add(reject_rows(batch, {1: ["abstract_length", "date_valid", "url_valid"]}))
    (row,) = pq.read_table(tmp_path / "rejected.parquet").to_pylist()
    assert (row["paper_id"], row["file"], row["line"], row["rules"]) == (
        "p2", str(path), 2, ["abstract_length", "date_valid", "url_valid"])
    assert row["reason"] == (
        "abstract length within [10, 40] characters; "
        "date and updated are dates (YYYY-MM-DD, YYYY-MM or YYYY): date '2019-02-30' is not a date (no such day); "
        "url is an http(s) URL (or made from a well-formed arxiv_id or doi): doi '12.3/x' is not a DOI")
    report = rejection.report("header")
    assert f"{path} line 2: paper_id='p2': date '2019-02-30' is not a date (no such day)" in report
    assert f"{path} line 2: paper_id='p2': doi '12.3/x' is not a DOI" in report
    assert f"{path} line 2: paper_id='p2': abstract has {len(batch.abstract[1].as_py())} characters" in report

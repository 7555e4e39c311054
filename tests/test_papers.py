"""Reading papers.parquet for the stages."""

import pyarrow as pa
import pyarrow.parquet as pq

from papersim.data.papers import read_papers


def test_read_papers_gives_python_strings_for_every_text_column(tmp_path):
    path = tmp_path / "papers.parquet"
    pq.write_table(pa.table({"paper_id": ["a", "b"], "title": ["T1", "T2"], "groups": [["g"], []]}), path)
    papers = read_papers(path)
    assert papers.dtypes.tolist() == [object, object, object]
    assert papers["title"].tolist() == ["T1", "T2"] and list(papers["groups"].iat[0]) == ["g"]
    assert read_papers(path, ["title"]).columns.tolist() == ["title"]
    train = papers[papers["paper_id"] == "b"]  # a row filter shares the strings, it does not copy them
    assert train["title"].iat[0] is papers["title"].iat[1]

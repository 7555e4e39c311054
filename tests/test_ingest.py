import pyarrow.parquet as pq
import pytest

from papersim.data.ingest import PAPERS_SCHEMA, IngestConfig, ingest_corpus
from papersim.data.normalise import record_hashes
from papersim.data.sources import SourceSpec
from papersim.errors import PapersimError
from tests.conftest import paper, write_jsonl, write_page


def run(tmp_path, sources, **cfg):
    cfg = IngestConfig(sources=[SourceSpec(**s) for s in sources], **cfg)
    out, rejected = tmp_path / "papers.parquet", tmp_path / "rejected.parquet"
    report = ingest_corpus(cfg, out, rejected)
    return report, pq.read_table(out), pq.read_table(rejected).to_pylist()


def test_pages_and_jsonl_merge_into_one_table_keeping_every_group(tmp_path):
    shared = ("Shared Paper", "An abstract about Siamese networks for similar paper search.")
    write_page(tmp_path / "pages" / "one.txt", [shared, ("Only One", "Another abstract that is long enough.")])
    write_page(tmp_path / "pages" / "two.txt", [shared, shared])  # twice on one page, too
    write_jsonl(tmp_path / "a.jsonl", [paper(1), {**paper(2), "title": shared[0], "abstract": shared[1]}])
    report, table, rejected = run(tmp_path, [
        {"path": str(tmp_path / "pages"), "name": "pages"},
        {"path": str(tmp_path / "a.jsonl"), "name": "arxiv", "columns": {"groups": "categories"}},
    ])
    assert table.schema.equals(PAPERS_SCHEMA)
    assert table["record_hash"].to_pylist() == record_hashes(table).to_pylist()  # of the merged groups
    rows = {r["title"]: r for r in table.to_pylist()}
    assert len(rows) == 3 and rejected == []
    assert rows["Shared Paper"]["groups"] == ["cs.LG", "page:one", "page:two"]
    assert rows["Shared Paper"]["source"] == "pages"  # the first source that had it
    assert report["rows_read"] == {"pages": 4, "arxiv": 2}
    assert report["duplicates_merged"] == 3 and report["rows_written"] == 3


def test_an_edit_of_groups_or_title_case_changes_the_record_hash_not_the_content_hash(tmp_path):
    source = [{"path": str(tmp_path / "a.jsonl"), "columns": {"groups": "categories"}}]
    write_jsonl(tmp_path / "a.jsonl", [paper(1), paper(2), paper(3)])
    before = {r["paper_id"]: r for r in run(tmp_path, source)[1].to_pylist()}
    write_jsonl(tmp_path / "a.jsonl", [paper(1, categories=["cs.LG", "cs.IR"]),
                                       paper(2, title=paper(2)["title"].upper()), paper(3)])
    after = {r["paper_id"]: r for r in run(tmp_path, source)[1].to_pylist()}
    assert [after[p]["content_hash"] == before[p]["content_hash"] for p in ("p1", "p2", "p3")] == [True] * 3
    assert [after[p]["record_hash"] == before[p]["record_hash"] for p in ("p1", "p2", "p3")] == [False, False, True]


def test_same_id_with_different_text_fails_naming_both_rows(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [paper(1), paper(2), {**paper(3), "id": "p1"}])
    with pytest.raises(PapersimError) as err:
        run(tmp_path, [{"path": str(tmp_path / "a.jsonl")}])
    msg = str(err.value)
    assert "2 of 3 row(s) failed validation" in msg and "rule 'id_unique'" in msg
    assert f"{tmp_path / 'a.jsonl'} line 1: paper_id='p1'" in msg
    assert f"{tmp_path / 'a.jsonl'} line 3: paper_id='p1'" in msg


def test_quarantine_sets_bad_rows_aside_with_file_line_and_reason(tmp_path):
    rows = [paper(i) for i in range(1, 200)] + [{**paper(200), "abstract": ""}]
    write_jsonl(tmp_path / "a.jsonl", rows)
    report, table, rejected = run(tmp_path, [{"path": str(tmp_path / "a.jsonl")}], on_invalid="quarantine")
    assert table.num_rows == 199
    assert [(r["paper_id"], r["line"], r["rules"]) for r in rejected] == [("p200", 200, ["abstract_not_empty"])]
    assert rejected[0]["reason"] == "abstract is not empty"
    assert report["rejected"]["abstract_not_empty"] == 1 and report["rejected_fraction"] == 0.005


def test_quarantine_still_fails_above_the_rejected_share(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [paper(1), {**paper(2), "abstract": "tiny"}])
    with pytest.raises(PapersimError, match=r"1 of 2 row\(s\) rejected \(50.00%\), more than max_rejected_fraction 10.00%"):
        run(tmp_path, [{"path": str(tmp_path / "a.jsonl")}], on_invalid="quarantine", max_rejected_fraction=0.1)


def test_malformed_json_is_quarantined_with_its_line(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [paper(i) for i in range(1, 10)])
    with path.open("a") as f:
        f.write("{not json}\n")
    _, table, rejected = run(tmp_path, [{"path": str(path)}], on_invalid="quarantine", max_rejected_fraction=0.5)
    assert table.num_rows == 9
    assert [(r["line"], r["rules"]) for r in rejected] == [(10, ["parse_error"])]


def test_streaming_batches_give_the_same_table_as_one_batch(tmp_path):
    rows = [paper(i, categories=[f"c{i % 3}"]) for i in range(50)] + [paper(7, categories=["extra"])]
    write_jsonl(tmp_path / "a.jsonl", rows)
    source = [{"path": str(tmp_path / "a.jsonl"), "columns": {"groups": "categories"}}]
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    _, one, _ = run(tmp_path / "one", source, batch_rows=1000)
    _, many, _ = run(tmp_path / "many", source, batch_rows=7)
    assert one.equals(many) and one.num_rows == 50
    assert one.to_pylist()[7]["groups"] == ["c1", "extra"]  # merged from the repeat in a later batch


# Ingests from a named pipe nobody writes to: the stage has opened its scratch folder and waits for input.
BLOCKED_INGEST = """
import sys
from pathlib import Path
from papersim.data.ingest import IngestConfig, ingest_corpus
from papersim.data.sources import SourceSpec
out = Path(sys.argv[2])
ingest_corpus(IngestConfig(sources=[SourceSpec(path=sys.argv[1], name="arxiv")]), out / "papers.parquet",
              out / "rejected.parquet")
"""


def test_the_spill_folder_of_a_killed_ingest_is_swept_and_a_running_ones_stays(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from papersim.atomic import sweep

    os.mkfifo(tmp_path / "papers.jsonl")
    out = tmp_path / "data/processed"
    out.mkdir(parents=True)
    ingests = [subprocess.Popen([sys.executable, "-c", BLOCKED_INGEST, str(tmp_path / "papers.jsonl"), str(out)])
               for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob(".ingest.tmp-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        spills = {p.name.split("-")[1]: p for p in out.glob(".ingest.tmp-*")}  # by the writer's pid
        assert sorted(spills) == sorted(str(p.pid) for p in ingests)
        os.kill(ingests[0].pid, signal.SIGKILL)
        ingests[0].wait()
        assert spills[str(ingests[0].pid)].is_dir()  # what a killed ingest leaves
        sweep([tmp_path / "data"])
        assert not spills[str(ingests[0].pid)].exists() and spills[str(ingests[1].pid)].is_dir()
    finally:
        for ingest in ingests:
            ingest.kill()
            ingest.wait()

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


def test_csv_metadata_reaches_papers_parquet_normalised(tmp_path):
    (tmp_path / "a.csv").write_text(
        "id,title,abstract,authors,published,updated,link,venue,categories\n"
        f'p1,Wing flutter,{paper(1)["abstract"]},"Ada Lovelace,  Alan Turing",12 Mar 2019,2019-04,'
        "https://example.org/p1, ICML ,cs.LG stat.ML\n"
        f"p2,Heat transfer,{paper(2)['abstract']},,,,,,\n", encoding="utf-8")
    report, table, rejected = run(tmp_path, [{"path": str(tmp_path / "a.csv"),
                                              "columns": {"date": "published", "url": "link"}}])
    assert table.schema.equals(PAPERS_SCHEMA) and rejected == []
    p1, p2 = table.to_pylist()
    assert {k: p1[k] for k in ("authors", "date", "updated", "url", "venue", "categories")} == {
        "authors": ["Ada Lovelace", "Alan Turing"], "date": "2019-03-12", "updated": "2019-04",
        "url": "https://example.org/p1", "venue": "ICML", "categories": ["cs.LG", "stat.ML"]}
    assert {k: p2[k] for k in ("authors", "date", "updated", "url", "venue", "categories")} == {
        "authors": [], "date": None, "updated": None, "url": None, "venue": None, "categories": []}
    assert report["rejected"]["date_valid"] == report["rejected"]["url_valid"] == 0


def test_a_corpus_without_metadata_keeps_its_content_hashes(tmp_path):
    import hashlib

    write_jsonl(tmp_path / "a.jsonl", [{"id": "p1", "title": "Wing Flutter", "abstract": paper(1)["abstract"]}])
    _, table, _ = run(tmp_path, [{"path": str(tmp_path / "a.jsonl")}])
    (row,) = table.to_pylist()
    assert row["authors"] == row["categories"] == [] and row["date"] is row["url"] is row["venue"] is None
    assert row["content_hash"] == hashlib.sha1(f"wing flutter\x1f{paper(1)['abstract']}".encode()).hexdigest()[:32]


def test_a_bad_date_is_quarantined_with_file_line_and_rule(tmp_path):
    rows = [paper(i, date="2019-03-12") for i in range(1, 100)] + [paper(100, date="2019-02-30")]
    write_jsonl(tmp_path / "a.jsonl", rows)
    report, table, rejected = run(tmp_path, [{"path": str(tmp_path / "a.jsonl")}], on_invalid="quarantine")
    assert table.num_rows == 99 and set(table["date"].to_pylist()) == {"2019-03-12"}
    assert [(r["paper_id"], r["file"], r["line"], r["rules"]) for r in rejected] == [
        ("p100", str(tmp_path / "a.jsonl"), 100, ["date_valid"])]
    assert rejected[0]["reason"].endswith(": date '2019-02-30' is not a date (no such day)")
    assert report["rejected"]["date_valid"] == 1 and report["rejected_total"] == 1


def test_a_bad_url_fails_the_run_naming_file_line_rule_and_value(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [paper(1, arxiv_id="1706.03762"), paper(2, arxiv_id="arXiv:attention")])
    with pytest.raises(PapersimError) as err:
        run(tmp_path, [{"path": str(tmp_path / "a.jsonl")}])
    msg = str(err.value)
    assert "1 of 2 row(s) failed validation" in msg and "rule 'url_valid'" in msg
    assert f"{tmp_path / 'a.jsonl'} line 2: paper_id='p2': arxiv_id 'arXiv:attention' is not an arXiv id" in msg


def test_listing_pages_date_their_papers_and_year_completes_the_date(tmp_path):
    write_page(tmp_path / "pages" / "one.txt", [("Listed Paper", "An abstract about Siamese networks for search.")])
    _, table, _ = run(tmp_path, [{"path": str(tmp_path / "pages")}])
    assert table["date"].to_pylist() == ["--03-14"]  # the page header's "Mar 14", no year shown
    _, table, _ = run(tmp_path, [{"path": str(tmp_path / "pages"), "year": 2024}])
    assert table["date"].to_pylist() == ["2024-03-14"]


def test_arxiv_ids_and_one_column_feeding_two_fields(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [
        paper(1, id="1706.03762", categories=["cs.CL", "cs.LG"]),
        paper(2, id="cs/0112017v2", categories=["cs.AI"], doi="10.1000/x"),
    ])
    source = {"path": str(tmp_path / "a.jsonl"), "id_prefix": "arxiv:",
              "columns": {"arxiv_id": "id", "groups": "categories"}}
    _, table, _ = run(tmp_path, [source])
    rows = {r["paper_id"]: r for r in table.to_pylist()}
    assert rows["arxiv:1706.03762"]["url"] == "https://arxiv.org/abs/1706.03762"
    assert rows["arxiv:cs/0112017v2"]["url"] == "https://arxiv.org/abs/cs/0112017"  # the id first, doi unused
    assert rows["arxiv:1706.03762"]["groups"] == ["cs.CL", "cs.LG"]
    assert rows["arxiv:1706.03762"]["categories"] == ["cs.CL", "cs.LG"]


def test_a_merged_duplicate_keeps_the_first_rows_metadata_and_adds_its_groups(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [
        paper(1, date="2019-03", authors=["Ada Lovelace"], categories=["cs.LG"]),
        paper(1, date="2020-01-01", authors=["Someone Else"], categories=["cs.IR"], venue="ICML"),
    ])
    _, table, _ = run(tmp_path, [{"path": str(tmp_path / "a.jsonl"), "columns": {"groups": "categories"}}])
    (row,) = table.to_pylist()
    assert (row["date"], row["authors"], row["venue"], row["categories"]) == ("2019-03", ["Ada Lovelace"], None,
                                                                            ["cs.LG"])
    assert row["groups"] == ["cs.IR", "cs.LG"]


def test_an_edited_date_changes_the_record_hash_not_the_content_hash(tmp_path):
    source = [{"path": str(tmp_path / "a.jsonl")}]
    write_jsonl(tmp_path / "a.jsonl", [paper(1, date="2019-03-12"), paper(2, date="2019")])
    before = {r["paper_id"]: r for r in run(tmp_path, source)[1].to_pylist()}
    write_jsonl(tmp_path / "a.jsonl", [paper(1, date="2019-03-13"), paper(2, date=2019)])
    after = {r["paper_id"]: r for r in run(tmp_path, source)[1].to_pylist()}
    assert [after[p]["content_hash"] == before[p]["content_hash"] for p in ("p1", "p2")] == [True, True]
    assert [after[p]["record_hash"] == before[p]["record_hash"] for p in ("p1", "p2")] == [False, True]

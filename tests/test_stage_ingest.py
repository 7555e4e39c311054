"""The ingest stage end to end through `main()`: outputs, MLflow run, and every bad input of the spec."""

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from stages.ingest import main
from tests.conftest import paper, write_jsonl, write_page

OUTPUTS = ("data/processed/papers.parquet", "data/processed/rejected.parquet", "reports/ingest.json")


def write_params(root: Path, sources: list[dict], **extra) -> None:
    section = {"sources": sources, "min_abstract_chars": 20, "max_abstract_chars": 20000, **extra}
    (root / "params.yaml").write_text(yaml.safe_dump({"ingest": section}))


@pytest.fixture
def project(tmp_path, monkeypatch, tracking, stage_argv):
    """A project folder with a good corpus already ingested once (the 'previous good output')."""
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data/raw/a.jsonl", [paper(i) for i in range(1, 6)])
    write_page(tmp_path / "data/raw/pages/p.txt", [("A listed paper", "Its abstract, long enough to pass.")])
    write_params(tmp_path, [{"path": "data/raw/a.jsonl", "columns": {"groups": "categories"}},
                            {"path": "data/raw/pages", "name": "pages"}])
    assert main(stage_argv("ingest")) == 0
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in OUTPUTS}


def test_writes_papers_report_and_one_mlflow_run(project, tracking):
    report = json.loads((project / "reports/ingest.json").read_text())
    assert report["rows_written"] == 6 and report["rows_read"] == {"a": 5, "pages": 1}

    client = MlflowClient()
    runs = client.search_runs([mlflow.get_experiment_by_name(tracking).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "ingest" and run.info.status == "FINISHED"
    assert run.data.params["sources.0.path"] == "data/raw/a.jsonl"
    assert run.data.params["on_invalid"] == "fail"
    assert run.data.metrics["rows_written"] == 6 and run.data.metrics["rows_read.pages"] == 1
    assert len(run.data.tags["data_version"]) == 32 and "data_md5.pages" in run.data.tags
    assert "mlflow.source.git.commit" in run.data.tags
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "reports")]
    assert artifacts == ["reports/ingest.json"]


def test_nests_under_a_parent_run_given_in_the_environment(project, tracking, monkeypatch, capsys, stage_argv):
    client = MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(tracking).experiment_id
    parent = client.create_run(experiment_id, run_name="retrain")
    monkeypatch.setenv("PAPERSIM_PARENT_RUN_ID", parent.info.run_id)
    assert main(stage_argv("ingest")) == 0
    assert "ingest: 6 papers -> data/processed/papers.parquet (read 6 rows" in capsys.readouterr().out
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert [r.info.run_name for r in children] == ["ingest"]


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def _malformed_json(root):
    append(root / "data/raw/a.jsonl", b'{"id": "p9", "title": "cut off\n')
    return ["data/raw/a.jsonl line 6", "rule 'parse_error'", "not valid JSON"]


def _csv_without_abstract(root):
    (root / "data/raw/b.csv").write_text("id,title,summary\nx1,T,some summary text here\n")
    write_params(root, [{"path": "data/raw/b.csv"}])
    return ["data/raw/b.csv", "no column 'abstract'", "columns found: id, title, summary"]


def _empty_abstracts(root):
    write_jsonl(root / "data/raw/a.jsonl", [paper(1), paper(2, abstract=""), paper(3, abstract="   ")])
    return ["2 of 4 row(s) failed", "rule 'abstract_not_empty'", "data/raw/a.jsonl line 2: paper_id='p2'",
            "data/raw/a.jsonl line 3: paper_id='p3'"]


def _huge_abstract(root):
    write_jsonl(root / "data/raw/a.jsonl", [paper(1), paper(2, abstract="word " * 1_048_576)])  # 5 MiB
    return ["rule 'abstract_length'", "within [20, 20000] characters",
            "data/raw/a.jsonl line 2: paper_id='p2': abstract has 5242879 characters"]


def _duplicate_ids(root):
    write_jsonl(root / "data/raw/a.jsonl", [paper(1), paper(2), paper(3, id="p1")])
    return ["rule 'id_unique'", "data/raw/a.jsonl line 1: paper_id='p1'", "data/raw/a.jsonl line 3: paper_id='p1'"]


def _invalid_utf8(root):
    append(root / "data/raw/a.jsonl", b'{"id": "p9", "title": "Caf\xe9 au lait", "abstract": "' + b"x" * 40 + b'"}\n')
    return ["rule 'utf8_valid'", "data/raw/a.jsonl line 6: paper_id='p9'", "invalid bytes near 'Caf\ufffd au lait"]


def _empty_file(root):
    (root / "data/raw/a.jsonl").write_bytes(b"")
    return ["data/raw/a.jsonl: file is empty"]


def _missing_path(root):
    write_params(root, [{"path": "data/raw/nope.jsonl"}])
    return ["data/raw/nope.jsonl: no such file or folder (source 'nope' in params.yaml ingest.sources)"]


def _unknown_format(root):
    write_params(root, [{"path": "data/raw/a.jsonl", "format": "xml"}])
    return ["params.yaml: ingest: sources[0]: unknown format 'xml' for data/raw/a.jsonl"]


def _odd_page(root):
    append(root / "data/raw/pages/p.txt", b"A title without its abstract\n")
    return ["data/raw/pages/p.txt", "3 paragraphs after the header, an odd number", "a title has no abstract"]


def _unknown_params_key(root):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["max_abstract_char"] = 100
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return ["params.yaml: ingest: unknown key(s) 'max_abstract_char'"]


BAD_INPUTS = {
    "malformed_json_line": _malformed_json,
    "csv_missing_abstract_column": _csv_without_abstract,
    "empty_abstracts": _empty_abstracts,
    "5mb_abstract": _huge_abstract,
    "duplicate_ids_different_text": _duplicate_ids,
    "invalid_utf8": _invalid_utf8,
    "empty_file": _empty_file,
    "missing_path": _missing_path,
    "unknown_format": _unknown_format,
    "odd_listing_page": _odd_page,
    "unknown_params_key": _unknown_params_key,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_a_clear_error_and_keeps_previous_outputs(project, case, capsys, stage_argv):
    before = snapshot(project)
    capsys.readouterr()
    expected = BAD_INPUTS[case](project)

    assert main(stage_argv("ingest")) == 1

    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in err
    assert snapshot(project) == before
    leftovers = [p.name for d in ("data/processed", "reports") for p in (project / d).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_failed_run_is_recorded_as_failed_with_the_error(project, tracking, stage_argv):
    _duplicate_ids(project)
    assert main(stage_argv("ingest")) == 1
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name(tracking).experiment_id],
                                      order_by=["attributes.start_time DESC"])
    assert runs[0].info.status == "FAILED"
    assert "rule 'id_unique'" in runs[0].data.tags["error"]

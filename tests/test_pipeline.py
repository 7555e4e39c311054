"""dvc.yaml's commands against their stages, and `dvc repro` for real, in a temporary git repository with a
tiny corpus at the bundled paths."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from papersim.stage import stage_command
from tests.conftest import REPO, paper, project_repo, write_jsonl, write_page

STAGES = ("sources", "ingest", "mine_pairs", "train", "evaluate", "build_index")
TRACKED = STAGES[1:]  # the stages with an MLflow run (sources, a listing of files, has none)


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_runs_as_dvc_yaml_calls_it_and_a_missing_params_file_is_one_line(stage, tmp_path):
    missing = tmp_path / "params.yaml"
    cmd = stage_command(REPO, stage, {"params": str(missing)})
    assert cmd[:3] == ["python", "-m", f"stages.{stage}"]
    result = subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, capture_output=True, text=True, check=False)
    # 1, not argparse's 2: the stage declares every argument dvc.yaml passes, and stops before reading any
    assert (result.returncode, result.stderr) == (1, f"error: {missing}: params file not found\n")


@pytest.fixture
def repo(tmp_path, tracking, tiny_model_dir) -> Path:
    """The project's dvc.yaml, stages and params in a fresh git + DVC repo, with tiny inputs."""
    root = tmp_path / "repo"
    write_jsonl(root / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl", [paper(i) for i in range(1, 9)])
    write_page(root / "data/raw/hf_pages/page_one.txt", [("A listed paper", "Its abstract, long enough to pass."),
                                                         ("Second listed paper", "Another abstract long enough.")])
    write_page(root / "data/raw/hf_pages/page_two.txt", [("A listed paper", "Its abstract, long enough to pass.")])
    write_jsonl(root / "data/raw/beir/cranfield/corpus.jsonl", [
        {"_id": "1", "title": "wing flutter", "text": "wing flutter at supersonic speed in a wind tunnel"},
        {"_id": "2", "title": "", "text": ""},  # like Cranfield's empty documents: quarantined
    ])
    write_jsonl(root / "data/raw/beir/cranfield/queries.jsonl", [{"_id": "1", "text": "supersonic flutter"}])
    (root / "data/raw/beir/cranfield/qrels").mkdir()
    (root / "data/raw/beir/cranfield/qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t2\n")

    def tiny(params: dict) -> None:
        params["ingest"]["max_rejected_fraction"] = 0.2  # 1 empty document in 13 rows
        params["mine_pairs"].update(model=str(tiny_model_dir), val_fraction=0.3, num_negatives=2)
        params["train"].update(base_model=str(tiny_model_dir), max_seq_length=32, batch_size=2, num_negatives=2,
                               max_steps=2, eval_steps=1, save_steps=1, logging_steps=1)
        params["evaluate"].update(base_model=str(tiny_model_dir), max_seq_length=32)
        params["build_index"].update(max_seq_length=32)

    project_repo(root, tiny)
    return root


@pytest.mark.slow
def test_dvc_repro_runs_the_stages_then_skips_then_keeps_outputs_on_bad_input(repo, tracking):
    first = sh(["dvc", "repro"], repo)
    assert all(f"Running stage '{s}'" in first.stdout for s in STAGES)
    pairs = json.loads((repo / "reports/mine_pairs.json").read_text())
    assert pairs["pairs"]["train"]["total"] > 0 and (repo / "data/pairs/train.parquet").is_file()
    assert json.loads((repo / "reports/train.json").read_text())["steps"] == 2
    assert (repo / "models/encoder/model.safetensors").is_file()

    report = json.loads((repo / "reports/ingest.json").read_text())
    assert report["rows_read"] == {"arxiv": 8, "hf_pages": 3, "cranfield": 2}
    assert report["duplicates_merged"] == 1 and report["rejected_total"] == 1 and report["rows_written"] == 11
    metrics = sh(["dvc", "metrics", "show", "--json"], repo).stdout
    assert '"rows_written": 11' in metrics

    second = sh(["dvc", "repro"], repo)
    assert "didn't change, skipping" in second.stdout
    assert [s for s in STAGES if f"Running stage '{s}'" in second.stdout] == ["sources"]  # it always runs

    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name(tracking).experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(TRACKED)
    evaluation = json.loads((repo / "reports/evaluate.json").read_text())
    assert evaluation["cranfield"]["bm25"]["recall@1"] == 1.0 and "hybrid" in evaluation["cranfield"]
    assert json.loads((repo / "reports/build_index.json").read_text())["papers"] == 11
    found = sh(["papersim", "similar", "cranfield:1", "-k", "2", "--json"], repo).stdout.splitlines()
    assert len(found) == 2 and "cranfield:1" not in found[0]
    assert {r.info.run_name: r for r in runs}["ingest"].data.metrics["rows_written"] == 11

    papers = (repo / "data/processed/papers.parquet").read_bytes()
    with (repo / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl").open("a") as f:
        f.write(json.dumps(paper(9, id="p1")) + "\n")  # same id as line 1, different text
    failed = sh(["dvc", "repro"], repo, check=False)
    assert failed.returncode != 0
    assert "rule 'id_unique'" in failed.stderr and "ml_kaggle_abstracts_sample.jsonl line 9" in failed.stderr
    assert (repo / "data/processed/papers.parquet").read_bytes() == papers


@pytest.mark.slow
def test_changing_params_reruns_the_stage(repo):
    sh(["dvc", "repro", "ingest"], repo)  # the whole pipeline's repro, skip and rerun: the test above
    assert "didn't change, skipping" in sh(["dvc", "repro", "ingest"], repo).stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["min_abstract_chars"] = 40  # the cranfield document (49 chars) passes, the 3 page listings not
    params["ingest"]["max_rejected_fraction"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    rerun = sh(["dvc", "repro", "ingest"], repo)
    assert "Running stage 'ingest'" in rerun.stdout
    report = json.loads((repo / "reports/ingest.json").read_text())
    assert report["rejected"]["abstract_length"] == 3 and report["rows_written"] == 9


@pytest.fixture
def ingest_repo(tmp_path, tracking) -> Path:
    """A repository whose params.yaml adds a source outside the bundled paths (outside the repository, too)."""
    root = tmp_path / "repo"
    write_jsonl(root / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl", [paper(i) for i in range(1, 4)])
    write_page(root / "data/raw/hf_pages/page_one.txt", [("A listed paper", "Its abstract, long enough to pass.")])
    write_jsonl(root / "data/raw/beir/cranfield/corpus.jsonl", [
        {"_id": "1", "title": "wing flutter", "text": "wing flutter at supersonic speed in a wind tunnel"}])
    write_jsonl(tmp_path / "elsewhere/fresh.jsonl", [paper(50)])
    project_repo(root, lambda params: params["ingest"]["sources"].append(
        {"path": str(tmp_path / "elsewhere/fresh.jsonl"), "name": "fresh"}))
    return root


@pytest.mark.slow
def test_papers_appended_to_a_source_added_through_params_rerun_ingest(ingest_repo, tmp_path):
    fresh = tmp_path / "elsewhere/fresh.jsonl"
    papers = ingest_repo / "data/processed/papers.parquet"
    assert "Running stage 'ingest'" in sh(["dvc", "repro", "ingest"], ingest_repo).stdout
    os.utime(fresh)  # touched, not changed
    unchanged = sh(["dvc", "repro", "ingest"], ingest_repo).stdout
    assert "Running stage 'sources'" in unchanged and "Running stage 'ingest'" not in unchanged
    original = fresh.read_text()
    with fresh.open("a") as f:
        f.write("".join(json.dumps(paper(i)) + "\n" for i in (51, 52)))
    assert "Running stage 'ingest'" in sh(["dvc", "repro", "ingest"], ingest_repo).stdout
    assert {"p50", "p51", "p52"} <= set(pd.read_parquet(papers)["paper_id"])
    fresh.write_text(original)  # the two papers removed again
    assert "Running stage 'ingest'" in sh(["dvc", "repro", "ingest"], ingest_repo).stdout
    ids = set(pd.read_parquet(papers)["paper_id"])
    assert "p50" in ids and not {"p51", "p52"} & ids

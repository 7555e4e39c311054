"""The mine_pairs stage through `main()`: outputs, the MLflow run, and outputs kept on bad input."""

import json

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from stages.mine_pairs import main
from tests.conftest import corpus_frame


@pytest.fixture
def project(tmp_path, monkeypatch, tracking, tiny_model_dir, stage_argv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/processed").mkdir(parents=True)
    corpus_frame(60).drop(columns=[]).to_parquet(tmp_path / "data/processed/papers.parquet", index=False)
    params = {"mine_pairs": {"val_fraction": 0.2, "test_fraction": 0.2, "num_negatives": 2, "range_max": 20,
                             "max_group_size": 20, "model": str(tiny_model_dir), "max_seq_length": 64}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(stage_argv("mine_pairs")) == 0
    return tmp_path


def test_writes_pairs_split_report_and_one_run(project, tracking):
    train = pd.read_parquet(project / "data/pairs/train.parquet")
    split = pd.read_parquet(project / "data/pairs/split.parquet")
    report = json.loads((project / "reports/mine_pairs.json").read_text())
    assert {"anchor", "positive", "negative_1", "negative_2", "source", "anchor_id", "positive_id"} <= set(train.columns)
    assert len(split) == 60 and report["pairs"]["train"]["total"] == len(train)
    run, = MlflowClient().search_runs([mlflow.get_experiment_by_name(tracking).experiment_id])
    assert run.info.run_name == "mine_pairs" and run.data.params["num_negatives"] == "2"
    assert run.data.metrics["pairs.train.total"] == len(train)


def test_bad_params_and_missing_papers_keep_previous_pairs(project, capsys, stage_argv):
    before = (project / "data/pairs/train.parquet").read_bytes()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["mine_pairs"]["miner"] = ["bm25"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(stage_argv("mine_pairs")) == 1
    assert "params.yaml: mine_pairs: unknown key(s) 'miner'" in capsys.readouterr().err
    del params["mine_pairs"]["miner"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(stage_argv("mine_pairs", papers="data/processed/nope.parquet")) == 1
    assert "run the ingest stage first" in capsys.readouterr().err
    assert (project / "data/pairs/train.parquet").read_bytes() == before

"""The train stage: one MLflow run with the model, resume after SIGKILL, and 2-process DDP on CPU."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sentence_transformers import SentenceTransformer

from stages.train import main
from tests.conftest import REPO, papers_frame, toy_pairs


@pytest.fixture
def project(tmp_path, monkeypatch, tracking, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/pairs").mkdir(parents=True)
    toy_pairs(80).to_parquet(tmp_path / "data/pairs/train.parquet", index=False)
    toy_pairs(16, offset=500).to_parquet(tmp_path / "data/pairs/val.parquet", index=False)
    write_corpus(tmp_path)
    write_params(tmp_path, base_model=str(tiny_model_dir), max_seq_length=32, batch_size=4, num_negatives=2,
                 max_steps=6, eval_steps=3, save_steps=3, logging_steps=1)
    return tmp_path


def write_corpus(root: Path, n: int = 40, real: bool = False) -> None:
    """papers.parquet and a split (every 5th paper val, the next test): the serving choice reads them.
    `real`: the first n bundled arXiv papers instead of the four-topic toy corpus."""
    papers = papers_frame(n)
    if real:
        papers = pd.read_json(REPO / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl", lines=True).head(n)
        papers = papers.rename(columns={"id": "paper_id"})[["paper_id", "title", "abstract"]]
        papers = papers.assign(source="arxiv", groups=[[] for _ in range(n)],  # papers.parquet's columns; no
                               content_hash=[f"{i:032x}" for i in range(n)])  # listing: no similar-task queries
    (root / "data/processed").mkdir(parents=True, exist_ok=True)
    papers.to_parquet(root / "data/processed/papers.parquet", index=False)
    split = ["val" if i % 5 == 0 else "test" if i % 5 == 1 else "train" for i in range(n)]
    pd.DataFrame({"paper_id": papers["paper_id"], "split": split}).to_parquet(root / "data/pairs/split.parquet",
                                                                             index=False)


def write_params(root: Path, **train) -> None:
    train.setdefault("backend", "torch")  # a tiny model: no OpenVINO conversion needed
    (root / "params.yaml").write_text(yaml.safe_dump({"train": train}))


def stage_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


TINY = dict(max_seq_length=32, batch_size=4, num_negatives=2, max_steps=6, eval_steps=3, save_steps=3, logging_steps=1)


def test_one_run_with_params_step_metrics_reports_and_the_model(project, tracking, stage_argv, tiny_model_dir):
    # Trained on title -> abstract pairs: no pseudo-query is evidence (a model wins the self-retrieval task it was
    # trained on), so the base serves search whatever training did, and the report says why.
    write_params(project, base_model=str(tiny_model_dir), learning_rate=0.0, **TINY)
    assert main(stage_argv("train")) == 0
    report = json.loads((project / "reports/train.json").read_text())
    assert report["steps"] == 6 and (project / "reports/train_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert SentenceTransformer(str(project / "models/encoder")).encode(["x"]).shape == (1, 32)
    assert not (project / "models/checkpoints").exists()  # finished: nothing to resume
    serving = json.loads((project / "models/serving.json").read_text())
    assert report["serving"] == serving and serving["encoder"] == "base"
    assert serving["evidence"]["train_pairs"] == {"title_abstract": 80} and serving["evidence"]["evidence"] == "none"
    assert "no evidence that training did not produce" in serving["reason"]
    assert serving["evidence"]["independent_families"] == [] and serving["fusion"]["alpha"] == 0.5

    client = MlflowClient()
    run, = client.search_runs([mlflow.get_experiment_by_name(tracking).experiment_id])
    assert run.info.run_name == "train" and run.data.params["max_steps"] == "6"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4, 5, 6]
    assert len(client.get_metric_history(run.info.run_id, "eval_val_cosine_ndcg_at_10")) == 2
    reports = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert reports == {"reports/train.json", "reports/train_loss.csv", "reports/train_loss.png"}
    assert client.list_artifacts(run.info.run_id, "model") == []  # no ~90 MB copy a retrain: DVC and the registry hold it
    timings = json.loads((project / "reports/train.timings.json").read_text())
    assert set(timings) == {"train_runtime_s", "train_pairs_per_s"} and not set(timings) & set(report)
    assert run.data.metrics["train_runtime_s"] == timings["train_runtime_s"]


def colisted(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs as if mined from listings: the validation papers' pseudo-queries are then evidence."""
    return pairs.assign(source="co_listed")


def test_on_independent_evidence_a_tie_keeps_the_base_and_min_gain_below_it_serves_the_trained(
        project, tracking, stage_argv, tiny_model_dir):
    colisted(toy_pairs(80)).to_parquet(project / "data/pairs/train.parquet", index=False)
    # Learning rate 0: the trained weights are the base's, so the evidence is a known tie: the base serves ...
    write_params(project, base_model=str(tiny_model_dir), learning_rate=0.0, **TINY)
    assert main(stage_argv("train")) == 0
    serving = json.loads((project / "models/serving.json").read_text())
    assert serving["encoder"] == "base" and serving["evidence"]["independent_families"] == ["title", "sentence"]
    assert serving["evidence"]["trained/ndcg@10"] == serving["evidence"]["base/ndcg@10"]
    assert ("+0.0000 (95% CI +0.0000 to +0.0000, p 1.0000: not above min_gain 0.0 beyond noise): the base encoder "
            "serves") in serving["reason"]
    assert serving["evidence"]["sets"] == {"pseudo-queries": 8}
    # ... and against a min_gain below the tie, the rule picks the trained encoder.
    write_params(project, base_model=str(tiny_model_dir), learning_rate=0.0, select_min_gain=-0.01, **TINY)
    assert main(stage_argv("train")) == 0
    serving = json.loads((project / "models/serving.json").read_text())
    assert serving["encoder"] == "trained"  # every query 0.01 above the margin: p = 2/2^8
    assert "p 0.0078: above min_gain -0.01 beyond noise): the trained encoder serves" in serving["reason"]


def test_the_similar_task_can_be_fixed_to_base_with_encoder_selection_off(project, tracking, stage_argv,
                                                                          tiny_model_dir):
    write_params(project, base_model=str(tiny_model_dir), select_encoder=False, similar_encoder="base", **TINY)
    assert main(stage_argv("train")) == 0
    serving = json.loads((project / "models/serving.json").read_text())
    assert serving["encoder"] == "trained" and serving["similar"]["encoder"] == "base"
    similar = project / "models/similar_encoder"  # no merge served: the folder only says so
    assert [p.name for p in similar.iterdir()] == ["README.md"] and "the base encoder" in (similar / "README.md").read_text()


@pytest.mark.slow
def test_harmful_training_leaves_the_base_encoder_serving(tmp_path, monkeypatch, tracking, stage_argv):
    """A learning rate that wrecks all-MiniLM-L6-v2 in three steps: the candidate keeps the base encoder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/pairs").mkdir(parents=True)
    write_corpus(tmp_path, 150, real=True)  # 30 validation papers ask for themselves among 120 non-test papers
    colisted(toy_pairs(48)).to_parquet(tmp_path / "data/pairs/train.parquet", index=False)  # evidence: see above
    toy_pairs(8, offset=500).to_parquet(tmp_path / "data/pairs/val.parquet", index=False)
    write_params(tmp_path, base_model="", max_seq_length=32, batch_size=8, num_negatives=0, learning_rate=0.5,
                 warmup_ratio=0.0, max_steps=3, eval_steps=3, save_steps=3, logging_steps=1)
    assert main(stage_argv("train")) == 0
    serving = json.loads((tmp_path / "models/serving.json").read_text())
    assert serving["encoder"] == "base" and "the base encoder serves" in serving["reason"]
    assert serving["evidence"]["trained/ndcg@10"] < serving["evidence"]["base/ndcg@10"]
    assert json.loads((tmp_path / "reports/train.json").read_text())["serving"]["encoder"] == "base"


def test_a_similar_encoder_away_from_the_trained_one_is_a_clear_error(project, capsys, stage_argv):
    assert main(stage_argv("train", similar_model="elsewhere/similar_encoder")) == 1
    assert "it must sit beside --model, at models/similar_encoder" in capsys.readouterr().err


def test_missing_pairs_is_a_clear_error(project, capsys, stage_argv):
    assert main(stage_argv("train", pairs="data/nope")) == 1
    assert "run the mine_pairs stage first" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(project, tiny_model_dir, stage_argv):
    write_params(project, base_model=str(tiny_model_dir), max_seq_length=32, batch_size=4, num_negatives=2,
                 max_steps=80, eval_steps=5, save_steps=5, logging_steps=5, early_stopping_patience=1000)
    proc = subprocess.Popen([sys.executable, "-m", "stages.train", *stage_argv("train")], cwd=project, env=stage_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not (project / "models/checkpoints/checkpoint-10/trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint before the deadline"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (project / "models/encoder").exists()  # nothing half-written

    write_params(project, base_model=str(tiny_model_dir), max_seq_length=32, batch_size=4, num_negatives=2,
                 max_steps=80, eval_steps=5, save_steps=5, logging_steps=5, early_stopping_patience=1000)
    rerun = subprocess.run([sys.executable, "-m", "stages.train", *stage_argv("train")], cwd=project, env=stage_env(),
                           capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    report = json.loads((project / "reports/train.json").read_text())
    assert report["resumed_from_step"] >= 10 and report["steps"] == 80
    assert "(resumed from" in rerun.stdout
    assert SentenceTransformer(str(project / "models/encoder")).encode(["x"]).shape == (1, 32)


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_trains_and_saves_once(project, tracking, stage_argv):
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--nproc_per_node=2", "-m", "stages.train", *stage_argv("train")],
                            cwd=project, env=stage_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((project / "reports/train.json").read_text())
    assert report["world_size"] == 2 and report["steps"] == 6 and report["best_metric"] == "loss"
    assert result.stdout.count("train: 6 steps") == 1  # only rank 0 reports
    assert sorted(p.name for p in (project / "models").iterdir()) == ["encoder", "serving.json", "similar_encoder"]
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name(tracking).experiment_id])
    assert [r.info.run_name for r in runs] == ["train"]


def cranfield_papers(n: int) -> tuple[pd.DataFrame, dict]:
    """The first n bundled Cranfield abstracts (title, abstract) and their judgments."""
    from papersim.evaluation.shapes import read_beir_papers

    papers, _, qrels = read_beir_papers(REPO / "data/raw/beir/cranfield")
    return papers.head(n), qrels


@pytest.mark.parametrize("shape", ["titled", "untitled", "title_only", "one_sentence"])
def test_training_made_worse_on_purpose_leaves_the_base_serving_search_on_every_corpus_shape(
        shape, tmp_path, monkeypatch, tracking, stage_argv, tiny_model_dir):
    """Cranfield in each shape users bring, mined as mine_pairs does and trained at a learning rate that wrecks
    the encoder: its self-retrieval pairs make every pseudo-query training's own evidence, so base serves."""
    from papersim.evaluation.shapes import reshape
    from papersim.training.pairs import MinePairsConfig, mine_pairs

    monkeypatch.chdir(tmp_path)
    docs, _ = reshape(*cranfield_papers(80), shape)
    mined = mine_pairs(docs, MinePairsConfig(miners=["bm25"], num_negatives=0), None)
    (tmp_path / "data/pairs").mkdir(parents=True)
    (tmp_path / "data/processed").mkdir(parents=True)
    for name, frame in (("train", mined.train), ("val", mined.val), ("split", mined.split)):
        frame.to_parquet(tmp_path / f"data/pairs/{name}.parquet", index=False)
    docs.assign(source="cranfield").to_parquet(tmp_path / "data/processed/papers.parquet", index=False)
    write_params(tmp_path, base_model=str(tiny_model_dir), learning_rate=0.5, warmup_ratio=0.0,
                 **{**TINY, "num_negatives": 0})
    assert main(stage_argv("train")) == 0
    serving = json.loads((tmp_path / "models/serving.json").read_text())
    taught = serving["evidence"]["train_pairs"]
    assert taught.get("title_abstract", 0) + taught.get("self_supervised", 0) == len(mined.train) > 0
    assert serving["encoder"] == "base" and serving["evidence"]["evidence"] == "none"
    assert serving["fusion"]["alpha"] == 0.5 and "the base model serves" in serving["reason"]
    assert serving["similar"]["encoder"] == "base"  # no listings: nothing to choose on, base


def test_mine_pairs_then_train_give_the_same_bytes_again_whatever_the_embedding_cache_holds(
        tmp_path, monkeypatch, tracking, stage_argv, tiny_model_dir):
    # `dvc repro` must reproduce dvc.lock: the second round reads vectors that a later stage cached with other
    # texts batched together, as a working copy's cache holds them, where the first started empty as a clone.
    from papersim.encoders.cache import cached_embedder
    from stages.mine_pairs import main as mine

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/pairs").mkdir(parents=True)
    write_corpus(tmp_path, 60, real=True)
    papers = pd.read_parquet(tmp_path / "data/processed/papers.parquet")
    papers.assign(groups=[[f"page{i % 6}"] for i in range(len(papers))]).to_parquet(
        tmp_path / "data/processed/papers.parquet", index=False)  # listings: co-listed pairs, same-group filter
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "mine_pairs": {"val_fraction": 0.2, "test_fraction": 0.2, "group_test_fraction": 0.0,
                       "group_val_fraction": 0.2, "num_negatives": 2, "range_max": 20, "model": str(tiny_model_dir),
                       "max_seq_length": 32},
        "train": {"base_model": str(tiny_model_dir), **TINY, "num_negatives": 1, "selection_queries": 8}}))
    cache = tmp_path / "later-stage-cache"
    texts = [*papers["abstract"], *papers["title"]]
    cached_embedder(str(tiny_model_dir), "auto", 32, 5, cache)([texts[i] for i in np.random.default_rng(1).permutation(
        len(texts))])
    outputs = []
    for run, embedding_cache in (("first", "clone-cache"), ("second", str(cache))):
        pairs, out = f"{run}/pairs", f"{run}/out"
        assert mine(stage_argv("mine_pairs", out=pairs, report=f"{out}/mine_pairs.json",
                               embedding_cache=embedding_cache)) == 0
        assert main(stage_argv("train", pairs=pairs, model=f"{out}/encoder", serving=f"{out}/serving.json",
                               similar_model=f"{out}/similar_encoder", embedding_cache=embedding_cache, checkpoints=f"{run}/checkpoints",
                               report=f"{run}/train.json", loss_csv=f"{out}/loss.csv", plot=f"{out}/loss.png")) == 0
        outputs.append({str(p.relative_to(tmp_path / run)): p.read_bytes()
                        for folder in (pairs, out) for p in sorted((tmp_path / folder).rglob("*")) if p.is_file()})
    assert "out/encoder/model.safetensors" in outputs[0] and "pairs/train.parquet" in outputs[0]
    assert [name for name in outputs[0] if outputs[0][name] != outputs[1].get(name)] == []

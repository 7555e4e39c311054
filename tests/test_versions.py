"""What a registered version holds, in a real SQLite MLflow registry: a trained version carries its model,
a refresh version its index and a reference to the trained model's artifacts, and both load and answer."""

import json
import shutil

import mlflow.pyfunc
import pandas as pd
import pytest

from papersim.errors import PapersimError
from papersim.lifecycle import registry
from papersim.lifecycle import tracking as tracking_api
from papersim.lifecycle.refresh import MODEL_TAG, REFRESH_TAG
from papersim.lifecycle.retrain import RetrainConfig
from papersim.lifecycle.versions import MODEL_REF, Candidate, Version, fetch, register, register_refresh
from tests.conftest import papers_frame

DECISION = {"promote": True, "reason": "test", "primary": 0.5}


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def registered(built, tracking, tmp_path, request):
    """A trained version of the built workspace (champion) and a refresh of it (its index copied)."""
    name = "ver-" + request.node.name[:40]
    cfg = RetrainConfig(model_name=name, drift_sample_size=10, drift_permutations=20)
    (built / "reports").mkdir(exist_ok=True)
    (built / "reports/evaluate.json").write_text("{}", encoding="utf-8")
    (built / "dvc.lock").write_text("schema: '2.0'\n", encoding="utf-8")
    with tracking_api.flow_run("versions-test", {}, {}) as run:
        trained = register(Candidate.in_workspace(built), cfg, DECISION, "fp", run.run_id, {})
    registry.promote(name, trained)
    champion = tracking_api.model_version(name, alias="champion")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    shutil.copytree(built / "artifacts/index", scratch / "index")
    shutil.copy(built / "models/serving.json", scratch / "serving.json")
    (scratch / "evaluate.json").write_text("{}", encoding="utf-8")
    with tracking_api.flow_run("versions-test", {}, {}) as run:
        refreshed = register_refresh(built, fetch(name, trained, built), champion["source"], scratch, cfg, DECISION,
                                     "fp", run.run_id, {REFRESH_TAG: trained, MODEL_TAG: trained}, "a refresh")
    registry.promote(name, refreshed)
    return {"name": name, "cfg": cfg, "trained": trained, "refreshed": refreshed, "root": built}


def test_a_refresh_version_holds_its_index_and_refers_to_the_trained_model(registered):
    root, name = registered["root"], registered["name"]
    trained, refreshed = fetch(name, registered["trained"], root), fetch(name, registered["refreshed"], root)
    assert (trained.folder / "artifacts/encoder").is_dir() and trained.model_ref() is None
    assert not (refreshed.folder / "artifacts/encoder").exists()
    assert json.loads((refreshed.folder / "artifacts" / MODEL_REF).read_text())["model_version"] == "1"
    assert refreshed.encoder == trained.encoder and refreshed.model_version == "1"  # the store's own folder
    assert refreshed.split is not None and refreshed.split.read_bytes() == (root / "data/pairs/split.parquet").read_bytes()
    # what an hourly refresh adds: the index and a few small files, not the encoder
    index = _size(refreshed.index)
    assert _size(refreshed.folder) < index + 2_000_000 < _size(trained.folder)
    # a refresh of the refresh refers to the same trained version
    assert refreshed.model_artifacts("runs:/elsewhere/x") == trained.model_artifacts(
        tracking_api.model_version(name, version=registered["trained"])["source"])


def test_a_refresh_version_loads_and_answers_on_its_own(registered):
    model = mlflow.pyfunc.load_model(f"models:/{registered['name']}@champion")
    hits = model.predict(pd.DataFrame({"query": ["supersonic flutter"], "k": [3.0]}))
    assert len(hits) == 3 and "flutter" in hits["title"].iloc[0]


def test_drift_counts_change_since_training_through_refreshes(registered):
    root, name, cfg = registered["root"], registered["name"], registered["cfg"]
    refreshed = fetch(name, registered["refreshed"], root)
    papers = pd.read_parquet(root / "data/processed/papers.parquet")
    trained_on = refreshed.trained_corpus()
    assert sorted(trained_on["paper_id"]) == sorted(papers["paper_id"])
    current = pd.concat([papers.iloc[2:], papers_frame(3, start=100)], ignore_index=True)
    drift = refreshed.drift_against(current, cfg)
    assert (drift.since_training.new, drift.since_training.removed) == (3, 2)
    assert drift.embedding is not None and drift.embedding.n_reference == len(papers[:10])


def test_a_version_whose_index_is_gone_is_a_clear_error(registered, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fetch(registered["name"], registered["refreshed"], registered["root"]).folder, copy)
    shutil.rmtree(copy / "artifacts/index")
    with pytest.raises(PapersimError, match="holds no index"):
        Version(copy).index


def test_a_merged_similar_encoder_is_registered_with_the_version_and_rescored_from_it(built, tracking, tiny_model_dir):
    from papersim.encoders.encode import model_fingerprint
    from papersim.encoders.load import load_encoder, save_tiny_encoder
    from papersim.lifecycle.versions import rescore_serving
    from papersim.training.merge import merge_weights
    from stages.build_index import main as build
    from tests.test_stage_build_index import args

    merged = built / "models/similar_encoder"  # the train stage's chosen merge, beside models/encoder
    other = load_encoder(str(save_tiny_encoder(built / "other", seed=7)))
    merge_weights(load_encoder(str(tiny_model_dir)), other, 0.5).save(str(merged))
    serving = json.loads((built / "models/serving.json").read_text())
    serving["similar"] = {**serving["similar"], "encoder": "merged", "merge_weight": 0.5}
    (built / "models/serving.json").write_text(json.dumps(serving))
    assert build(args(built)) == 0
    (built / "reports/evaluate.json").write_text("{}", encoding="utf-8")
    (built / "dvc.lock").write_text("schema: '2.0'\n", encoding="utf-8")
    name = "ver-merged"
    with tracking_api.flow_run("versions-test", {}, {}) as run:
        number = register(Candidate.in_workspace(built), RetrainConfig(model_name=name), DECISION, "fp", run.run_id, {})
    version = fetch(name, number, built)
    assert model_fingerprint(str(version.similar_encoder)) == model_fingerprint(str(merged))
    assert model_fingerprint(str(version.encoder)) != model_fingerprint(str(merged))
    rescored = rescore_serving(version)  # evaluate re-scores the champion's similar answers with the merge
    assert rescored.similar_folder(str(version.encoder)) == str(version.similar_encoder)

"""The retrain flow for real: Prefect's test harness, dvc repro in a temporary git repository,
a SQLite MLflow store and registry, the tiny model."""

import json

import mlflow
import pytest
import yaml
from filelock import FileLock
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from papersim.cli import build_parser, run_search
from papersim.cli import main as cli
from papersim.errors import PapersimError
from papersim.lifecycle import registry
from papersim.lifecycle import tracking as tracking_api
from papersim.lifecycle.workspace import LOCK
from tests.conftest import REPO, paper, project_repo, write_jsonl, write_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def repo(tmp_path, tracking, tiny_model_dir):
    """The project's pipeline in a fresh git + DVC repo with a small corpus and the tiny model."""
    root = tmp_path / "repo"
    topics = ["supersonic wing flutter", "laminar heat transfer", "graph neural networks", "sentence embeddings"]
    write_jsonl(root / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl",
                [paper(i, title=f"On {topics[i % 4]}, study {i}",
                       abstract=f"We measure {topics[i % 4]} in experiment {i} and compare it with {i + 3} baselines.",
                       categories=[f"cat{i % 4}"]) for i in range(1, 25)])
    write_page(root / "data/raw/hf_pages/page_one.txt", [("A listed paper", "Its abstract, long enough to pass."),
                                                         ("Second listed paper", "Another abstract long enough.")])
    write_jsonl(root / "data/raw/beir/cranfield/corpus.jsonl", [
        {"_id": str(i), "title": topics[i % 4], "text": f"{topics[i % 4]} measured in a wind tunnel, run {i}"}
        for i in range(1, 9)])
    write_jsonl(root / "data/raw/beir/cranfield/queries.jsonl",
                [{"_id": str(q), "text": topics[q % 4]} for q in range(1, 5)])
    (root / "data/raw/beir/cranfield/qrels").mkdir()
    (root / "data/raw/beir/cranfield/qrels/test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q in range(1, 5) for d in range(1, 9)
                                                 if d % 4 == q % 4))

    def tiny(params: dict) -> None:
        params["mine_pairs"].update(model=str(tiny_model_dir), val_fraction=0.2, test_fraction=0.2, num_negatives=1)
        params["train"].update(base_model=str(tiny_model_dir), max_seq_length=32, batch_size=4, max_steps=3,
                               eval_steps=3, save_steps=3, logging_steps=1)
        params["evaluate"].update(base_model=str(tiny_model_dir), max_seq_length=32, backend="torch")
        params["build_index"].update(max_seq_length=32, backend="torch", recall_queries=5)
        params["retrain"].update(drift_sample_size=10, drift_permutations=50)

    return project_repo(root, tiny)


def runs_of(experiment: str, parent: str) -> list:
    client = MlflowClient()
    exp = mlflow.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


def aliases(name: str) -> dict[str, str]:
    return {alias: v["version"] for v in tracking_api.model_versions(name) for alias in v["aliases"]}


def test_retrain_promotes_gates_skips_and_fails_cleanly(repo, tracking, prefect_server, monkeypatch):
    from flows import retrain as flow_module

    name = "papersim"
    # 1. Empty registry: the first model becomes the champion.
    first = flow_module.retrain(root=str(repo))
    assert first["status"] == "promoted" and first["version"] == "1", first
    assert aliases(name) == {"champion": "1"}
    stages = runs_of(tracking, first["mlflow_run_id"])
    assert {r.info.run_name for r in stages} == {"ingest", "mine_pairs", "train", "evaluate", "build_index"}
    parent = MlflowClient().get_run(first["mlflow_run_id"])
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    assert all(r.data.tags["prefect.flow_run_id"] == flow_run_id for r in stages)
    assert parent.data.tags["mlflow.source.git.commit"] != "unknown"
    version = tracking_api.model_version(name, alias="champion")
    assert version["tags"]["eval_set.cranfield.content_hash"]
    assert json.loads((repo / "reports/eval.json").read_text())["cranfield"]["content_hash"] == \
        version["tags"]["eval_set.cranfield.content_hash"]

    monkeypatch.chdir(repo)  # `papersim search --model champion` reads params.yaml and the registry from here
    # (not through capsys: Prefect's log handler keeps the stream it first saw)
    out = run_search(build_parser().parse_args(["search", "supersonic wing flutter", "--model", "champion",
                                                "-k", "3", "--json"]))
    hits = [json.loads(line) for line in out.splitlines()]
    assert len(hits) == 3 and "flutter" in hits[0]["title"]

    assert version["tags"]["papersim.served_encoder"] in ("trained", "base")
    assert version["tags"]["papersim.fusion"].startswith("convex (alpha=0.5")

    # 2. A deliberately worse recipe (a learning rate that wrecks the encoder, served because encoder
    # selection is off) stays challenger.
    worse = flow_module.retrain(root=str(repo), overrides={"train.learning_rate": 5.0, "train.max_steps": 6,
                                                           "train.select_encoder": False})
    assert worse["status"] == "challenger" and worse["version"] == "2", worse
    assert tracking_api.model_version(name, version="2")["tags"]["papersim.served_encoder"] == "trained"
    assert aliases(name) == {"champion": "1", "challenger": "2"}
    assert "learning_rate: 5.0" not in (repo / "params.yaml").read_text()  # overrides last one run
    registered_params = yaml.safe_load((tracking_api.download_model(name, "2", repo / "cache/registry")
                                        / "artifacts/params.yaml").read_text())
    assert registered_params["train"]["learning_rate"] == 5.0

    # 3. Nothing changed since the champion: skipped by the drift check, nothing registered.
    skipped = flow_module.retrain(root=str(repo))
    assert skipped["status"] == "skipped" and "nothing to do" in skipped["reason"], skipped
    assert runs_of(tracking, skipped["mlflow_run_id"]) == []  # ingest was up to date: DVC ran nothing
    assert len(tracking_api.model_versions(name)) == 2
    run = MlflowClient().get_run(skipped["mlflow_run_id"])
    assert run.data.tags["papersim.outcome"] == "skipped" and run.data.metrics["drift.changed_share"] == 0
    assert [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "drift")] == ["drift/drift_history.png"]

    # Promote the challenger by hand, then roll back: the alias moves both ways.
    assert cli(["registry", "promote", "2"]) == 0 and aliases(name) == {"champion": "2"}
    assert cli(["registry", "rollback"]) == 0 and aliases(name)["champion"] == "1"
    registry.mark_challenger(name, "2")

    # 4. A failing stage: retried, then the flow fails; champion and versions unchanged.
    monkeypatch.setattr(flow_module, "build_index", flow_module.build_index.with_options(retry_delay_seconds=0))
    with pytest.raises(Exception, match="dvc repro build_index failed"):
        flow_module.retrain(root=str(repo), overrides={"build_index.factory": "NoSuchIndex"}, force=True)
    assert aliases(name) == {"champion": "1", "challenger": "2"} and len(tracking_api.model_versions(name)) == 2
    failed = MlflowClient().search_runs([mlflow.get_experiment_by_name(tracking).experiment_id],
                                        filter_string="attributes.run_name = 'build_index' and "
                                                      "attributes.status = 'FAILED'")
    assert len(failed) == 2  # the first attempt and its retry
    assert "factory: NoSuchIndex" not in (repo / "params.yaml").read_text()

    # 5. New papers: the drift check sees them and the flow retrains.
    with (repo / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl").open("a") as f:
        f.write(json.dumps(paper(99, title="A brand new paper on quantum annealing",
                                 abstract="Quantum annealing schedules for sparse optimisation problems.")) + "\n")
    fresh = flow_module.retrain(root=str(repo))
    assert fresh["status"] in ("promoted", "challenger") and "1 new" in fresh["drift"], fresh
    assert fresh["version"] == "3"
    # The held-out set now has another candidate paper: its hash changed, so the champion was re-scored.
    assert fresh["champion_rescored"]
    rescore = [r for r in runs_of(tracking, fresh["mlflow_run_id"]) if r.data.tags.get("papersim.role")]
    assert [r.data.tags["papersim.role"] for r in rescore] == ["champion_rescore"]


def test_a_second_retrain_exits_while_one_holds_the_lock(repo, tracking, prefect_server):
    from flows import retrain as flow_module

    (repo / ".papersim").mkdir()
    with FileLock(str(repo / LOCK)):
        with pytest.raises(PapersimError, match="another retrain is running"):
            flow_module.retrain(root=str(repo), lock_timeout_s=0)


def test_bad_override_fails_before_any_stage(repo, tracking, prefect_server):
    from flows import retrain as flow_module

    before = (repo / "params.yaml").read_text()
    with pytest.raises(PapersimError, match="train has no key 'max_step'"):
        flow_module.retrain(root=str(repo), overrides={"train.max_step": 1})
    assert (repo / "params.yaml").read_text() == before and not (repo / "data/processed").exists()


def test_the_deployment_carries_the_cron_schedule(prefect_server):
    import asyncio

    from prefect.client.orchestration import get_client

    from flows.serve import deployment

    deploy = deployment(REPO / "params.yaml", str(REPO))
    deployment_id = deploy.apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    stored = asyncio.run(read())
    cron = yaml.safe_load((REPO / "params.yaml").read_text())["retrain"]["schedule_cron"]
    assert stored.name == "weekly" and [s.schedule.cron for s in stored.schedules] == [cron]
    assert stored.schedules[0].schedule.timezone == "UTC" and stored.schedules[0].active

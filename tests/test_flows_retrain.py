"""The retrain flow for real: Prefect's test harness, dvc repro in a temporary git repository,
a SQLite MLflow store and registry, the tiny model."""

import json
from pathlib import Path

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
from papersim.lifecycle.workspace import LOCK, OWNER
from flows import retrain as flow_module
from flows.refresh import refresh as refresh_flow
from flows.retrain import retrain
from papersim.lifecycle.processes import StageFailed
from papersim.lifecycle import versions
from papersim.retrieval.index import indexed_papers
from tests.conftest import REPO, flow_repo, paper, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="module")
def flow_tracking(mlflow_store):
    """The session's MLflow store, in an experiment of this module's own (shared by its tests)."""
    experiment = "test-flows-retrain"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_store)
        mp.setenv("PAPERSIM_EXPERIMENT", experiment)
        mp.delenv("PAPERSIM_PARENT_RUN_ID", raising=False)
        yield experiment


@pytest.fixture(scope="module")
def repo(tmp_path_factory, flow_tracking, tiny_model_dir):
    """The project's pipeline in a fresh git + DVC repo with a small corpus and the tiny model,
    shared by this module's tests (the scenario below runs in it step by step)."""
    def known_choice(params: dict) -> None:  # learning rate 0: trained == base, and a tie keeps the base encoder
        params["train"]["learning_rate"] = 0.0
        params["retrain"]["keep_refreshes"] = 1  # the second refresh archives the first

    return flow_repo(tmp_path_factory.mktemp("flow") / "repo", tiny_model_dir, known_choice)


def runs_of(experiment: str, parent: str) -> list:
    client = MlflowClient()
    exp = mlflow.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")


def aliases(name: str) -> dict[str, str]:
    return {alias: v["version"] for v in tracking_api.model_versions(name) for alias in v["aliases"]}


NAME = "papersim"


def _first_run(repo: Path) -> dict:
    return {"outcome": retrain(root=str(repo)), "aliases": aliases(NAME)}


def _worse_recipe(repo: Path) -> dict:
    # A learning rate that wrecks the encoder, served because encoder selection is off.
    before = {name: (repo / name).read_bytes() for name in ("params.yaml", "dvc.lock")}
    outcome = retrain(root=str(repo), overrides={"train.learning_rate": 5.0, "train.max_steps": 6,
                                                 "train.select_encoder": False})
    return {"outcome": outcome, "aliases": aliases(NAME), "before": before,
            "after": {name: (repo / name).read_bytes() for name in before}}


def _unchanged(repo: Path) -> dict:
    return {"outcome": retrain(root=str(repo)), "versions": len(tracking_api.model_versions(NAME))}


def _promote_and_roll_back(repo: Path) -> dict:
    promoted = cli(["registry", "promote", "2"]) == 0 and aliases(NAME)
    rolled_back = cli(["registry", "rollback"]) == 0 and aliases(NAME)
    registry.mark_challenger(NAME, "2")
    return {"promoted": promoted, "rolled_back": rolled_back}


def _failing_stage(repo: Path) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(flow_module, "build_index", flow_module.build_index.with_options(retry_delay_seconds=0))
        with pytest.raises(StageFailed, match="dvc repro build_index failed") as error:
            retrain(root=str(repo), overrides={"build_index.factory": "NoSuchIndex"}, force=True)
    return {"error": str(error.value), "aliases": aliases(NAME), "versions": len(tracking_api.model_versions(NAME)),
            "params": (repo / "params.yaml").read_text()}


SOURCE = "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl"
NEW_TITLE = "On graph neural networks, a brand new study of message passing"


def _answers(repo: Path, *argv: str) -> list[dict]:
    """`papersim search|similar ... --model champion --json` from the repository (as a user runs it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(repo)
        out = run_search(build_parser().parse_args([*argv, "--model", "champion", "--json"]))
    return [json.loads(line) for line in out.splitlines()]


def _new_papers(repo: Path) -> dict:
    # One new paper (3% of the corpus, under retrain.min_changed_share): the retrain flow refreshes the
    # champion's index instead of retraining.
    with (repo / SOURCE).open("a") as f:
        f.write(json.dumps(paper(99, title=NEW_TITLE, categories=["cat2"],
                                 abstract="We measure graph neural networks in experiment 99 and compare it with "
                                          "102 baselines.")) + "\n")
    outcome = retrain(root=str(repo))
    return {"outcome": outcome, "aliases": aliases(NAME), "version": tracking_api.model_version(NAME, version="3"),
            "search": _answers(repo, "search", NEW_TITLE, "-k", "3"),
            "similar_new": _answers(repo, "similar", "p99", "-k", "5"),
            "similar_old": {pid: [h["paper_id"] for h in _answers(repo, "similar", pid, "-k", "10")]
                            for pid in ("p2", "p6", "p10")}}


def _bad_new_papers(repo: Path) -> dict:
    # Papers that fail ingest's validation (no abstract, far above max_rejected_fraction): refused, nothing changes.
    before = {"registry": tracking_api.model_versions(NAME), "papers": (repo / "data/processed/papers.parquet")
              .read_bytes()}
    original = (repo / SOURCE).read_text()
    (repo / SOURCE).write_text(original + "".join(json.dumps(paper(200 + i, abstract="")) + "\n" for i in range(5)))
    try:
        with pytest.raises(StageFailed, match="dvc repro ingest failed") as error:
            refresh_flow(root=str(repo))
    finally:
        (repo / SOURCE).write_text(original)
    return {"error": str(error.value), "before": before, "registry": tracking_api.model_versions(NAME),
            "papers": (repo / "data/processed/papers.parquet").read_bytes()}


def _removed_paper(repo: Path) -> dict:
    # The refresh flow on its own: a paper removed from its source disappears from every answer.
    lines = (repo / SOURCE).read_text().splitlines(keepends=True)
    (repo / SOURCE).write_text("".join(line for line in lines if '"id": "p6"' not in line))
    outcome = refresh_flow(root=str(repo))
    queries = {"search": _answers(repo, "search", "graph neural networks, study 6", "-k", "10"),
               **{pid: _answers(repo, "similar", pid, "-k", "20") for pid in ("p2", "p10", "p99")}}
    again = refresh_flow(root=str(repo))
    return {"outcome": outcome, "again": again, "aliases": aliases(NAME), "answers": queries,
            "version": tracking_api.model_version(NAME, version=outcome["version"]),
            "history": tracking_api.champion_history(NAME),
            "versions": [v["version"] for v in tracking_api.model_versions(NAME)]}


def _retrain_loses(repo: Path) -> dict:
    # A forced retrain with overrides (a recipe that wrecks the encoder) on a corpus with one more paper: an
    # experiment, so production is left as it is: no refresh of the champion, its version and answers unchanged.
    with (repo / SOURCE).open("a") as f:
        f.write(json.dumps(paper(98, title="On laminar heat transfer, a new wind tunnel study", categories=["cat1"],
                                 abstract="We measure laminar heat transfer in experiment 98.")) + "\n")
    query = ("search", "On laminar heat transfer, a new wind tunnel study", "-k", "3")
    before = {"aliases": aliases(NAME), "search": _answers(repo, *query), "similar": _answers(repo, "similar", "p2")}
    outcome = retrain(root=str(repo), overrides={"train.learning_rate": 5.0, "train.max_steps": 6,
                                                 "train.select_encoder": False}, force=True)
    after = {"aliases": aliases(NAME), "search": _answers(repo, *query), "similar": _answers(repo, "similar", "p2")}
    refreshed = refresh_flow(root=str(repo))  # production's own refresh serves the new paper
    return {"outcome": outcome, "before": before, "after": after, "refreshed": refreshed,
            "served": _answers(repo, *query)}


def _other_params_refuse_a_refresh(repo: Path) -> dict:
    # params.yaml's build_index edited but not retrained: a refresh would register an index the champion's
    # params do not describe. Refused before ingest, nothing changed.
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["build_index"]["recall_queries"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = {"registry": tracking_api.model_versions(NAME), "papers": (repo / "data/processed/papers.parquet")
              .read_bytes(), "source": (repo / SOURCE).read_text()}
    with (repo / SOURCE).open("a") as f:
        f.write(json.dumps(paper(97, title="A paper waiting for the next refresh")) + "\n")
    try:
        with pytest.raises(PapersimError) as error:
            refresh_flow(root=str(repo))
    finally:
        (repo / "params.yaml").write_text(original)
        (repo / SOURCE).write_text(before["source"])
    return {"error": str(error.value), "before": before, "registry": tracking_api.model_versions(NAME),
            "papers": (repo / "data/processed/papers.parquet").read_bytes()}


def _no_champion(repo: Path) -> dict:
    # A model with no champion yet: the refresh stops before ingest runs.
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["retrain"]["model_name"] = "never-trained"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    source = (repo / SOURCE).read_text()
    papers = (repo / "data/processed/papers.parquet").read_bytes()
    with (repo / SOURCE).open("a") as f:
        f.write(json.dumps(paper(96, title="Another paper waiting for a refresh")) + "\n")
    try:
        outcome = refresh_flow(root=str(repo))
    finally:
        (repo / "params.yaml").write_text(original)
        (repo / SOURCE).write_text(source)
    return {"outcome": outcome, "unchanged": papers == (repo / "data/processed/papers.parquet").read_bytes()}


def _own_source(repo: Path) -> dict:
    # A source of the user's own, added through params.yaml: papers appended to it, then some removed; each
    # refresh serves exactly the file's papers (ingest depends on every source, whatever its path).
    fresh = repo / "data/raw/fresh.jsonl"
    rows = [paper(300 + i, title=f"Okapi migration field study number {i}", categories=["own"],
                  abstract=f"We follow okapi herds across season {i} and count {i + 3} crossings.") for i in range(3)]
    write_jsonl(fresh, rows[:2])
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["ingest"]["sources"].append({"path": "data/raw/fresh.jsonl", "format": "jsonl", "name": "fresh"})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def served() -> set[str]:
        champion = tracking_api.model_version(NAME, alias="champion")
        index = versions.fetch(NAME, champion["version"], repo).index
        return set(indexed_papers(index)["paper_id"]) & {"p300", "p301", "p302"}

    seen = {"added": (refresh_flow(root=str(repo)), served())}
    with fresh.open("a") as f:
        f.write(json.dumps(rows[2]) + "\n")
    seen["appended"] = (refresh_flow(root=str(repo)), served())
    write_jsonl(fresh, rows[1:])
    seen["removed"] = (refresh_flow(root=str(repo)), served())
    return seen


STEPS = [_first_run, _worse_recipe, _unchanged, _promote_and_roll_back, _failing_stage, _new_papers,
         _bad_new_papers, _removed_paper, _retrain_loses, _other_params_refuse_a_refresh, _no_champion, _own_source]


@pytest.fixture(scope="module")
def scenario(repo, prefect_server):
    """One registry's history, run once in order: `scenario(step)` runs the steps up to `step` (those not
    run yet) and returns what that step saw, so each test below reads one step in any order."""
    seen: dict = {}

    def upto(step) -> dict:
        for previous in STEPS[:STEPS.index(step) + 1]:
            if previous not in seen:
                seen[previous] = previous(repo)
        return seen[step]

    return upto


def test_the_first_model_becomes_the_champion_with_nested_stage_runs(scenario, repo, flow_tracking):
    first = scenario(_first_run)
    assert first["outcome"]["status"] == "promoted" and first["outcome"]["version"] == "1", first
    assert first["aliases"] == {"champion": "1"}
    stages = runs_of(flow_tracking, first["outcome"]["mlflow_run_id"])
    assert {r.info.run_name for r in stages} == {"ingest", "mine_pairs", "train", "evaluate", "build_index"}
    parent = MlflowClient().get_run(first["outcome"]["mlflow_run_id"])
    assert all(r.data.tags["prefect.flow_run_id"] == parent.data.tags["prefect.flow_run_id"] for r in stages)
    assert parent.data.tags["mlflow.source.git.commit"] != "unknown"
    version = tracking_api.model_version(NAME, version="1")
    assert version["tags"]["papersim.served_encoder"] == "base"  # the tie (learning rate 0) keeps the base
    assert version["tags"]["papersim.fusion"].startswith("convex (alpha=0.5")
    assert version["tags"]["eval_set.cranfield.content_hash"] == \
        json.loads((repo / "reports/evaluate.json").read_text())["cranfield"]["content_hash"]


def test_the_champion_answers_searches_from_the_registry(scenario, repo, monkeypatch):
    scenario(_first_run)
    monkeypatch.chdir(repo)  # `papersim search --model champion` reads params.yaml and the registry from here
    # (not through capsys: Prefect's log handler keeps the stream it first saw)
    out = run_search(build_parser().parse_args(["search", "supersonic wing flutter", "--model", "champion",
                                                "-k", "3", "--json"]))
    hits = [json.loads(line) for line in out.splitlines()]
    assert len(hits) == 3 and "flutter" in hits[0]["title"]


def test_a_worse_recipe_stays_challenger_and_its_overrides_last_one_run(scenario, repo):
    worse = scenario(_worse_recipe)
    assert worse["outcome"]["status"] == "challenger" and worse["outcome"]["version"] == "2", worse
    assert tracking_api.model_version(NAME, version="2")["tags"]["papersim.served_encoder"] == "trained"
    assert worse["aliases"] == {"champion": "1", "challenger": "2"}
    assert worse["after"] == worse["before"]  # the run used a scratch workspace: the repository is untouched
    assert not list((repo / ".papersim/runs").iterdir())
    version = tracking_api.download_model(NAME, "2", repo / "cache/registry") / "artifacts"
    assert yaml.safe_load((version / "params.yaml").read_text())["train"]["learning_rate"] == 5.0
    lock = yaml.safe_load((version / "dvc.lock").read_text())  # what the stages ran with
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["learning_rate"] == 5.0


def test_nothing_changed_skips_the_run_and_registers_nothing(scenario, flow_tracking):
    skipped = scenario(_unchanged)
    assert skipped["outcome"]["status"] == "skipped" and "nothing to do" in skipped["outcome"]["reason"], skipped
    assert runs_of(flow_tracking, skipped["outcome"]["mlflow_run_id"]) == []  # ingest up to date: DVC ran nothing
    assert skipped["versions"] == 2
    run = MlflowClient().get_run(skipped["outcome"]["mlflow_run_id"])
    assert run.data.tags["papersim.outcome"] == "skipped" and run.data.metrics["drift.changed_share"] == 0
    assert [a.path for a in MlflowClient().list_artifacts(run.info.run_id, "drift")] == ["drift/drift_history.png"]


def test_promote_and_rollback_move_the_champion_alias(scenario):
    moved = scenario(_promote_and_roll_back)
    assert moved["promoted"] == {"champion": "2"}
    assert moved["rolled_back"]["champion"] == "1"


def test_a_failing_stage_is_retried_then_fails_leaving_the_registry_unchanged(scenario, flow_tracking):
    failed = scenario(_failing_stage)
    assert "Unknown index" in failed["error"] or "NoSuchIndex" in failed["error"]
    assert failed["aliases"] == {"champion": "1", "challenger": "2"} and failed["versions"] == 2
    runs = MlflowClient().search_runs([mlflow.get_experiment_by_name(flow_tracking).experiment_id],
                                      filter_string="attributes.run_name = 'build_index' and "
                                                    "attributes.status = 'FAILED'")
    assert len(runs) == 2  # the first attempt and its retry
    assert "factory: NoSuchIndex" not in failed["params"]


def test_a_few_new_papers_are_a_refresh_served_by_the_champion_without_retraining(scenario, flow_tracking):
    fresh = scenario(_new_papers)
    outcome = fresh["outcome"]
    assert outcome["status"] == "refreshed" and outcome["version"] == "3" and outcome["refresh_of"] == "1", outcome
    assert "refresh: 1 new" in outcome["drift"] and outcome["added"] == 1, outcome
    assert fresh["aliases"] == {"champion": "3", "challenger": "2"}  # promoted by its data checks, no manual step
    version = fresh["version"]
    assert version["description"].startswith("Refresh of the v1 model: a new index (1 added, 0 changed, "
                                             "0 removed papers), replacing champion v1."), version["description"]
    assert version["tags"]["papersim.refresh_of"] == "1" and version["tags"]["papersim.model_version"] == "1"
    assert version["tags"]["papersim.served_encoder"] == "base"
    assert version["tags"]["papersim.params_fingerprint"] == \
        tracking_api.model_version(NAME, version="1")["tags"]["papersim.params_fingerprint"]
    # ingest read the new paper; nothing was mined or trained; the refresh's own stage runs are tagged
    stages = {r.info.run_name: r.data.tags.get("papersim.role") for r in runs_of(flow_tracking, outcome["mlflow_run_id"])}
    assert stages == {"ingest": None, "build_index": "refresh", "evaluate": "refresh"}, stages
    assert fresh["search"][0]["paper_id"] == "p99" and fresh["search"][0]["title"] == NEW_TITLE
    assert len(fresh["similar_new"]) == 5 and "p99" not in {h["paper_id"] for h in fresh["similar_new"]}
    assert any("p99" in listing for listing in fresh["similar_old"].values()), fresh["similar_old"]


def test_mlflow_models_serve_started_after_a_refresh_serves_the_new_paper(scenario, flow_tracking, tmp_path):
    from tests.test_serving import _post, mlflow_serve

    scenario(_new_papers)
    with mlflow_serve(f"models:/{NAME}@champion", tmp_path / "serve.log") as url:
        status, body = _post(f"{url}/invocations", json.dumps({"dataframe_records": [
            {"query": NEW_TITLE, "k": 3}, {"paper_id": "p99", "k": 3}]}).encode())
    assert status == 200, body
    rows = body["predictions"]
    assert [r["paper_id"] for r in rows if r["request"] == 0][0] == "p99"
    similar = [r["paper_id"] for r in rows if r["request"] == 1]
    assert len(similar) == 3 and "p99" not in similar


def test_a_refresh_is_rolled_back_like_any_champion(scenario):
    scenario(_new_papers)
    assert registry.rollback(NAME).startswith(f"{NAME} v1 is the champion again")
    assert aliases(NAME)["champion"] == "1"
    assert registry.promote(NAME, "3").startswith(f"{NAME} v3 is now the champion")


def test_new_papers_failing_validation_refuse_the_refresh_and_change_nothing(scenario):
    bad = scenario(_bad_new_papers)
    assert "max_rejected_fraction" in bad["error"] and "abstract" in bad["error"], bad["error"][-2000:]
    assert bad["registry"] == bad["before"]["registry"] and bad["papers"] == bad["before"]["papers"]


def test_removed_papers_disappear_and_an_unchanged_corpus_refreshes_nothing(scenario):
    removed = scenario(_removed_paper)
    outcome = removed["outcome"]
    assert outcome["status"] == "refreshed" and outcome["removed"] == 1, outcome
    assert outcome["refresh_of"] == "3" and outcome["model_version"] == "1", outcome  # a refresh of a refresh
    assert removed["aliases"]["champion"] == outcome["version"]
    assert "0 added, 0 changed, 1 removed papers" in removed["version"]["description"]
    for name, hits in removed["answers"].items():
        assert hits and "p6" not in {h["paper_id"] for h in hits}, (name, hits)
    assert removed["again"]["status"] == "up to date" and removed["again"]["version"] == outcome["version"]
    # retrain.keep_refreshes 1: the refresh before it (v3) is archived; the trained v1 stays, and so does v4's model
    assert outcome["archived"] == ["3"] and "3" not in removed["history"], outcome
    assert removed["versions"] == ["4", "2", "1"] and removed["answers"]["search"]


def test_a_set_challenger_leaves_the_production_champion_unchanged(scenario, flow_tracking):
    lost = scenario(_retrain_loses)
    outcome = lost["outcome"]
    assert outcome["status"] == "challenger" and "champion_refresh" not in outcome, outcome
    assert "never replaces the champion" in outcome["reason"], outcome
    assert lost["after"]["aliases"]["champion"] == lost["before"]["aliases"]["champion"]
    assert lost["after"]["aliases"]["challenger"] == outcome["version"]
    assert lost["after"]["search"] == lost["before"]["search"] and lost["after"]["similar"] == lost["before"]["similar"]
    assert "p98" not in {h["paper_id"] for h in lost["after"]["search"]}
    roles = [r.data.tags.get("papersim.role") for r in runs_of(flow_tracking, outcome["mlflow_run_id"])]
    assert roles.count("refresh") == 0
    fresh = lost["refreshed"]  # the production refresh after it: the champion's model, the new paper
    assert fresh["status"] == "refreshed" and fresh["added"] == 1 and fresh["model_version"] == "1", fresh
    assert lost["served"][0]["paper_id"] == "p98"


def test_a_refresh_with_params_other_than_the_champions_is_refused_before_any_work(scenario):
    refused = scenario(_other_params_refuse_a_refresh)
    assert "build_index differ from the params champion" in refused["error"] and "Nothing was changed" in \
        refused["error"], refused["error"]
    assert refused["registry"] == refused["before"]["registry"] and refused["papers"] == refused["before"]["papers"]


def test_a_refresh_without_a_champion_stops_before_ingest(scenario):
    stopped = scenario(_no_champion)
    assert stopped["outcome"]["status"] == "no champion" and stopped["unchanged"], stopped
    assert "'never-trained' has no champion to refresh yet" in stopped["outcome"]["reason"]


def test_a_refresh_skips_while_a_retrain_holds_the_repository(repo, prefect_server):
    (repo / ".papersim").mkdir(exist_ok=True)
    with FileLock(str(repo / LOCK)):
        (repo / OWNER).write_text(json.dumps({"flow": "retrain", "pid": 1, "started": "2026-12-07T03:00:00Z"}))
        try:
            outcome = refresh_flow(root=str(repo))
        finally:
            (repo / OWNER).unlink()
    assert outcome["status"] == "skipped" and "a retrain is running" in outcome["reason"], outcome


def test_a_source_added_through_params_is_served_as_its_file_changes(scenario):
    seen = scenario(_own_source)
    assert seen["added"][0]["status"] == "refreshed" and seen["added"][1] == {"p300", "p301"}, seen["added"]
    assert seen["appended"][0]["added"] == 1 and seen["appended"][1] == {"p300", "p301", "p302"}, seen["appended"]
    assert seen["removed"][0]["removed"] == 1 and seen["removed"][1] == {"p301", "p302"}, seen["removed"]


def test_a_second_retrain_exits_while_one_holds_the_lock(repo, prefect_server):
    (repo / ".papersim").mkdir(exist_ok=True)
    with FileLock(str(repo / LOCK)):
        with pytest.raises(PapersimError, match="another retrain or refresh is running"):
            retrain(root=str(repo), lock_timeout_s=0)


def test_bad_override_fails_before_any_stage(repo, flow_tracking, prefect_server):
    before = (repo / "params.yaml").read_text()
    runs_before = len(MlflowClient().search_runs([mlflow.get_experiment_by_name(flow_tracking).experiment_id])) \
        if mlflow.get_experiment_by_name(flow_tracking) else 0
    with pytest.raises(PapersimError, match="train has no key 'max_step'"):
        retrain(root=str(repo), overrides={"train.max_step": 1})
    assert (repo / "params.yaml").read_text() == before
    runs_after = len(MlflowClient().search_runs([mlflow.get_experiment_by_name(flow_tracking).experiment_id])) \
        if mlflow.get_experiment_by_name(flow_tracking) else 0
    assert runs_after == runs_before  # no flow run, no stage run


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

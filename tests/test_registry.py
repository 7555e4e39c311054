"""Aliases in a real SQLite-backed MLflow model registry: promote, challenger, rollback."""

import pytest

from papersim.cli import main as cli
from papersim.errors import PapersimError
from papersim.lifecycle import registry
from papersim.lifecycle import tracking as tracking_api


@pytest.fixture
def versions(built, tracking, tmp_path, request):
    """A model with three registered versions of the tiny model's index (each checked against the
    input example when saved)."""
    name = "reg-" + request.node.name[:40]
    with tracking_api.flow_run("registry-test", {}, {}) as run:
        pass
    made = [tracking_api.register_search_model(run.run_id, name, {"encoder": built / "models/encoder",
                                                                 "index": built / "artifacts/index"},
                                               {"papersim.gate": "champion"}, tmp_path / f"w{i}")
            for i in range(3)]
    assert made == ["1", "2", "3"]
    return name


def aliases(name: str) -> dict[str, str]:
    return {alias: v["version"] for v in tracking_api.model_versions(name) for alias in v["aliases"]}


def test_promote_challenger_and_rollback_move_the_aliases(versions):
    name = versions
    assert "now the champion" in registry.promote(name, "1")
    registry.mark_challenger(name, "2")
    assert aliases(name) == {"champion": "1", "challenger": "2"}
    assert "(was v1)" in registry.promote(name, "2")
    assert aliases(name) == {"champion": "2"}  # the challenger became champion: no challenger left
    registry.promote(name, "3")
    assert tracking_api.champion_history(name) == ["1", "2"]
    assert "v2 is the champion again" in registry.rollback(name)
    assert "v1 is the champion again" in registry.rollback(name)
    assert aliases(name) == {"champion": "1"}
    with pytest.raises(PapersimError, match="no earlier champion"):
        registry.rollback(name)
    assert "already the champion" in registry.promote(name, "1")
    assert "papersim.rolled_back_at" in tracking_api.model_version(name, version="2")["tags"]


def test_unknown_version_is_a_clear_error(versions):
    with pytest.raises(PapersimError, match="has no version 9 \\(versions: 3, 2, 1\\)"):
        registry.promote(versions, "9")


def test_registry_cli(versions, tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(f"retrain:\n  model_name: {versions}\n")
    monkeypatch.chdir(tmp_path)
    assert cli(["registry", "promote", "2"]) == 0
    assert cli(["registry", "promote", "3"]) == 0
    assert cli(["registry", "list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("  v") and not line.startswith("  version")}
    assert rows == {"v3": "champion", "v2": "-", "v1": "-"} and "champion history: v2" in out
    assert cli(["registry", "rollback"]) == 0 and "v2 is the champion again" in capsys.readouterr().out
    assert cli(["registry", "promote"]) == 1 and "promote needs a version" in capsys.readouterr().err
    assert cli(["search", "flutter", "--model", "challenger"]) == 1
    assert "no 'challenger' version yet" in capsys.readouterr().err


def test_empty_registry_lists_nothing(tracking):
    assert "no registered versions yet" in registry.table("never-registered")
    assert tracking_api.model_version("never-registered", alias="champion") is None


def test_a_registration_a_kill_interrupted_is_finished_with_one_history_entry(versions):
    from mlflow.tracking import MlflowClient

    name = versions
    registry.promote(name, "1")
    assert registry.finish_interrupted(name) is None  # v3 has no alias, but the run that registered it finished
    MlflowClient().set_terminated(tracking_api.model_version(name, version="3")["run_id"], "KILLED")
    # Killed inside promote: the history already names v1, the alias has not moved yet.
    tracking_api.set_champion_history(name, ["1"])
    assert "v3 is now the champion (was v1)" in registry.finish_interrupted(name)
    assert aliases(name) == {"champion": "3"} and tracking_api.champion_history(name) == ["1"]
    assert registry.finish_interrupted(name) is None  # nothing left to finish


def test_retention_archives_old_refreshes_and_keeps_trained_and_aliased_versions(built, tracking, tmp_path, request):
    from mlflow.tracking import MlflowClient

    from papersim.lifecycle.refresh import REFRESH_TAG

    name = "prune-" + request.node.name[:30]
    made = []
    for i, refresh_of in enumerate([None, "1", "2", "3", None, "5"]):  # v1 trained, v2-v4 refreshes, v5, v6
        with tracking_api.flow_run("registry-test", {}, {}) as run:
            tags = {"papersim.gate": "champion", **({REFRESH_TAG: refresh_of} if refresh_of else {})}
            made.append((tracking_api.register_search_model(run.run_id, name, {"index": built / "artifacts/index"}, tags,
                                                            tmp_path / f"w{i}"), run.run_id))
    for version, _ in made:
        registry.promote(name, version)
    registry.mark_challenger(name, "3")
    assert tracking_api.champion_history(name) == ["1", "2", "3", "4", "5"]
    removed = registry.prune_refreshes(name, 1, tmp_path / "cache")
    assert removed == ["2", "4"]  # v6 is the newest refresh, v3 holds an alias, v1 and v5 were trained
    assert [v["version"] for v in tracking_api.model_versions(name)] == ["6", "5", "3", "1"]
    assert tracking_api.champion_history(name) == ["1", "3", "5"]
    assert MlflowClient().list_artifacts(made[1][1], "search_model") == []  # v2's index is gone from the store
    assert MlflowClient().list_artifacts(made[2][1], "search_model")  # v3's is still there
    assert registry.prune_refreshes(name, 1, tmp_path / "cache") == []
    assert "v5 is the champion again" in registry.rollback(name)

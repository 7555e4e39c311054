"""benchmarks/soak.py: days of schedules for real (the refresh flow daily, the retrain flow's check) on the
tiny model and a small corpus, and its three checks on hand-made rows."""

import json

import pytest

from benchmarks.soak import Day, checks, soak, tracking_store, version_sizes
from tests.conftest import flow_repo, paper

NAME = "soak-test"
SOURCE = "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl"


def row(day: int, share: float, check: str = "", served: bool = True, registry_mb: float = 1.0) -> Day:
    fired = check.startswith(("promoted", "challenger"))
    return Day(day, 1, "new", 3, registry_mb, 10, 10 if served else 11, served, share, "refreshed", 1.0, check,
               fired, share if check else None)


def test_the_checks_fail_on_a_missed_retrain_an_unserved_paper_and_an_oversized_registry():
    sizes = {"trained": [10.0], "refresh": [1.0, 1.0]}  # bound: (10 + 2) x 1.1 = 13.2 MB
    good = [row(0, 0.0, "promoted v1"), row(1, 0.05), row(2, 0.11), row(3, 0.12, "promoted v4"), row(4, 0.01)]
    assert [ok for _, ok, _ in checks(good, 0.1, sizes)] == [True, True, True]
    assert "crossed 0.1 on day(s) 2; retrained at the check(s) of day(s) 3" in checks(good, 0.1, sizes)[0][2]

    missed = good[:3] + [row(3, 0.12, "skipped"), row(4, 0.13)]
    unserved = good[:4] + [row(4, 0.01, served=False)]
    too_big = good[:4] + [row(4, 0.01, registry_mb=13.3)]
    assert [ok for _, ok, _ in checks(missed, 0.1, sizes)] == [False, True, True]
    assert [ok for _, ok, _ in checks(unserved, 0.1, sizes)] == [True, False, True]
    assert "not on day 4 (10 served / 11)" in checks(unserved, 0.1, sizes)[1][2]
    assert [ok for _, ok, _ in checks(too_big, 0.1, sizes)] == [True, True, False]
    never = good[:2]  # no check after a crossing: nothing shown
    assert not checks(never, 0.1, sizes)[0][1]


@pytest.fixture(scope="module")
def soaked(tmp_path_factory, tiny_model_dir, mlflow_store) -> dict:
    """Seven days on flow_repo's 34 papers: one new paper a day (0.1 crossed on day 4), a refresh each, the
    retrain flow's check every 3rd day, retrain.keep_refreshes 2. Returns the rows, sizes and checks."""
    from prefect.testing.utilities import prefect_test_harness

    def small(params: dict) -> None:
        params["retrain"].update(model_name=NAME, keep_refreshes=2)

    tmp = tmp_path_factory.mktemp("soak")
    root = flow_repo(tmp / "repo", tiny_model_dir, small)
    topics = ["supersonic wing flutter", "laminar heat transfer", "graph neural networks", "sentence embeddings"]
    added = iter(range(100, 200))

    def feed(n: int) -> tuple[int, str]:
        with (root / SOURCE).open("a") as f:
            for _ in range(n):
                i = next(added)
                f.write(json.dumps(paper(i, title=f"On {topics[i % 4]}, new study {i}", categories=[f"cat{i % 4}"],
                                         abstract=f"We measure {topics[i % 4]} in new experiment {i}.")) + "\n")
        return n, "new"

    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "PAPERSIM_EXPERIMENT"):
            mp.setenv(key, "")  # tracking_store sets them; restored after the module
        mp.delenv("PAPERSIM_PARENT_RUN_ID", raising=False)
        artifacts = tracking_store(mlflow_store, tmp / "artifacts", f"test-soak-{tmp.name}")
        with prefect_test_harness(server_startup_timeout=90):
            rows = soak(root, NAME, artifacts, 7, feed, check_every=3)
        sizes = version_sizes(root, NAME)
    return {"rows": rows, "sizes": sizes, "checks": checks(rows, 0.1, sizes)}


@pytest.mark.slow
def test_a_retrain_fires_at_the_first_check_after_the_change_crosses_the_share(soaked):
    rows, (_, ok, why) = soaked["rows"], soaked["checks"][0]
    assert [r.added for r in rows] == [0] + [1] * 7 and rows[-1].corpus == rows[0].corpus + 7
    assert [r.day for r in rows if r.check] == [0, 3, 6]
    assert not rows[3].fired and rows[6].fired, [(r.day, r.check, r.changed_share) for r in rows]
    assert ok, why
    assert "crossed 0.1 on day(s) 4; retrained at the check(s) of day(s) 6" in why, why


@pytest.mark.slow
def test_the_champion_serves_every_paper_after_each_days_refresh(soaked):
    rows, (_, ok, why) = soaked["rows"], soaked["checks"][1]
    assert ok, why
    assert all(r.refresh == "refreshed" for r in rows[1:]), [r.refresh for r in rows]


@pytest.mark.slow
def test_refreshes_beyond_keep_refreshes_are_archived(soaked):
    rows, sizes = soaked["rows"], soaked["sizes"]
    assert len(sizes["refresh"]) == 2 and any(r.archived for r in rows), [r.archived for r in rows]


@pytest.mark.slow
def test_the_registry_disk_stays_within_its_versions_and_retained_refreshes(soaked):
    _, ok, why = soaked["checks"][2]
    assert ok, why

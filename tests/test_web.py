"""The web pages over HTTP, in process (Starlette's TestClient): the JSON every page answers, bad input, read-only."""

import contextlib
import logging
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import quote

import pytest
from starlette.testclient import TestClient

from papersim.cli import build_parser
from papersim.lifecycle import tracking
from papersim.lifecycle.retrain import retrain_config
from papersim.retrieval.search import MAX_QUERY_CHARS, search_text, similar_papers
from papersim.web.app import create_app, served_model
from papersim.web.models import ModelStore, Registry
from papersim.web.pages import abstract_start, rank_moves, registry_page, report_metrics, tracking_ui


@contextlib.contextmanager
def web_client(web_site, model: str | None, index: str, registry_type: type[Registry] = Registry, **client_args):
    """A TestClient of the app serving `model` (None: the index folder `index`), the registry read from
    the session's store (through `registry_type`: one whose loads are held or fail); the client carries
    its store and config."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "PAPERSIM_EXPERIMENT"):
            mp.setenv(key, web_site.env[key])
        cfg = retrain_config(web_site.root / "params.yaml")
        registry = registry_type(cfg.model_name, web_site.root)
        served = served_model(model, web_site.root / index, registry, web_site.root)
        store = ModelStore(served, registry, web_site.root / "artifacts/index")
        with TestClient(create_app(store, cfg), **client_args) as client:
            client.store, client.cfg = store, cfg
            yield client


@pytest.fixture(scope="module")
def site(web_site):
    """The app over the web workspace's index, the registry read from the session's store."""
    with web_client(web_site, None, "artifacts/index", raise_server_exceptions=False) as client:
        yield client


JSON = {"Accept": "application/json"}


def as_json(site, url: str, status: int = 200) -> dict:
    answer = site.get(url, headers={"Accept": "application/json"})
    assert answer.status_code == status, answer.text[:500]
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()


def test_search_answers_the_same_hits_as_search_text_with_their_details(site):
    page = as_json(site, "/?q=supersonic+wing+flutter&k=5")
    expected = search_text(site.store.served.index, "supersonic wing flutter", 5, "served")
    assert [h["paper_id"] for h in page["hits"]] == expected["paper_id"].tolist()
    assert [h["rank"] for h in page["hits"]] == [1, 2, 3, 4, 5] and page["mode"] == "served"
    first = page["hits"][0]
    assert set(first) == {"rank", "paper_id", "title", "url", "abstract_start", "source", "groups", "score",
                          "authors", "date", "link", "venue", "categories", "why"}
    assert first["why"] and set(first["why"]) <= {"supersonic", "wing", "flutter"}
    assert first["url"] == "/paper/" + first["paper_id"] and first["abstract_start"] and first["source"]
    assert math.isclose(first["score"], expected["score"].iloc[0], abs_tol=1e-4)
    assert site.get("/?q=supersonic+wing+flutter&k=5&format=json").json() == page  # ?format=json: the same answer
    html = site.get("/?q=supersonic+wing+flutter&k=5")
    assert html.headers["content-type"].startswith("text/html")
    assert first["title"] in re.sub(r"</?mark>", "", html.text)  # the query's words marked in the title
    assert "<mark>flutter</mark>" in html.text


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_mode_is_search_texts_mode(site, mode):
    page = as_json(site, f"/?q=laminar+heat+transfer&k=4&mode={mode}")
    expected = search_text(site.store.served.index, "laminar heat transfer", 4, mode)
    assert [h["paper_id"] for h in page["hits"]] == expected["paper_id"].tolist() and page["mode"] == mode


def test_an_empty_answer_says_why(site):
    page = as_json(site, "/?q=zzzyx+qqqwv&mode=bm25")
    assert page["hits"] == [] and "no paper shares a word with the query" in page["empty_reason"]
    assert "No papers found: no paper shares a word" in site.get("/?q=zzzyx+qqqwv&mode=bm25").text
    assert as_json(site, "/")["searched"] is False  # no query: the box alone


def test_paper_page_shows_the_whole_paper_and_its_similar_papers(site):
    page = as_json(site, "/paper/long?k=4")
    assert page["paper"]["abstract"] == site.store.served.paper("long")["abstract"]
    assert len(page["paper"]["abstract"]) > 600 and page["paper"]["source"] == "arxiv"
    expected = similar_papers(site.store.served.index, "long", 4)
    assert [h["paper_id"] for h in page["similar"]] == expected["paper_id"].tolist()
    assert "long" not in [h["paper_id"] for h in page["similar"]]
    p1 = as_json(site, "/paper/p1")
    assert p1["paper"]["groups"] == ["page1"] and len(p1["similar"]) == 10
    listed = next(h for h in as_json(site, "/?q=heat+transfer+laminar+boundary+layers&k=30")["hits"]
                  if h["paper_id"] == "long")
    assert listed["abstract_start"].endswith(" …") and len(listed["abstract_start"]) <= 302
    assert page["paper"]["abstract"].startswith(listed["abstract_start"][:-2])


def test_the_json_answer_carries_the_metadata_and_a_filter(site):
    page = as_json(site, "/paper/p0?k=30&since=2015&group=cat0;cat2")
    assert page["filter"] == {"since": "2015", "until": "", "group": "cat0; cat2", "active": True,
                              "describe": "since 2015, in cat0 or cat2"}
    assert page["similar"] and all(h["date"] >= "2015" and set(h["categories"]) & {"cat0", "cat2"}
                                   for h in page["similar"])
    math = as_json(site, "/paper/math")["paper"]
    assert math["authors"] == ["Ada Lovelace", "Alan Turing"] and math["link"] == "https://arxiv.org/abs/2104.01234"
    assert math["date"] == "2021-04-05" and math["title"].startswith("Flutter bounds of $")  # JSON keeps the source
    empty = as_json(site, "/paper/p0?since=2099")
    assert empty["similar"] == [] and "no paper matches both the request and the filter" in empty["empty_reason"]


def test_abstract_start_cuts_at_a_word():
    assert abstract_start("short") == "short" and abstract_start(None) is None
    text = "word " * 100
    cut = abstract_start(text, 300)
    assert cut.endswith(" …") and len(cut) <= 302 and not cut[:-2].endswith(" ") and cut[:-2].endswith("word")


def test_paper_text_is_escaped_in_every_page(site):
    for url in ("/?q=wing+flutter+supersonic&k=30", "/paper/xss-script", "/paper/xss-link",
                "/compare?q=wing+flutter+supersonic&k=30"):
        html = site.get(url).text
        assert "<script" not in html and "<img" not in html and 'href="javascript' not in html, url
        assert "&lt;script&gt;" in html or "&lt;a href=" in html, url
    assert site.get("/").headers["content-security-policy"].startswith("default-src 'none'")


BAD = [
    ("/paper/no-such-paper", 404, "unknown paper id 'no-such-paper'"),
    ("/?q=flutter&k=0", 400, "k must be between 1 and 100, got 0"),
    ("/?q=flutter&k=101", 400, "k must be between 1 and 100, got 101"),
    ("/?q=flutter&k=ten", 400, "k must be an integer between 1 and 100"),
    ("/?q=flutter&mode=fuzzy", 400, "unknown mode 'fuzzy'"),
    ("/?q=" + "x" * (MAX_QUERY_CHARS + 1), 400, f"query too long ({MAX_QUERY_CHARS + 1} characters, at most"),
    ("/paper/p1?k=500", 400, "k must be between 1 and 100"),
    ("/?q=flutter&until=2019-13", 400, "until: '2019-13' is not a date"),
    ("/paper/p1?since=2020&until=2019", 400, "since 2020 is after until 2019"),
    ("/?q=flutter&" + "&".join(f"group=g{i}" for i in range(21)), 400, "too many groups in one filter"),
    ("/compare?a=nine&b=champion", 400, "unknown version 'nine'"),
    ("/compare?a=champion&b=99", 400, "has no version 99"),
    ("/compare?paper=no-such-paper", 404, "unknown paper id 'no-such-paper'"),
    ("/compare?q=flutter&paper=p1", 400, "either a query (q) or a paper (paper), not both"),
    ("/no/such/page", 404, "no page at '/no/such/page'"),
]


@pytest.mark.parametrize("url, status, message", BAD, ids=[f"{s}-{u[:30]}" for u, s, _ in BAD])
def test_bad_input_is_a_page_naming_the_rule(site, url, status, message):
    body = as_json(site, url, status)
    assert body["status"] == status and message in body["error"]
    html = site.get(url)
    assert html.status_code == status and html.headers["content-type"].startswith("text/html")
    assert f"{status} " in html.text and message.replace("'", "&#39;") in html.text
    assert as_json(site, "/?q=flutter&k=1")["hits"]  # and the next request is answered


def test_pages_only_read(site, web_site):
    before = [(v["version"], sorted(v["aliases"]), v["tags"]) for v in tracking.model_versions(web_site.model_name)]
    for url in ("/", "/compare", "/registry", "/paper/p1"):
        answer = site.post(url, data={"a": "2"})
        assert answer.status_code == 405 and "papersim registry promote" in answer.text
        assert set(answer.headers["allow"].split(", ")) == {"GET", "HEAD"}
    as_json(site, "/compare?q=flutter")
    as_json(site, "/registry")
    after = [(v["version"], sorted(v["aliases"]), v["tags"]) for v in tracking.model_versions(web_site.model_name)]
    assert after == before


def test_rank_moves_marks_both_moves_and_overlap():
    a_marks, b_marks, overlap = rank_moves(["p1", "p2", "p3", "p4"], ["p3", "p1", "p9", "p2"])
    assert [m["in_both"] for m in a_marks] == [True, True, True, False]
    assert [m["other_rank"] for m in a_marks] == [2, 4, 1, None]
    assert [(m["move"], m["by"]) for m in b_marks] == [("up", 2), ("down", 1), ("new", None), ("down", 2)]
    assert overlap == 3 / 4  # lists shorter than 10: the share of the longer list
    assert rank_moves([f"p{i}" for i in range(20)], [f"p{i}" for i in range(5, 25)])[2] == 0.5
    assert rank_moves([], [])[2] is None


def test_a_versions_metrics_are_the_gates_the_similar_task_included():
    from papersim.lifecycle.retrain import RetrainConfig

    report = {"a": {"served": {"ndcg@10": 0.5, "mrr@10": 0.6}}, "similar": {"served": {"precision@10": 0.3}}}
    cfg = RetrainConfig(gate_sets=[], guard_metrics=["served/mrr@10"])
    assert report_metrics(report, cfg) == [
        {"set": "a", "metric": "served/ndcg@10", "value": 0.5}, {"set": "a", "metric": "served/mrr@10", "value": 0.6},
        {"set": "similar", "metric": "served/precision@10", "value": 0.3}]
    del report["similar"]  # a corpus without listings: the search sets alone
    assert [m["set"] for m in report_metrics(report, cfg)] == ["a", "a"]


def test_compare_puts_champion_and_challenger_side_by_side(site, web_site):
    page = as_json(site, "/compare?q=supersonic+wing+flutter&k=5")
    assert (page["a"], page["b"]) == ("champion", "challenger")
    a, b = page["versions"]
    assert (a["version"], a["aliases"], a["gate"]) == (web_site.versions[0], ["champion"], "champion")
    assert (b["version"], b["aliases"], b["gate"]) == (web_site.versions[1], ["challenger"], "challenger")
    assert "first model" in a["gate_reason"] and "below" in b["gate_reason"] and a["primary"] == 0.67
    assert {"set": "cranfield", "metric": "served/ndcg@10", "value": 0.42} in b["metrics"]
    left, right = page["columns"]
    assert len(left["hits"]) == len(right["hits"]) == 5
    a_ids, b_ids = (search_text(site.store.get(ref).index, "supersonic wing flutter", 10, "served")["paper_id"].tolist()
                    for ref in ("champion", "challenger"))
    assert [h["paper_id"] for h in left["hits"]] == a_ids[:5] and [h["paper_id"] for h in right["hits"]] == b_ids[:5]
    assert page["overlap@10"] == round(len(set(a_ids) & set(b_ids)) / 10, 4)
    for hit in right["hits"]:
        assert hit["in_both"] == (hit["paper_id"] in a_ids)
        if hit["in_both"]:
            assert hit["other_rank"] == a_ids.index(hit["paper_id"]) + 1
    assert {h["move"] for h in right["hits"]} - {"up", "down", "same", "new"} == set()
    html = site.get("/compare?q=supersonic+wing+flutter&k=5").text
    assert html.count('class="hit both"') == sum(h["in_both"] for h in left["hits"] + right["hits"])


def test_compare_a_paper_and_the_workspace(site, web_site):
    page = as_json(site, "/compare?paper=p2&a=2&b=workspace&k=3")
    assert page["paper"]["paper_id"] == "p2" and page["versions"][1]["gate"] == "not registered"
    assert page["versions"][1]["metrics"]  # the workspace's own reports/evaluate.json
    assert [h["paper_id"] for h in page["columns"][1]["hits"]] == \
        similar_papers(site.store.served.index, "p2", 3)["paper_id"].tolist()
    assert as_json(site, "/compare")["columns"] == []  # no query yet: the form and the versions


def test_registry_page_lists_versions_and_the_drift_history(site, web_site):
    page = as_json(site, "/registry")
    assert [(v["version"], v["aliases"], v["gate"]) for v in page["versions"]] == [
        (web_site.versions[1], ["challenger"], "challenger"), (web_site.versions[0], ["champion"], "champion")]
    assert page["versions"][0]["primary"] == 0.67 and page["versions"][0]["run_url"] is None
    assert "&lt;b&gt;below&lt;/b&gt;" in site.get("/registry").text
    if page["drift_plot"] is None:
        assert site.get("/registry/drift.png").status_code == 404
        with tracking.flow_run("retrain", {}, {}) as run:
            run.log_metrics({"drift.changed_share": 0.1, "drift.mmd2": 0.002, "drift.p_value": 0.3})
        page = as_json(site, "/registry")
    assert page["drift_plot"] == "/registry/drift.png" and page["drift_history"][-1]["mmd2"] == 0.002
    png = site.get("/registry/drift.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert '<img class="drift" src="/registry/drift.png"' in site.get("/registry").text


def test_registry_links_to_the_tracking_server_without_its_password(site, web_site):
    assert tracking_ui("http://user:secret@mlflow.internal:5000/") == "http://mlflow.internal:5000"
    assert tracking_ui("sqlite:///mlruns/mlflow.db") is None
    page = registry_page(site.store.registry, site.cfg, "http://mlflow.internal:5000")
    v = page["versions"][0]
    assert v["run_url"] == f"http://mlflow.internal:5000/#/runs/{v['run_id']}"
    assert v["version_url"].endswith(f"/#/models/{quote(web_site.model_name)}/versions/{v['version']}")


def test_web_command_listens_on_this_machine_by_default():
    args = build_parser().parse_args(["web"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8000, None)
    assert build_parser().parse_args(["web", "--model", "champion", "--port", "8123"]).model == "champion"


def test_the_champion_serves_every_page(web_site):
    with web_client(web_site, "champion", "nowhere") as client:  # --index is ignored for a version
        served = client.store.served
        assert served.version == web_site.versions[0] and served.label.endswith(f"v{web_site.versions[0]}")
        for url in ("/?q=flutter", "/paper/p3", "/compare?paper=p3", "/registry"):
            answer = client.get(url)
            assert answer.status_code == 200 and f"serving {served.label}" in answer.text, url
        page = client.get("/compare?q=flutter&a=champion&b=workspace&format=json").json()
        assert [v["version"] for v in page["versions"]] == [web_site.versions[0], None]


def set_champion(web_site, version: str) -> None:
    """Move the champion alias as a promotion by another process would."""
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "PAPERSIM_EXPERIMENT"):
            mp.setenv(key, web_site.env[key])
        tracking.set_alias(web_site.model_name, "champion", version)


def health_until(client, done, within_s: float = 120) -> dict:
    """/health, asked again until `done(answer)`: the alias is followed in the background."""
    deadline = time.monotonic() + within_s
    while True:
        health = client.get("/health").json()
        if done(health) or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


class HeldRegistry(Registry):
    """A registry whose loads, once `hold` is armed, wait for it: a promoted version's slow load, at will.
    `started` is set when such a load begins; `fail`: how many of the next loads raise (an unreadable index)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold: threading.Event | None = None
        self.started, self.fail, self.loads = threading.Event(), 0, []

    def load(self, found: dict):
        self.loads.append(found["version"])
        if self.hold is not None:
            self.started.set()
            assert self.hold.wait(120), "the held load was never released"
        if self.fail:
            self.fail -= 1
            raise OSError(f"index of v{found['version']} unreadable")
        return super().load(found)


def test_the_served_champion_follows_its_alias_without_a_restart(web_site):
    first, second = web_site.versions[0], web_site.versions[1]
    with web_client(web_site, "champion", "nowhere") as client:
        client.store.registry.ttl_s = 0  # re-read the registry on every request (the default: every 10 s)
        assert client.get("/health").json()["version"] == first
        ids = lambda: [h["paper_id"] for h in client.get("/?q=flutter", headers=JSON).json()["hits"]]  # noqa: E731
        hits_before = ids()
        try:
            set_champion(web_site, second)
            health = health_until(client, lambda h: h["version"] == second)
            assert health["version"] == second and health["model"].endswith(f"v{second}") and health["loading"] is None
            page = client.get("/?q=flutter")
            assert page.status_code == 200 and f"serving {web_site.model_name} v{second}" in page.text
            assert ids() != hits_before  # the second encoder ranks the papers differently
        finally:
            set_champion(web_site, first)
        assert health_until(client, lambda h: h["version"] == first)["version"] == first


def test_requests_during_a_swap_are_answered_by_the_old_version_without_waiting(web_site):
    first, second = web_site.versions[0], web_site.versions[1]
    with web_client(web_site, "champion", "nowhere", registry_type=HeldRegistry) as client, \
            ThreadPoolExecutor(4) as pool:
        registry = client.store.registry
        registry.ttl_s, registry.hold = 0, threading.Event()
        hits_before = [h["paper_id"] for h in client.get("/?q=flutter", headers=JSON).json()["hits"]]

        def answered(url: str, **kwargs):
            """The answer within 10 s: a request held by the load (it never ends while held) fails here."""
            try:
                return pool.submit(client.get, url, **kwargs).result(timeout=10)
            except FutureTimeout:
                pytest.fail(f"{url} waited for v{second}'s load")

        try:
            set_champion(web_site, second)
            # A request starts the load and is not held. Not necessarily the first: one made while a check
            # begun before the promotion still runs (it read the old alias) starts none, the next one does.
            deadline = time.monotonic() + 60
            while not registry.started.wait(0.2):
                assert answered("/health").json()["version"] == first
                assert time.monotonic() < deadline, "the promoted version's load never started"
            for _ in range(3):  # the load is under way: every page is answered, by the version served before it
                health = answered("/health").json()
                assert (health["version"], health["loading"]) == (first, second)
                assert [h["paper_id"] for h in answered("/?q=flutter", headers=JSON).json()["hits"]] == hits_before
                page = answered("/paper/p3")
                assert page.status_code == 200 and f"serving {web_site.model_name} v{first}" in page.text
            registry.hold.set()
            health = health_until(client, lambda h: h["version"] == second)
            assert (health["version"], health["loading"]) == (second, None)
            assert f"serving {web_site.model_name} v{second}" in answered("/?q=flutter").text
            assert [h["paper_id"] for h in answered("/?q=flutter", headers=JSON).json()["hits"]] != hits_before
        finally:
            registry.hold.set()
            set_champion(web_site, first)
        assert health_until(client, lambda h: h["version"] == first)["version"] == first


def test_a_version_the_alias_left_during_its_load_is_never_served(web_site):
    first, second = web_site.versions[0], web_site.versions[1]
    with web_client(web_site, "champion", "nowhere", registry_type=HeldRegistry) as client:
        registry = client.store.registry
        registry.ttl_s, registry.hold = 0, threading.Event()
        registry.loads.clear()  # the first champion's, at start
        try:
            set_champion(web_site, second)
            client.get("/health")
            assert registry.started.wait(60), "the promoted version's load never started"
            set_champion(web_site, first)  # a rollback while the promoted version loads
            registry.hold.set()
            health = health_until(client, lambda h: h["loading"] is None)
            assert health["version"] == first and registry.loads == [second]
            for _ in range(3):
                assert client.get("/health").json()["version"] == first
        finally:
            registry.hold.set()
            set_champion(web_site, first)


def test_a_failed_load_keeps_the_old_version_and_is_tried_again_after_the_ttl(web_site, caplog):
    first, second = web_site.versions[0], web_site.versions[1]
    with web_client(web_site, "champion", "nowhere", registry_type=HeldRegistry) as client, \
            caplog.at_level(logging.ERROR, logger="papersim.web"):
        registry = client.store.registry
        registry.ttl_s, registry.fail, registry.hold = 0, 1, threading.Event()
        registry.loads.clear()  # the first champion's, at start
        try:
            set_champion(web_site, second)
            client.get("/health")
            assert registry.started.wait(60), "the promoted version's load never started"
            registry.ttl_s = 3600  # from now on the TTL runs: the failed version is not tried again within it
            registry.hold.set()
            health = health_until(client, lambda h: h["loading"] is None)
            assert health["version"] == first and registry.loads == [second]
            assert f"could not load {web_site.model_name} v{second}" in caplog.text and "unreadable" in caplog.text
            for _ in range(3):
                assert client.get("/?q=flutter").status_code == 200
            assert client.get("/health").json()["version"] == first and registry.loads == [second]
            registry.ttl_s = 0  # the TTL over: the next request tries again, and the new version is served
            assert health_until(client, lambda h: h["version"] == second)["version"] == second
            assert registry.loads == [second, second]
        finally:
            set_champion(web_site, first)
        assert health_until(client, lambda h: h["version"] == first)["version"] == first


def test_a_registry_that_does_not_answer_keeps_the_champion_serving(web_site, caplog):
    first = web_site.versions[0]
    with web_client(web_site, "champion", "nowhere") as client, \
            caplog.at_level(logging.WARNING, logger="papersim.web"), \
            pytest.MonkeyPatch.context() as mp:  # inside web_client's own: undone before it
        client.store.registry.ttl_s = 0
        mp.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a stopped tracking server: nothing listens there
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        for _ in range(3):
            assert client.get("/?q=flutter").status_code == 200
        health = health_until(client, lambda h: "did not answer" in caplog.text and h["loading"] is None, 60)
        assert health["version"] == first and "keep serving" in caplog.text


def test_web_command_errors_are_one_line(web_site, tmp_path, monkeypatch, capsys):
    from papersim.cli import main as cli

    monkeypatch.chdir(web_site.root)
    for key in ("MLFLOW_TRACKING_URI", "PAPERSIM_EXPERIMENT"):
        monkeypatch.setenv(key, web_site.env[key])
    assert cli(["web", "--model", "7"]) == 1
    assert f"model '{web_site.model_name}' has no version 7" in capsys.readouterr().err
    assert cli(["web", "--index", str(tmp_path / "no-index")]) == 1
    assert "no-index" in capsys.readouterr().err


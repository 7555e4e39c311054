"""The registered model's behaviour, in process and behind the real `mlflow models serve`."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import version as installed_version
from pathlib import Path

import pandas as pd
import pytest

from papersim.errors import PapersimError
from papersim.lifecycle import registry
from papersim.lifecycle import tracking as tracking_api
from papersim.retrieval.serving import SearchService, parse_requests


@pytest.fixture
def service(built) -> SearchService:
    return SearchService.load(built / "models/encoder", built / "artifacts/index")


def test_text_and_paper_requests_answer_top_k(service):
    out = service.predict(pd.DataFrame([{"query": "supersonic wing flutter", "k": 3},
                                        {"paper_id": "p0"},
                                        {"query": "graph networks", "k": 2, "mode": "bm25"}]))
    assert list(out.columns) == ["request", "rank", "paper_id", "title", "score", "authors", "date", "url", "venue",
                                 "categories", "why"]
    assert out.groupby("request").size().to_dict() == {0: 3, 1: 10, 2: 2}
    assert "p0" not in set(out[out["request"] == 1]["paper_id"])  # a paper is not similar to itself
    assert out[out["request"] == 2]["title"].str.contains("graph").all()


def test_a_request_filters_by_date_and_group_and_a_bad_filter_names_its_row(service):
    out = service.predict(pd.DataFrame([{"query": "supersonic wing flutter", "k": 4, "until": "2013-12"},
                                        {"paper_id": "p0", "k": 3, "group": "page1; page2"}]))
    first, second = out[out["request"] == 0], out[out["request"] == 1]
    assert len(first) == 4 and all(d is not None and d <= "2013-12-31" for d in first["date"])
    assert len(second) == 3 and set(second["paper_id"]) <= {f"p{i}" for i in range(24) if i % 4 in (1, 2)}
    with pytest.raises(PapersimError, match=r"request row 1: since: 'soon' is not a date"):
        service.predict(pd.DataFrame([{"query": "flutter"}, {"query": "flutter", "since": "soon"}]))


def test_paper_rows_are_the_fused_similar_ranking_of_the_cli(service):
    from papersim.retrieval.search import similar_papers

    assert service.index.similar is not None  # the workspace chose how papers are answered
    out = service.predict(pd.DataFrame([{"paper_id": "p0", "k": 5}, {"paper_id": "p1", "k": 3}]))
    for request, pid, k in ((0, "p0", 5), (1, "p1", 3)):
        mine = out[out["request"] == request]
        alone = similar_papers(service.index, pid, k)
        assert mine["paper_id"].tolist() == alone["paper_id"].tolist()
        assert mine["score"].tolist() == pytest.approx(alone["score"].tolist())


def test_a_batch_is_encoded_once_and_answers_as_each_row_alone(service):
    rows = [{"query": q, "k": k, "mode": m} for q, k, m in [
        ("supersonic wing flutter", 3, "served"), ("graph networks", 5, "dense"), ("boundary layers", 4, "bm25"),
        ("message passing in graph neural networks", 2, "hybrid"), ("laminar heat transfer", 3, "served")]]
    alone = [service.predict(pd.DataFrame([row])) for row in rows]
    calls = []
    embed = service.index.embed
    service.index.embed = lambda texts: calls.append(len(texts)) or embed(texts)
    together = service.predict(pd.DataFrame(rows))
    assert calls == [4]  # the four rows that need vectors, in one encoding call
    for i, answer in enumerate(alone):
        mine = together[together["request"] == i].drop(columns="request").reset_index(drop=True)
        assert mine["paper_id"].tolist() == answer["paper_id"].tolist()
        pd.testing.assert_series_equal(mine["score"], answer["score"], atol=1e-4, check_names=False)


@pytest.mark.parametrize("rows, message", [
    ([{"k": 3}], "missing field"),
    ([{"query": "x", "paper_id": "p1"}], "row 0: give exactly one"),
    ([{"query": "flutter"}, {"query": "flutter", "k": 0}], "row 1: k must be an integer between 1 and 100"),
    ([{"query": "flutter", "k": 2.5}], "k must be an integer"),
    ([{"query": "flutter", "mode": "fuzzy"}], "unknown mode"),
    ([{"query": "   "}], "empty query"),
    ([{"query": "x" * 1_000_000}], "query too long"),
])
def test_bad_requests_name_the_row_and_the_rule(service, rows, message):
    with pytest.raises(PapersimError, match=message):
        service.predict(pd.DataFrame(rows))


def test_unknown_paper_is_a_clear_error(service):
    with pytest.raises(PapersimError, match="request row 0: unknown paper id 'nope'"):
        service.predict(pd.DataFrame([{"paper_id": "nope"}]))


def test_requests_are_parsed_with_defaults():
    from papersim.retrieval.filters import NO_FILTER, Filter

    assert parse_requests(pd.DataFrame([{"query": "a", "k": float("nan")}])) == [{"k": 10, "mode": "served",
                                                                                  "query": "a", "filter": NO_FILTER}]
    parsed = parse_requests(pd.DataFrame([{"paper_id": "p1", "since": "2019", "group": "a;b"}]))
    assert parsed[0]["filter"] == Filter(since="2019", groups=("a", "b"))
    with pytest.raises(PapersimError, match="no requests"):
        parse_requests(pd.DataFrame(columns=["query"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_serve(model_uri: str, log_path: Path):
    """`mlflow models serve` of `model_uri` on a free port of 127.0.0.1, in a process group of its own;
    yields its URL once /ping answers, then stops the group (mlflow and its uvicorn workers)."""
    port, mlflow_bin = _free_port(), Path(sys.executable).with_name("mlflow")
    log = log_path.open("w")
    server = subprocess.Popen([str(mlflow_bin), "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True,
                              env={**os.environ, "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ['PATH']}"})
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert server.poll() is None, log_path.read_text()
            assert time.time() < deadline, "server did not answer /ping within 120 s"
            time.sleep(1)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.slow
def test_mlflow_serves_the_champion_over_rest(built, tracking, tmp_path):
    name = f"serve-{os.getpid()}"
    run_id = _run_id()
    version = tracking_api.register_search_model(
        run_id, name, {"encoder": built / "models/encoder", "index": built / "artifacts/index",
                       "eval": built / "params.yaml", "params": built / "params.yaml"}, {}, tmp_path)
    registry.promote(name, version)
    with mlflow_serve(f"models:/{name}@champion", tmp_path / "serve.log") as url:
        status, body = _post(f"{url}/invocations", json.dumps({"dataframe_records": [
            {"query": "supersonic wing flutter", "k": 3}, {"paper_id": "p1", "k": 2}]}).encode())
        assert status == 200, body
        rows = body["predictions"]
        assert [r["request"] for r in rows] == [0, 0, 0, 1, 1] and {"paper_id", "title", "score"} <= set(rows[0])
        # the paper's metadata and why, through the REST answer; a filter narrows it
        p8 = next(r for r in rows if r["paper_id"] == "p8") if any(r["paper_id"] == "p8" for r in rows) else None
        assert all(set(r["authors"]) == {f"Author {r['paper_id'][1:]}", "B. Coauthor"} or r["authors"] == []
                   for r in rows) and all(isinstance(r["why"], list) for r in rows)
        assert p8 is None or (p8["date"] == "2018-09-18" and p8["url"] == "https://example.org/papers/p8")
        status, body = _post(f"{url}/invocations", json.dumps({"dataframe_records": [
            {"paper_id": "p0", "k": 5, "since": "2016", "group": "cat1;cat2"}]}).encode())
        assert status == 200, body
        hits = body["predictions"]
        assert hits and all(r["date"] >= "2016" and set(r["categories"]) & {"cat1", "cat2"} for r in hits), hits

        bad = {
            "missing fields": ({"dataframe_records": [{"k": 3}]}, "missing field"),
            "k out of range": ({"dataframe_records": [{"query": "flutter", "k": 1000}]}, "between 1 and 100"),
            "unknown paper": ({"dataframe_records": [{"paper_id": "nope"}]}, "unknown paper id"),
            "1 MB query": ({"dataframe_records": [{"query": "x" * 1_000_000}]}, "query too long"),
            "bad date": ({"dataframe_records": [{"query": "flutter", "since": "2019-02-30"}]},
                         "request row 0: since: '2019-02-30' is not a date"),
        }
        for what, (payload, message) in bad.items():
            status, body = _post(f"{url}/invocations", json.dumps(payload).encode())
            assert 400 <= status < 500, (what, status, body)
            assert message in body.get("message", ""), (what, body)
            assert len(json.dumps(body)) < 20_000, what  # the error does not echo a megabyte back
        status, _ = _post(f"{url}/invocations", b"{not json")
        assert 400 <= status < 500


def _run_id() -> str:
    with tracking_api.flow_run("serve-test", {}, {}) as run:
        return run.run_id


ISOLATED = """
import sys
sys.path.append(sys.argv[1])  # site-packages without its .pth files: papersim's editable install is not on the path
try:
    import papersim
    raise SystemExit("papersim is importable: not isolated")
except ImportError:
    pass
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[2])
print(model.predict(pd.DataFrame({"query": ["supersonic wing flutter"], "k": [3.0]})).to_json(orient="records"))
"""


@pytest.mark.slow
def test_the_registered_model_is_self_contained_and_registers_without_warnings(built, tracking, tmp_path, caplog):
    import logging
    import sysconfig
    import warnings

    name = f"code-{os.getpid()}"
    run_id = _run_id()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        version = tracking_api.register_search_model(
            run_id, name, {"encoder": built / "models/encoder", "index": built / "artifacts/index"}, {}, tmp_path,
            description="Gate: promoted to champion. test")
    mlflow_warnings = [str(w.message) for w in caught if "/mlflow/" in w.filename or "mlflow" in str(w.message)]
    assert mlflow_warnings == [], [(w.filename, w.lineno, str(w.message)[:80]) for w in caught]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("mlflow")] == []
    assert tracking_api.model_version(name, version=version)["description"] == "Gate: promoted to champion. test"
    registry.promote(name, version)
    folder = tracking_api.download_model(name, version, tmp_path / "dl")
    assert (folder / "code/papersim/retrieval/serving.py").is_file() and (folder / "input_example.json").is_file()
    assert not list(folder.rglob("__pycache__")) and (folder / "search_model.py").is_file()

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([sys.executable, "-S", "-c", ISOLATED, sysconfig.get_paths()["purelib"],
                           f"models:/{name}@champion"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hits = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(hits) == 3 and "flutter" in hits[0]["title"].lower()


# Loads a model with only the distributions its requirements.txt brings importable (the listed ones and
# what they require, followed through the installed metadata): the modules and metadata of any other
# distribution are hidden, so an optional import (transformers trying accelerate) falls back as it would
# in a fresh environment, and a needed one fails the load. Prints what was imported, by distribution.
IMPORTS_PROBE = r"""
import importlib.machinery, json, os, re, sys, sysconfig
sys.path.append(sys.argv[1])  # site-packages without its .pth files: papersim's editable install is not on the path
from importlib import metadata
from packaging.requirements import Requirement

def canon(name):
    return re.sub(r"[-_.]+", "-", name).lower()

folder = sys.argv[2]
listed = [line.strip() for line in open(os.path.join(folder, "requirements.txt")) if line.strip()]
allowed, todo = {}, [Requirement(line) for line in listed]
while todo:
    req = todo.pop()
    name, extras = canon(req.name), set(req.extras)
    if name in allowed and extras <= allowed[name]:
        continue
    allowed.setdefault(name, set()).update(extras)
    try:
        needs = metadata.distribution(req.name).requires or []
    except metadata.PackageNotFoundError:
        continue  # not installed here, so not importable either
    for spec in map(Requirement, needs):
        if spec.marker is None or any(spec.marker.evaluate({"extra": e}) for e in {""} | allowed[name]):
            todo.append(spec)

site = os.path.normpath(sys.argv[1])
owner = {}  # file -> distribution, for every installed file
for dist in metadata.distributions():
    for file in dist.files or []:
        owner[os.path.normpath(str(dist.locate_file(file)))] = canon(dist.metadata["Name"])
refused = set()

class Refusing:  # the path finder, blind to files of distributions outside the requirements
    def find_spec(self, name, path=None, target=None):
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        dist = owner.get(os.path.normpath(spec.origin)) if spec is not None and spec.origin else None
        if dist is not None and dist not in allowed:
            refused.add(dist)
            return None  # as if it were not installed
        return spec

    def invalidate_caches(self):
        importlib.machinery.PathFinder.invalidate_caches()

    def find_distributions(self, *args, **kwargs):
        return metadata.MetadataPathFinder.find_distributions(*args, **kwargs)

def hiding(module):  # packages also test each other's presence by metadata (sentence-transformers: datasets)
    discover = module.Distribution.discover
    module.Distribution.discover = classmethod(
        lambda cls, **kwargs: (d for d in discover(**kwargs) if canon(d.metadata["Name"] or "") in allowed))

hiding(metadata)
if "importlib-metadata" in allowed:  # the backport (opentelemetry's) finds distributions on its own
    import importlib_metadata
    hiding(importlib_metadata)
sys.meta_path = [Refusing() if finder is importlib.machinery.PathFinder else finder for finder in sys.meta_path]
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(folder)
answer = model.predict(pd.DataFrame([{"query": "supersonic wing flutter", "k": 3.0}, {"paper_id": "p1", "k": 2.0}]))
imported, unowned = set(), set()
for module in list(sys.modules.values()):
    path = os.path.normpath(getattr(module, "__file__", None) or "/")
    if path.startswith(site + os.sep):
        (imported.add(owner[path]) if path in owner else unowned.add(path))
print(json.dumps({"listed": listed, "allowed": sorted(allowed), "imported": sorted(imported),
                  "unowned": sorted(unowned), "refused": sorted(refused), "requests": answer["request"].tolist(),
                  "papersim": sys.modules["papersim"].__file__}))
"""


@pytest.mark.slow
def test_every_module_the_model_imports_comes_from_its_requirements(built, tracking, tmp_path):
    import sysconfig

    name = f"imports-{os.getpid()}"
    version = tracking_api.register_search_model(
        _run_id(), name, {"encoder": built / "models/encoder", "index": built / "artifacts/index"}, {}, tmp_path)
    folder = tracking_api.download_model(name, version, tmp_path / "dl")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([sys.executable, "-S", "-c", IMPORTS_PROBE, sysconfig.get_paths()["purelib"], str(folder)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["requests"] == [0, 0, 0, 1, 1]  # a query and a paper id answered with nothing else importable
    assert seen["papersim"].startswith(str(folder))  # the model's own copy of papersim, not this checkout
    assert {"openvino", "psutil"} <= {line.split("==")[0].lower() for line in seen["listed"]}
    assert "openvino" in seen["imported"]  # queries are encoded on the serving backend, not a fallback
    assert seen["unowned"] == []  # every imported file belongs to an installed distribution
    assert set(seen["imported"]) <= set(seen["allowed"]), sorted(set(seen["imported"]) - set(seen["allowed"]))


ANSWER = """
import json, sys
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
answer = model.predict(pd.DataFrame([{"query": "supersonic wing flutter", "k": 3.0}, {"paper_id": "p1", "k": 2.0}]))
print(json.dumps(answer.to_dict(orient="records")))
"""


@pytest.mark.slow
def test_a_fresh_environment_from_the_logged_requirements_loads_the_champion_and_answers(built, tmp_path, monkeypatch):
    """The slowest test (~1-2 min, ~2.5 GB while it runs): a virtual environment of the model's
    requirements.txt alone, installed as setup.sh installs (pip for torch, uv for the rest), loads
    models:/papersim@champion and answers a query and a paper id."""
    import shutil

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # a store of its own: `papersim`
    monkeypatch.setenv("PAPERSIM_EXPERIMENT", "fresh-env")
    monkeypatch.delenv("PAPERSIM_PARENT_RUN_ID", raising=False)
    version = tracking_api.register_search_model(
        _run_id(), "papersim", {"encoder": built / "models/encoder", "index": built / "artifacts/index"}, {},
        tmp_path / "register")
    registry.promote("papersim", version)
    requirements = tracking_api.download_model("papersim", version, tmp_path / "dl") / "requirements.txt"
    fresh = tmp_path / "fresh-env"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    try:
        subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True, capture_output=True, timeout=120)
        # as scripts/setup.sh installs: pip takes torch from its sources (the CPU build where they hold
        # one) and uv, uv the rest of requirements.txt
        torch_pin = next(line.strip() for line in requirements.read_text().splitlines() if line.startswith("torch=="))
        for cmd in ([str(fresh / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                     torch_pin, f"uv=={installed_version('uv')}"],
                    [str(fresh / "bin/uv"), "pip", "install", "--quiet", "--python", str(fresh / "bin/python"),
                     "-r", str(requirements)]):
            install = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
            assert install.returncode == 0, install.stderr[-3000:]
        proc = subprocess.run([str(fresh / "bin/python"), "-c", ANSWER, "models:/papersim@champion"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        shutil.rmtree(fresh, ignore_errors=True)  # ~2.5 GB: not left in pytest's kept temp folders
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["request"] for r in rows] == [0, 0, 0, 1, 1]
    assert "flutter" in rows[0]["title"].lower() and rows[3]["paper_id"] != "p1"
    expected = SearchService.load(built / "models/encoder", built / "artifacts/index").predict(
        pd.DataFrame([{"query": "supersonic wing flutter", "k": 3.0}, {"paper_id": "p1", "k": 2.0}]))
    assert [r["paper_id"] for r in rows] == expected["paper_id"].tolist()  # the same answer as here

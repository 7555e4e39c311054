"""Shared fixtures: offline environment, one real SQLite MLflow store per test session, tiny corpora."""

import json
import os
from pathlib import Path

import pytest

from papersim.env import OFFLINE_DEFAULTS

for _key, _value in OFFLINE_DEFAULTS.items():  # before any test imports mlflow, dvc or GX
    os.environ[_key] = _value

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """A real SQLite-backed MLflow tracking store, created once (creating the schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture
def tracking(mlflow_store, monkeypatch, request) -> str:
    """Point stages at the session store, in an experiment of this test's own; returns its name."""
    experiment = "test-" + request.node.name.replace("[", "-").replace("]", "")[:200]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("PAPERSIM_EXPERIMENT", experiment)
    monkeypatch.delenv("PAPERSIM_PARENT_RUN_ID", raising=False)
    return experiment


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def paper(i: int, **overrides) -> dict:
    """A plausible paper record with a unique id, title and abstract."""
    row = {
        "id": f"p{i}",
        "title": f"Contrastive learning of paper embeddings, part {i}",
        "abstract": f"We study method number {i} for learning representations of scientific abstracts "
        f"with Siamese networks and report retrieval results on benchmark {i}.",
        "categories": ["cs.LG"],
    }
    row.update(overrides)
    return row


PAGE_HEADER = "new\n\nGet trending papers in your email inbox!\n\nSubscribe\n\nbyAK and the research community\n\nMar 14\n\n"


def write_page(path: Path, papers: list[tuple[str, str]]) -> Path:
    """A saved listing page in the site's format: header, then title/abstract paragraphs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{title}\n\n{abstract}\n\n" for title, abstract in papers)
    path.write_text(PAGE_HEADER + body, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT (1 layer, 32 dims) with the packaged tokenizer, saved as a
    sentence-transformers folder: real code paths, seconds instead of minutes on a CPU."""
    from papersim.encoders.load import save_tiny_encoder

    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-model"))


TOPICS = ["wing flutter at supersonic speed", "heat transfer in laminar boundary layers",
          "contrastive learning of sentence embeddings", "message passing in graph neural networks"]


def papers_frame(n: int, start: int = 0):
    """Ingested papers (papers.parquet's columns) on four topics; pages group papers of one topic."""
    import pandas as pd

    # Metadata as ingest keeps it: every sixth paper has none (no date, authors, link or categories).
    rows = [{"paper_id": f"p{i}", "title": f"A study of {TOPICS[i % 4]}, part {i}",
             "abstract": f"We examine {TOPICS[i % 4]} in setting {i} and report measurements numbered {i * 7}.",
             "source": "arxiv", "groups": [f"page{i % 4}"],
             "authors": [f"Author {i}", "B. Coauthor"] if i % 6 != 5 else [],
             "date": f"{2010 + i % 12}-{1 + i % 9:02d}-{10 + i % 10}" if i % 6 != 5 else None,
             "url": f"https://example.org/papers/p{i}" if i % 6 != 5 else None, "venue": None,
             "categories": [f"cat{i % 3}"] if i % 6 != 5 else [], "content_hash": f"{i:032x}"}
            for i in range(start, start + n)]
    return pd.DataFrame(rows)


def corpus_frame(n: int = 60):
    """Papers on a few topics, some listed on shared pages, one exact duplicate text."""
    import pandas as pd

    topics = ["graph neural networks for molecules", "contrastive image representation learning",
              "reinforcement learning for robot control", "speech recognition with transformers"]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        rows.append({
            "paper_id": f"p{i}",
            "title": f"A study of {topic}, variant {i}",
            "abstract": f"We study {topic}. Our method number {i} improves results. "
                        f"Experiments on benchmark {i % 7} confirm it. Code is released.",
            "groups": [f"page:{i % 5}"] if i % 3 == 0 else [],
            "content_hash": f"h{i}",
        })
    return pd.DataFrame(rows)


def toy_pairs(n: int, offset: int = 0):
    """Pairs with distinct texts (the no-duplicates sampler needs them) and two negatives each."""
    import pandas as pd

    topics = ["graph networks", "image contrastive learning", "robot control", "speech recognition", "protein folding"]
    rows = []
    for i in range(offset, offset + n):
        t = topics[i % len(topics)]
        rows.append({"anchor": f"{t} paper {i}", "positive": f"We study {t} in experiment {i} with new methods.",
                     "negative_1": f"Unrelated work number {i} on databases.",
                     "negative_2": f"A survey {i} of compilers and type systems.",
                     "negative_ids": [f"n{i}a", f"n{i}b"], "source": "title_abstract"})
    return pd.DataFrame(rows)


def held_out_corpus():
    """(papers, split): five papers, four in the test split (one untitled); page1 lists two of them,
    `big` only one, so only page1 is a group with someone to find."""
    import pandas as pd

    papers = pd.DataFrame({
        "paper_id": ["a", "b", "c", "d", "e"],
        "title": ["Panel flutter", "Wing flutter", "Sentence embeddings", "", "Boundary layers"],
        "abstract": ["flutter of thin panels at supersonic speeds", "flutter of wings at supersonic speeds",
                     "contrastive learning of sentence embeddings", "an untitled note on flutter",
                     "heat transfer in laminar boundary layers"],
        "groups": [["page1"], ["page1"], ["page2"], [], ["big"]],
        "content_hash": list("12345"),
    })
    split = pd.DataFrame({"paper_id": list("abcde"), "split": ["test", "test", "train", "test", "test"]})
    return papers, split


BEIR_DOCS = [("d1", "wing flutter", "supersonic wing flutter measured in a wind tunnel"),
             ("d2", "boundary layers", "heat transfer in laminar boundary layers on flat plates"),
             ("d3", "panel flutter", "flutter of thin panels at supersonic speeds"),
             ("d4", "sentence embeddings", "contrastive learning of sentence embeddings for retrieval")]
BEIR_QRELS = "query-id\tcorpus-id\tscore\n1\td1\t2\n1\td3\t1\n2\td2\t1\n3\td4\t0\n"


def write_beir(folder: Path, qrels: str = BEIR_QRELS) -> Path:
    """A BEIR folder over BEIR_DOCS; by default query 1 judges d1 (2) and d3 (1), query 2 d2, query 3
    only a 0, query 4 nothing."""
    write_jsonl(folder / "corpus.jsonl", [{"_id": i, "title": t, "text": a} for i, t, a in BEIR_DOCS])
    write_jsonl(folder / "queries.jsonl", [{"_id": "1", "text": "supersonic flutter"},
                                           {"_id": "2", "text": "heat transfer boundary layers"},
                                           {"_id": "3", "text": "embeddings"}, {"_id": "4", "text": "unjudged"}])
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return folder


class Rows:
    """A normalised batch with its Arrow columns as Python lists, for readable assertions."""

    def __init__(self, batch):
        self.source, self.lines = batch.source, batch.lines
        for name in ("paper_id", "title", "abstract", "groups", "content_hash"):
            setattr(self, name, getattr(batch, name).to_pylist())


def read_all(spec, batch_rows: int = 1000):
    """(raw batches, normalised Rows per batch) of a source, as ingest reads it."""
    from papersim.data.normalise import normalise_batch
    from papersim.data.sources import read_source

    batches = list(read_source(spec, batch_rows))
    return batches, [Rows(normalise_batch(b, spec)) for b in batches]


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir):
    """The tiny model behind the torch backend, 32 tokens, batches of 4 (texts span several batches)."""
    from papersim.encoders.encode import load_text_encoder

    return load_text_encoder(str(tiny_model_dir), "torch", max_seq_length=32, batch_size=4)


@pytest.fixture
def workspace(tmp_path, tiny_model_dir):
    """What evaluate and build_index read: papers, the split, a 'trained' model, params for the tiny model."""
    import shutil

    import pandas as pd
    import yaml

    papers = papers_frame(24)
    (tmp_path / "data/processed").mkdir(parents=True)
    papers.to_parquet(tmp_path / "data/processed/papers.parquet", index=False)
    (tmp_path / "data/pairs").mkdir(parents=True)
    split = ["test" if i % 4 == 0 else "train" for i in range(len(papers))]
    pd.DataFrame({"paper_id": papers["paper_id"], "split": split}).to_parquet(
        tmp_path / "data/pairs/split.parquet", index=False)
    shutil.copytree(tiny_model_dir, tmp_path / "models/encoder")
    serving = {"encoder": "trained", "base_model": str(tiny_model_dir), "reason": "test workspace",
               "fusion": {"method": "convex", "alpha": 0.5, "normalisation": "zscore", "rrf_k": 60, "depth": 100},
               "similar": {"encoder": "trained", "terms": 25, "reason": "test workspace",
                           "fusion": {"method": "convex", "alpha": 0.5, "normalisation": "zscore", "rrf_k": 60,
                                      "depth": 100}}}
    (tmp_path / "models/serving.json").write_text(json.dumps(serving), encoding="utf-8")
    beir = tmp_path / "beir/mini"
    write_jsonl(beir / "corpus.jsonl", [{"_id": f"d{i}", "title": t.split(" in ")[0], "text": t}
                                        for i, t in enumerate(TOPICS)])
    write_jsonl(beir / "queries.jsonl", [{"_id": "q1", "text": "supersonic flutter"},
                                         {"_id": "q2", "text": "graph networks"}])
    (beir / "qrels").mkdir()
    (beir / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t2\nq2\td3\t1\n", encoding="utf-8")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate"].update(beir_sets=[str(beir)], base_model=str(tiny_model_dir), backend="torch",
                              max_seq_length=32)
    params["build_index"].update(backend="torch", max_seq_length=32, recall_queries=10)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


@pytest.fixture
def built(workspace, tracking):
    """The workspace with an index built by the build_index stage (artifacts/index)."""
    from stages.build_index import main as build

    assert build(["--params", str(workspace / "params.yaml"), "--papers",
                  str(workspace / "data/processed/papers.parquet"), "--pairs", str(workspace / "data/pairs"),
                  "--model", str(workspace / "models/encoder"), "--serving", str(workspace / "models/serving.json"),
                  "--embedding-cache", str(workspace / "cache"), "--out", str(workspace / "artifacts/index"),
                  "--report", str(workspace / "reports/build_index.json")]) == 0
    return workspace


def project_repo(root: Path, params_update) -> Path:
    """The project's dvc.yaml, stages and params in a fresh git + DVC repo at `root`.

    `params_update(params)` edits the params (a dict) before the first commit; write the raw data
    under `root` before calling this.
    """
    import shutil
    import subprocess
    import sys

    import yaml

    for item in ("dvc.yaml", "params.yaml", "stages", "src/papersim"):
        src, dst = REPO / item, root / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params_update(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return root


def flow_repo(root: Path, tiny_model_dir: Path, update=None) -> Path:
    """A repository for the retrain flow: 24 papers on four topics, a listing page, a Cranfield-shaped
    judged set, the tiny model everywhere and the cheapest params; `update(params)` edits more."""
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
        # evaluate and build_index on OpenVINO as shipped: they read back the conversions train made
        params["evaluate"].update(base_model=str(tiny_model_dir), max_seq_length=32)
        params["build_index"].update(max_seq_length=32, recall_queries=5)
        params["retrain"].update(drift_sample_size=10, drift_permutations=50)
        if update is not None:
            update(params)

    return project_repo(root, tiny)


@pytest.fixture
def stage_argv():
    """A stage's arguments as dvc.yaml declares them (paths relative to the working directory), some
    replaced: stage_argv("train", pairs="data/nope")."""
    from papersim.stage import stage_command

    def argv(name: str, **replace: str) -> list[str]:
        cmd = stage_command(REPO, name, {flag.replace("_", "-"): value for flag, value in replace.items()})
        return cmd[3:]  # without `python -m stages.<name>`

    return argv


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc, timeout_s: float = 30) -> None:
    """Stop a server started in a session of its own: SIGTERM to its process group, then SIGKILL."""
    import signal
    import subprocess

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real `prefect server start` on 127.0.0.1 (a free port, a home of its own, analytics off, its
    own process group, stopped by its PID's group), its scheduler looping every 5 s; yields its API URL."""
    import subprocess
    import sys
    import time
    import urllib.request

    home, port = tmp_path_factory.mktemp("prefect-server"), free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(server)
        log.close()


HOSTILE_PAPERS = [  # paper text that must show as text on the web pages, never run
    {"paper_id": "xss-script", "title": '<script>window.__pwned = "title"; alert(1)</script> Wing flutter at supersonic speed',
     "abstract": "We examine wing flutter at supersonic speed. <img src=x onerror=\"window.__pwned = 'img'; alert(2)\"> "
                 "The measurements come from a wind tunnel.", "source": "<b>arxiv</b>", "groups": ["page<i>0</i>"]},
    {"paper_id": "xss-link", "title": 'Click <a href="javascript:window.__pwned=\'link\'">here</a> for wing flutter',
     "abstract": "javascript:alert(3) is not a link here: <a href=\"javascript:alert(4)\">open</a>. We examine wing "
                 "flutter at supersonic speed in a second setting.", "source": "arxiv", "groups": ["page0"]},
]
MATH_PAPER = {  # LaTeX as arXiv abstracts carry it, and every metadata field: rendered on the pages
    "paper_id": "math", "title": r"Flutter bounds of $\mathcal{O}(n^2)$ for \textit{supersonic} wings",
    "abstract": r"We bound wing flutter at supersonic speed by $\alpha \leq \frac{1}{2}$ with {\it no} tunnel.",
    "source": "arxiv", "groups": ["page0"], "authors": ["Ada Lovelace", "Alan Turing"], "date": "2021-04-05",
    "url": "https://arxiv.org/abs/2104.01234", "venue": "Journal of Flutter", "categories": ["cs.LG"]}
LONG_ABSTRACT = " ".join(f"Sentence {i} examines heat transfer in laminar boundary layers at length." for i in range(12))


@pytest.fixture(scope="session")
def web_site(tmp_path_factory, tiny_model_dir, mlflow_store):
    """A workspace for the web pages: 24 papers on four topics, two hostile ones (HOSTILE_PAPERS), one with LaTeX
    and all metadata (MATH_PAPER) and one with a long abstract, its index built by the build_index stage; a registry model with v1 (champion: that index)
    and v2 (challenger: the same papers under a second tiny encoder, so the two rank differently).
    Returns (root, model name, environment for a server process)."""
    import shutil
    from types import SimpleNamespace

    import pandas as pd
    import yaml

    from papersim.encoders.load import save_tiny_encoder
    from stages.build_index import main as build

    root = tmp_path_factory.mktemp("web")
    name = f"web-{os.getpid()}"
    papers = papers_frame(24)
    extra = pd.DataFrame([*HOSTILE_PAPERS, MATH_PAPER, {"paper_id": "long", "title": "Heat transfer in laminar boundary layers, "
                                            "the long version", "abstract": LONG_ABSTRACT, "source": "arxiv",
                                            "groups": []}])
    papers = pd.concat([papers, extra.assign(content_hash=[f"x{i}" for i in range(len(extra))])], ignore_index=True)
    (root / "data/processed").mkdir(parents=True)
    papers.to_parquet(root / "data/processed/papers.parquet", index=False)
    (root / "data/pairs").mkdir(parents=True)
    pd.DataFrame({"paper_id": papers["paper_id"], "split": ["train"] * len(papers)}).to_parquet(
        root / "data/pairs/split.parquet", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["build_index"].update(backend="torch", max_seq_length=32, recall_queries=10)
    params["retrain"]["model_name"] = name
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    fusion = {"method": "convex", "alpha": 0.5, "normalisation": "zscore", "rrf_k": 60, "depth": 100}
    serving = {"encoder": "trained", "base_model": str(tiny_model_dir), "reason": "web test workspace",
               "fusion": fusion, "similar": {"encoder": "trained", "terms": 25, "fusion": fusion}}
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "PAPERSIM_EXPERIMENT": "test-web"}
    env.pop("PAPERSIM_PARENT_RUN_ID", None)
    second = save_tiny_encoder(root / "second-encoder", seed=1)
    made = []
    with pytest.MonkeyPatch.context() as mp:
        for key in ("MLFLOW_TRACKING_URI", "PAPERSIM_EXPERIMENT"):
            mp.setenv(key, env[key])
        mp.delenv("PAPERSIM_PARENT_RUN_ID", raising=False)
        from papersim.lifecycle import registry, tracking

        for i, encoder in enumerate((tiny_model_dir, second)):
            work = root if i == 0 else root / "v2"
            shutil.copytree(encoder, work / "models/encoder")
            (work / "models/serving.json").write_text(json.dumps(serving), encoding="utf-8")
            assert build(["--params", str(root / "params.yaml"), "--papers", str(root / "data/processed/papers.parquet"),
                          "--pairs", str(root / "data/pairs"), "--model", str(work / "models/encoder"),
                          "--serving", str(work / "models/serving.json"), "--embedding-cache", str(root / "cache"),
                          "--out", str(work / "artifacts/index"),
                          "--report", str(work / "reports/build_index.json")]) == 0
            report = {"cranfield": {"served": {"ndcg@10": 0.41 + i / 100, "recall@100": 0.9, "mrr@10": 0.6}},
                      "test_split": {"served": {"ndcg@10": 0.93 - i / 100, "recall@100": 0.99, "mrr@10": 0.9}}}
            (work / "reports/evaluate.json").write_text(json.dumps(report), encoding="utf-8")
            with tracking.flow_run("web-test", {}, {}) as run:
                pass
            gate = ("champion", "first model: no champion to compare with; beats every baseline") if i == 0 else \
                ("challenger", "served/ndcg@10 0.6700 vs champion 0.6700 (+0.0000): <b>below</b> min_delta")
            made.append(tracking.register_search_model(
                run.run_id, name, {"encoder": work / "models/encoder", "index": work / "artifacts/index",
                                   "evaluate": work / "reports/evaluate.json"},
                {"papersim.gate": gate[0], "papersim.gate_reason": gate[1], "papersim.primary": "0.6700",
                 "papersim.primary_metric": "served/ndcg@10"}, root / f"register{i}"))
        registry.promote(name, made[0])
        registry.mark_challenger(name, made[1])
    return SimpleNamespace(root=root, model_name=name, env=env, versions=made)

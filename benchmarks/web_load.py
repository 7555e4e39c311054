"""The web pages under load: `papersim web` answering a fixed mix of search, paper and compare pages from
4 client threads, side by side with the same answers computed in process (no HTTP, no page).

    .venv/bin/python benchmarks/web_load.py [--requests 600] [--clients 4] [--papers 100000] [--no-sample]

Two corpora: the bundled sample (the main command's workspace index `artifacts/index` and its registry:
run the main command first) and a synthetic corpus of `--papers` papers (pipeline_scale's generator)
indexed by the build_index stage as HNSW32, with a tiny randomly initialised 32-dim encoder so that
papersim's own work is timed, not a transformer's (the real encoder adds ~2.3 ms a query on OpenVINO),
registered once as the champion of a registry of its own.

The mix (seeded, the same for both systems): 45% search pages (a paper's title as the query, k 10;
mode served 7 times in 10, then dense, bm25, hybrid), 45% paper pages (a random paper, 10 similar
papers), 10% compare pages (a title as the query, mode served, the page's default versions: champion
and challenger, or the champion against the workspace index when there is no other version; with no
registered version at all, the workspace index against itself). Each page is fetched as HTML over
keep-alive connections after a warm-up (compare's second version loaded). The baseline calls
search_text / similar_papers (compare: on both versions, one after the other) from the same number of
threads. Reported per page: p50 and p95 latency (ms), and compare's p50 against a served search's.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlencode

import numpy as np
import pandas as pd
import yaml

from pipeline_scale import write_corpus  # the same synthetic corpus (benchmarks/ is this script's path)
from record import record

REPO = Path(__file__).resolve().parents[1]
MODES = ["served"] * 7 + ["dense", "bm25", "hybrid"]
SETUP = "HNSW32, tiny encoder, papers answered by dense + BM25 more-like-this\n"  # another setup's workspace: rebuilt


def request_mix(n: int, titles: list[str], ids: list[str], refs: tuple[str, str],
                seed: int = 0) -> list[tuple[str, dict]]:
    """(page, parameters): every tenth a compare of versions `refs`, the rest search and paper pages in turn."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append(("compare", {"q": rng.choice(titles), "k": 10, "a": refs[0], "b": refs[1]}))
        elif i % 2 == 0:
            out.append(("search", {"q": rng.choice(titles), "k": 10, "mode": MODES[(i // 2) % len(MODES)]}))
        else:
            out.append(("paper", {"paper_id": rng.choice(ids), "k": 10}))
    return out


def url_of(page: str, params: dict) -> str:
    if page == "paper":
        return "/paper/" + quote(params["paper_id"], safe=":@") + "?k=10"
    return ("/?" if page == "search" else "/compare?") + urlencode(params)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Web:
    """`papersim web` on 127.0.0.1 in its own process group, started in `root` (its index and params)."""

    def __init__(self, root: Path, env: dict[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.port, self.log = free_port(), log.open("w")
        self.proc = subprocess.Popen([str(Path(sys.executable).with_name("papersim")), "web", "--port", str(self.port)],
                                     cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 600
        while self.get("/health")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"papersim web did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            conn.request("GET", path, headers={"Accept": "text/html"})
            answer = conn.getresponse()
            return answer.status, answer.read()
        except OSError:
            return 0, b""

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()


def over_http(port: int, mix: list[tuple[str, dict]], clients: int) -> dict:
    local = threading.local()

    def send(item: tuple[str, dict]) -> tuple[str, int, float]:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        start = time.perf_counter()
        local.conn.request("GET", url_of(*item), headers={"Accept": "text/html"})
        answer = local.conn.getresponse()
        body = answer.read()
        seconds = time.perf_counter() - start
        assert answer.status == 200 and b'class="hit' in body, (answer.status, url_of(*item)[:100], body[:300])
        return kind(item), answer.status, seconds

    return _load(send, mix, clients)


def in_process(store, mix: list[tuple[str, dict]], clients: int) -> dict:
    """The baseline: what the pages call, without HTTP and without the page (papersim.retrieval.search)."""
    from papersim.retrieval.search import search_text, similar_papers

    compare = next(params for page, params in mix if page == "compare")
    served, a, b = store.served, store.get(compare["a"]), store.get(compare["b"])

    def send(item: tuple[str, dict]) -> tuple[str, int, float]:
        page, params = item
        start = time.perf_counter()
        if page == "search":
            search_text(served.index, params["q"], 10, params["mode"])
        elif page == "paper":
            similar_papers(served.index, params["paper_id"], 10)
        else:
            for model in (a, b):  # one after the other, as a script calling search_text twice would
                search_text(model.index, params["q"], 10, "served")
        return kind(item), 200, time.perf_counter() - start

    return _load(send, mix, clients)


def kind(item: tuple[str, dict]) -> str:
    """The page, with served searches apart: compare answers in mode served, so it is timed against them."""
    page, params = item
    return "search served" if page == "search" and params["mode"] == "served" else page


def _load(send, mix: list[tuple[str, dict]], clients: int) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(send, mix))
    seconds = time.perf_counter() - start
    row = {"requests/s": len(mix) / seconds}
    for page in ("search", "search served", "paper", "compare"):
        ms = np.array([t for p, _, t in results if p == page or (page == "search" and p.startswith("search"))]) * 1000
        row[f"{page} p50"], row[f"{page} p95"] = float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
    row["compare / served search p50"] = row["compare p50"] / row["search served p50"]
    return row


def synthetic_workspace(root: Path, n: int) -> Path:
    """n synthetic papers indexed by the build_index stage (HNSW32, the tiny encoder) and registered
    once, as the champion of a registry of its own (root/mlflow.db). Reused when already built."""
    from papersim.encoders.load import save_tiny_encoder

    if (root / "registered").is_file() and (root / "registered").read_text() == SETUP:
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    write_corpus(root / "corpus.jsonl", n)
    rows = [json.loads(line) for line in (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    papers = pd.DataFrame({"paper_id": [r["id"] for r in rows], "title": [r["title"] for r in rows],
                           "abstract": [r["abstract"] for r in rows], "source": "synthetic",
                           "groups": [r["categories"] for r in rows],
                           "content_hash": [hashlib.sha1((r["title"] + r["abstract"]).encode()).hexdigest()
                                            for r in rows]})
    (root / "data/processed").mkdir(parents=True)
    papers.to_parquet(root / "data/processed/papers.parquet", index=False)
    (root / "data/pairs").mkdir(parents=True)
    split = ["test" if i % 100 == 0 else "train" for i in range(n)]
    pd.DataFrame({"paper_id": papers["paper_id"], "split": split}).to_parquet(root / "data/pairs/split.parquet")
    tiny = save_tiny_encoder(root / "tiny")
    shutil.copytree(tiny, root / "models/encoder")  # a registered version's encoder folder is named `encoder`
    fusion = {"method": "convex", "alpha": 0.5, "normalisation": "zscore", "rrf_k": 60, "depth": 100}
    similar = {"encoder": "trained", "terms": 25, "fusion": fusion}  # papers: dense + BM25 more-like-this, fused
    (root / "models/serving.json").write_text(json.dumps({"encoder": "trained", "base_model": str(tiny),
                                                          "reason": "benchmark", "fusion": fusion,
                                                          "similar": similar}))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["build_index"].update(factory="HNSW32", backend="torch")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = env_for(root)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stages.build_index", "--params", "params.yaml", "--papers",
                    "data/processed/papers.parquet", "--pairs", "data/pairs", "--model", "models/encoder",
                    "--serving", "models/serving.json", "--embedding-cache", str(root.parent / "embeddings"), "--out",
                    "artifacts/index", "--report", "reports/build_index.json"], cwd=root, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    print(f"  build_index: {time.perf_counter() - start:.0f} s", flush=True)
    register = ("from pathlib import Path; from papersim.lifecycle import registry, tracking\n"
                "with tracking.flow_run('benchmark', {}, {}) as run: pass\n"
                "v = tracking.register_search_model(run.run_id, 'papersim', {'encoder': Path('models/encoder'), "
                "'index': Path('artifacts/index')}, {'papersim.gate': 'champion', 'papersim.gate_reason': "
                "'benchmark: the synthetic index'}, Path('cache/register'))\n"
                "print(registry.promote('papersim', v))")
    (root / "cache/register").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", register], cwd=root, env=env, check=True)
    (root / "registered").write_text(SETUP)
    return root


def env_for(root: Path) -> dict[str, str]:
    from papersim.env import OFFLINE_DEFAULTS

    env = {**os.environ, **OFFLINE_DEFAULTS, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO)}
    if root != REPO:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    return env


def measure(name: str, root: Path, mix_size: int, clients: int, results: dict) -> None:
    """Both systems on one workspace: the in-process baseline, then `papersim web` over HTTP."""
    from papersim.errors import PapersimError
    from papersim.lifecycle.retrain import retrain_config
    from papersim.web.app import served_model
    from papersim.web.models import WORKSPACE, ModelStore, Registry
    from papersim.web.pages import default_refs

    env = env_for(root)
    for key in ("MLFLOW_TRACKING_URI",):  # this process reads the same registry as the server
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    cwd = os.getcwd()
    os.chdir(root)  # the registry's default store and cache are relative to the workspace, as for the server
    try:
        registry = Registry(retrain_config(Path("params.yaml")).model_name, Path("."))
        store = ModelStore(served_model(None, Path("artifacts/index"), registry, Path(".")), registry,
                           Path("artifacts/index"))
        ids = store.served.index.ids
        titles = [t for t in ids["title"].tolist() if t.strip()]
        try:
            refs = default_refs(registry)
        except PapersimError:  # no registered version: compare the workspace index with itself, two searches still
            refs = (WORKSPACE, WORKSPACE)
        mix = request_mix(mix_size, titles, ids["paper_id"].tolist(), refs)
        print(f"{name}: {len(ids):,} papers ({store.served.index.info.get('factory')}), compare {refs[0]} vs "
              f"{refs[1]}; {mix_size} requests from {clients} clients; {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f} before", flush=True)
        in_process(store, mix[:40], clients)  # warm-up
        results[(name, "in-process search / similar_papers (baseline)")] = in_process(store, mix, clients)
        del store
    finally:
        os.chdir(cwd)
    web = Web(root, env, REPO / f"benchmarks/.work/web_load_{name.split()[0]}.log")
    try:
        over_http(web.port, mix[:40], clients)  # warm-up: compare's second version is loaded here
        results[(name, "`papersim web`, HTML over HTTP")] = over_http(web.port, mix, clients)
        print(f"  load average {os.getloadavg()[0]:.1f} after", flush=True)
    finally:
        web.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--papers", type=int, default=100_000, help="synthetic corpus size (0: none)")
    parser.add_argument("--no-sample", action="store_true", help="skip the bundled sample")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks/.work/web_load")
    args = parser.parse_args()
    print("command: .venv/bin/python benchmarks/web_load.py " + " ".join(sys.argv[1:]), flush=True)
    results: dict = {}
    if not args.no_sample:
        if not (REPO / "artifacts/index/index.json").is_file():
            raise SystemExit("no artifacts/index: run the main command (bash scripts/run.sh) first")
        measure("bundled sample", REPO, args.requests, args.clients, results)
    if args.papers:
        root = synthetic_workspace(args.workdir / f"{args.papers}", args.papers)
        measure(f"{args.papers:,} synthetic", root, args.requests, args.clients, results)
    columns = ["requests/s", "search p50", "search p95", "search served p50", "paper p50", "paper p95",
               "compare p50", "compare p95", "compare / served search p50"]
    with record("web_load"):
        print("\n| corpus | system | " + " | ".join(columns) + " |\n|---|---|" + "---:|" * len(columns))
        for (corpus, system), row in results.items():
            cells = [f"{row[c]:.2f}x" if c.startswith("compare /") else f"{row[c]:,.1f}" for c in columns]
            print(f"| {corpus} | {system} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

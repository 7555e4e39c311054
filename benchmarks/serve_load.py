"""Serving under load: `mlflow models serve` of the champion (1 and 2 workers) against the in-process
search service, side by side, with bad requests mixed in.

    .venv/bin/python benchmarks/serve_load.py [--requests 10000] [--threads 8] [--workers 1 2]

The champion (`models:/papersim@champion` in the repository's MLflow store: run the main command
first) answers `--requests` requests from `--threads` client threads, one row each (a held-out
title as the query, or a paper id; k 10). Every tenth request is bad, cycling through: missing
fields, k out of range, an unknown paper id, a 1 MB query, invalid JSON. Reported per system:
requests/s, p50 and p99 latency of the good requests, the count of 5xx answers (must be 0) and of
bad requests answered 4xx (must be all), then the latency of one 1,000-row request (best of 3).
The in-process baseline calls `SearchService.predict` from the same threads (no HTTP, no JSON):
what the model costs without a server around it.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.errors import PapersimError  # noqa: E402
from record import record  # noqa: E402

BAD = {
    "missing fields": lambda i, ids: json.dumps({"dataframe_records": [{"k": 3}]}),
    "k out of range": lambda i, ids: json.dumps({"dataframe_records": [{"query": "flutter", "k": 1000}]}),
    "unknown paper id": lambda i, ids: json.dumps({"dataframe_records": [{"paper_id": f"no-such-paper-{i}"}]}),
    "1 MB query": lambda i, ids: json.dumps({"dataframe_records": [{"query": "x" * 1_000_000}]}),
    "invalid JSON": lambda i, ids: "{not json",
}


def requests_for(n: int, titles: list[str], ids: list[str]) -> list[tuple[bool, str]]:
    """(good?, JSON body): every tenth bad (kinds in turn), the rest a title query or a paper id."""
    kinds, out = list(BAD.values()), []
    for i in range(n):
        if i % 10 == 9:
            out.append((False, kinds[(i // 10) % len(kinds)](i, ids)))
        elif i % 3 == 0:
            out.append((True, json.dumps({"dataframe_records": [{"paper_id": ids[i % len(ids)], "k": 10}]})))
        else:
            out.append((True, json.dumps({"dataframe_records": [{"query": titles[i % len(titles)], "k": 10}]})))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow models serve` of the champion on 127.0.0.1 in its own process group."""

    def __init__(self, workers: int, env: dict[str, str], log: Path) -> None:
        self.port, self.log = free_port(), log.open("w")
        mlflow = Path(sys.executable).with_name("mlflow")
        self.proc = subprocess.Popen([str(mlflow), "models", "serve", "-m", "models:/papersim@champion",
                                      "--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port),
                                      "-w", str(workers)], cwd=REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while not self._ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"mlflow models serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(1)

    def _ping(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/ping")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)  # the group: mlflow and its uvicorn workers
        self.proc.wait(timeout=60)
        self.log.close()


def over_http(port: int, reqs: list[tuple[bool, str]], threads: int) -> dict:
    local = threading.local()

    def send(item: tuple[bool, str]) -> tuple[bool, int, float]:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        good, body = item
        start = time.perf_counter()
        try:
            local.conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
            answer = local.conn.getresponse()
            answer.read()
            status = answer.status
        except (OSError, http.client.HTTPException):
            local.conn.close()
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            status = 599  # a dropped connection counts as a server error
        return good, status, time.perf_counter() - start

    return _load(send, reqs, threads)


def in_process(service, reqs: list[tuple[bool, str]], threads: int) -> dict:
    def send(item: tuple[bool, str]) -> tuple[bool, int, float]:
        good, body = item
        start = time.perf_counter()
        try:
            service.predict(pd.DataFrame(json.loads(body)["dataframe_records"]))
            status = 200
        except (PapersimError, ValueError):
            status = 400
        return good, status, time.perf_counter() - start

    return _load(send, reqs, threads)


def _load(send, reqs: list[tuple[bool, str]], threads: int) -> dict:
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(send, reqs))
    seconds = time.perf_counter() - start
    good = np.array([t for g, s, t in results if g and s == 200]) * 1000
    return {"requests/s": len(reqs) / seconds, "p50 ms": float(np.percentile(good, 50)),
            "p99 ms": float(np.percentile(good, 99)), "5xx": sum(s >= 500 for _, s, _ in results),
            "good 200": f"{sum(g and s == 200 for g, s, _ in results)}/{sum(g for g, _, _ in results)}",
            "bad 4xx": f"{sum((not g) and 400 <= s < 500 for g, s, _ in results)}/{sum(not g for g, _, _ in results)}"}


def big_request(send_one, rows: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        send_one(rows)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    apply_offline_defaults()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlruns/mlflow.db'}")}
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    print("command: .venv/bin/python benchmarks/serve_load.py " + " ".join(sys.argv[1:]))
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model("models:/papersim@champion")
    service = model.unwrap_python_model().service
    papers = pd.read_parquet(REPO / "data/processed/papers.parquet")
    titles = papers.loc[papers["title"].str.strip() != "", "title"].tolist()
    reqs = requests_for(args.requests, titles, papers["paper_id"].tolist())
    big = [titles[i % len(titles)] for i in range(1000)]
    rows = {}
    print(f"{args.requests:,} one-row requests from {args.threads} threads, 10% bad; "
          f"{len(service.index.ids):,} papers; {os.cpu_count()} cores", flush=True)
    rows["in-process SearchService (baseline)"] = {
        **in_process(service, reqs, args.threads),
        "1,000-row request s": big_request(lambda q: service.predict(pd.DataFrame({"query": q})), big)}
    print("  in-process done", flush=True)
    for workers in args.workers:
        server = Server(workers, env, REPO / f"benchmarks/.work/serve_load_{workers}.log")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)

            def one(q: list[str]) -> None:
                conn.request("POST", "/invocations", body=json.dumps({"dataframe_records": [{"query": t}
                                                                                        for t in q]}),
                             headers={"Content-Type": "application/json"})
                answer = conn.getresponse()
                assert answer.status == 200 and len(json.loads(answer.read())["predictions"]) == 10 * len(q)

            rows[f"mlflow models serve, {workers} worker{'s' * (workers > 1)}"] = {
                **over_http(server.port, reqs, args.threads), "1,000-row request s": big_request(one, big)}
        finally:
            server.stop()
        print(f"  {workers} worker(s) done", flush=True)
    columns = ["requests/s", "p50 ms", "p99 ms", "5xx", "good 200", "bad 4xx", "1,000-row request s"]
    with record("serve_load"):
        print("\n| system | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
        for name, row in rows.items():
            cells = [f"{row[c]:,.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

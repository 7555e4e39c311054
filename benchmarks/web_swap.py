"""Page latency while `papersim web` swaps its champion for a newly promoted version: the background load
(the served reference switched once the new version is loaded) against the reload inside a request that
this change replaced (kept in this script only, as the baseline), and against no swap at all.

    .venv/bin/python benchmarks/web_swap.py [--papers 50000] [--clients 4] [--runs 2]

The workspace: web_load's synthetic corpus (HNSW32, the tiny encoder), registered twice (v1, v2: the
same index, so only the load differs) in a registry of its own. Each system is a fresh `papersim web`
app (uvicorn on 127.0.0.1, its own process group), the champion at v1 and the registry re-read every
second. Clients fetch search pages (a title as the query, mode served, k 10, HTML, keep-alive) for
`--before` seconds, then the champion moves to v2 and they go on until a page names v2, then
`--after` seconds more. Reported: the swap's length (alias moved to the first page answered by v2:
up to a second before the server re-reads the registry, then the load), the pages started within it,
their p50 / p99 / max latency in ms, how many took over 250 ms and how many v1 answered; "no swap"
reports its pages over the same span. Each page names the version that answered (`serving papersim vN`).
"""

import argparse
import http.client
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from web_load import env_for, free_port, synthetic_workspace  # the same corpus and environment
from record import record

REPO = Path(__file__).resolve().parents[1]
TTL_S = 1.0  # the server's registry re-read: short, so that the swap starts soon after the move
SERVED = re.compile(rb"serving papersim v(\d+)")
SYSTEMS = {"none": "no swap (champion stays v1)",
           "background": "swap, new version loaded in the background (this change)",
           "blocking": "swap, reload inside the request (before this change: the baseline)"}


def blocking_store_type():
    """ModelStore with the `served` of before this change: the request that sees the alias moved loads the
    new version under the swap lock, and every request after it waits for that lock."""
    from papersim.errors import PapersimError
    from papersim.web.models import REGISTRY_REFS, ModelStore

    class BlockingStore(ModelStore):
        _swap = threading.Lock()

        @property
        def served(self):
            current = self._served
            if current.ref not in REGISTRY_REFS:
                return current
            try:
                found = self.registry.find(current.ref)
            except PapersimError:
                return current
            if found["version"] == current.version:
                return current
            with self._swap:
                if self._served.version != found["version"]:
                    model = self.registry.load(found)
                    model.ref = current.ref
                    self._served = model
                return self._served

    return BlockingStore


def serve(system: str, root: Path, port: int) -> None:
    """The child process: `papersim web --model champion` as app.serve builds it, the store chosen by `system`."""
    import uvicorn

    from papersim.lifecycle.retrain import retrain_config
    from papersim.web.app import MAX_REQUEST_LINE, create_app, served_model
    from papersim.web.models import ModelStore, Registry

    os.chdir(root)
    cfg = retrain_config(Path("params.yaml"))
    registry = Registry(cfg.model_name, Path("."), ttl_s=TTL_S)
    store_type = blocking_store_type() if system == "blocking" else ModelStore
    store = store_type(served_model("champion", Path("artifacts/index"), registry, Path(".")), registry,
                       Path("artifacts/index"))
    uvicorn.run(create_app(store, cfg), host="127.0.0.1", port=port, log_level="warning",
                h11_max_incomplete_event_size=MAX_REQUEST_LINE)


def second_version(root: Path, env: dict[str, str]) -> None:
    """Register the workspace's index once more (v2), and download both versions into the registry cache
    before timing, so that a swap times the load alone."""
    script = ("from pathlib import Path; from papersim.lifecycle import registry, tracking\n"
              "from papersim.lifecycle.versions import REGISTRY_CACHE\n"
              "if len(tracking.model_versions('papersim')) < 2:\n"
              "    with tracking.flow_run('benchmark', {}, {}) as run: pass\n"
              "    tracking.register_search_model(run.run_id, 'papersim', {'encoder': Path('models/encoder'), "
              "'index': Path('artifacts/index')}, {'papersim.gate': 'challenger', 'papersim.gate_reason': "
              "'benchmark: the same index again'}, Path('cache/register2'))\n"
              "for v in ('1', '2'): registry.resolve('papersim', v, Path(REGISTRY_CACHE))\n")
    (root / "cache/register2").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", script], cwd=root, env=env, check=True)


def set_champion(version: str) -> None:
    """The promotion, from this process (the workspace's registry: MLFLOW_TRACKING_URI set by main)."""
    from papersim.lifecycle import tracking

    tracking.set_alias("papersim", "champion", version)


def measure(system: str, root: Path, env: dict[str, str], titles: list[str], args, span: float = 0.0) -> dict:
    """One fresh server of `system`: clients for --before s, the move, until v2 answers (no swap: `span` s),
    then --after s."""
    set_champion("1")
    port, log = free_port(), (REPO / f"benchmarks/.work/web_swap_{system}.log").open("w")
    server = subprocess.Popen([sys.executable, __file__, "--serve", system, "--port", str(port), "--workdir",
                               str(root)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pages: list[tuple[float, float, str]] = []  # (started, seconds, version that answered)
    stop = threading.Event()

    def client(seed: int) -> None:
        rng, conn = random.Random(seed), http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while not stop.is_set():
            url = "/?" + urlencode({"q": rng.choice(titles), "k": 10, "mode": "served"})
            start = time.perf_counter()
            conn.request("GET", url, headers={"Accept": "text/html"})
            answer = conn.getresponse()
            body = answer.read()
            seconds = time.perf_counter() - start
            assert answer.status == 200, (answer.status, body[:300])
            pages.append((start, seconds, SERVED.search(body).group(1).decode()))

    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{Path(log.name).read_text()[-3000:]}")
            time.sleep(0.3)
        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(args.warmup + args.before)
        if system != "none":
            set_champion("2")
        moved = time.perf_counter()  # the alias has moved: the swap's time starts
        time.sleep(span)
        deadline = time.monotonic() + 300
        while system != "none" and not any(v == "2" for _, _, v in list(pages)):
            if time.monotonic() > deadline:
                raise SystemExit(f"{system}: v2 never answered")
            time.sleep(0.05)
        swapped = min((s + t for s, t, v in list(pages) if v == "2"), default=None)
        time.sleep(args.after)
        stop.set()
        for t in threads:
            t.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    return {"moved": moved, "swapped": swapped, "pages": pages}


def window(run: dict, span: float) -> tuple[float, list[tuple[float, str]]]:
    """The swap's length and the pages started within it, from the move to the first page answered by v2
    (no swap: `span` s): (seconds, version that answered)."""
    end = run["swapped"] if run["swapped"] is not None else run["moved"] + span
    return end - run["moved"], [(t, v) for s, t, v in run["pages"] if run["moved"] <= s < end]


def summary(seconds: float, pages: list[tuple[float, str]]) -> dict:
    ms = np.array([t for t, _ in pages]) * 1000
    return {"swap s": seconds, "pages": len(ms), "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "pages > 250 ms": int((ms > 250).sum()),
            "answered by v1": sum(v == "1" for _, v in pages)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=50_000, help="synthetic corpus size (built once, reused)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2, help="rounds of the three systems, in turn")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of pages not counted")
    parser.add_argument("--before", type=float, default=1.0, help="seconds of pages before the move")
    parser.add_argument("--after", type=float, default=1.0, help="seconds of pages after v2 answers")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks/.work/web_swap")
    parser.add_argument("--serve", choices=sorted(SYSTEMS), help=argparse.SUPPRESS)  # the child server
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.workdir, args.port)
        return
    print("command: .venv/bin/python benchmarks/web_swap.py " + " ".join(sys.argv[1:]), flush=True)
    root = synthetic_workspace(args.workdir / f"{args.papers}", args.papers)
    env = env_for(root)
    second_version(root, env)
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]  # set_champion's registry
    titles = [t for t in pd.read_parquet(root / "data/processed/papers.parquet", columns=["title"])["title"] if t]
    print(f"{args.papers:,} synthetic papers (HNSW32, tiny encoder), {args.clients} clients, {os.cpu_count()} "
          f"cores, load average {os.getloadavg()[0]:.1f} before", flush=True)
    rows, pooled = [], {system: (0.0, []) for system in SYSTEMS}
    for i in range(args.runs):
        runs = {system: measure(system, root, env, titles, args) for system in ("background", "blocking")}
        span = float(np.mean([r["swapped"] - r["moved"] for r in runs.values()]))  # no swap: the same span
        runs["none"] = measure("none", root, env, titles, args, span)
        for system in SYSTEMS:
            seconds, pages = window(runs[system], span)
            pooled[system] = (pooled[system][0] + seconds / args.runs, pooled[system][1] + pages)
            rows.append((str(i + 1), system, summary(seconds, pages)))
            print(f"  run {i + 1} {system}: {rows[-1][2]}", flush=True)
    rows += [(f"all {args.runs}", system, summary(*pooled[system])) for system in SYSTEMS]  # swap s: the mean
    print(f"load average {os.getloadavg()[0]:.1f} after")
    columns = ["swap s", "pages", "p50", "p99", "max", "pages > 250 ms", "answered by v1"]
    with record("web_swap"):
        print("\n| run | system | " + " | ".join(columns) + " |\n|---:|---|" + "---:|" * len(columns))
        for run, system, row in rows:
            cells = [f"{row[c]:.1f}" if isinstance(row[c], float) else f"{row[c]:,}" for c in columns]
            print(f"| {run} | {SYSTEMS[system]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

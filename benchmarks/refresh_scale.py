"""A refresh of a 100k-paper index against a full build of it: the build_index stage, side by side.

    .venv/bin/python benchmarks/refresh_scale.py [--papers 100000] [--new 1000 100]

The build_index stage (`python -m stages.build_index`, the command dvc.yaml runs and a refresh runs) with
the shipped params and the served system of the main command (the packaged all-MiniLM-L6-v2 for search at
128 tokens; papers answered from their own index at 256 tokens; BM25 of the whole corpus), over
pipeline_scale's synthetic papers (real sentences of the bundled sample, 60 to a listing page):
  1. full build: `--papers` papers, an empty embedding cache, no previous index (what a retrain's
     build_index, or a first build, pays);
  2. refresh: the same index plus each `--new` count of new papers (other papers each time), its previous
     index the full build's
     and the embedding cache the full build filled (what flows.refresh runs: only new papers encoded).
Each is one process, timed from start to exit (Python start and model loading included); the stage's
own report (build_index.json) splits encoding from indexing.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from papersim.env import apply_offline_defaults  # noqa: E402
from record import record  # noqa: E402

FUSION = {"method": "convex", "alpha": 0.5, "normalisation": "zscore", "rrf_k": 60, "depth": 100}


def build(work: Path, papers: Path, out: Path, env: dict) -> tuple[float, dict]:
    from papersim.encoders.encode import model_folder

    report = work / f"report-{out.name}-{papers.stem}.json"
    cmd = [sys.executable, "-m", "stages.build_index", "--params", str(REPO / "params.yaml"), "--papers", str(papers),
           "--pairs", str(work / "no-pairs"), "--model", str(model_folder("")), "--serving", str(work / "serving.json"),
           "--embedding-cache", str(work / "cache"), "--out", str(out), "--report", str(report)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"build_index failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    from papersim.stage import timings_path

    timings = json.loads(timings_path(report).read_text(encoding="utf-8"))  # encode/index seconds: not in the report
    return wall, {**json.loads(report.read_text(encoding="utf-8")), **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=100_000)
    parser.add_argument("--new", type=int, nargs="+", default=[1000, 100])
    parser.add_argument("--work", type=Path, default=None, help="keep the work here (default: a temporary folder)")
    args = parser.parse_args()
    apply_offline_defaults()
    print("command: .venv/bin/python benchmarks/refresh_scale.py " + " ".join(sys.argv[1:]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
               "PAPERSIM_EXPERIMENT": "benchmark-refresh-scale", "PYTHONUNBUFFERED": "1"}
        env.pop("PAPERSIM_PARENT_RUN_ID", None)
        (work / "serving.json").write_text(json.dumps({
            "encoder": "base", "base_model": "", "reason": "benchmark: the main command's served system",
            "fusion": FUSION, "similar": {"encoder": "base", "terms": 25, "lexical": "paper",
                                         "view": {"tokens": 256, "windows": 1}, "fusion": FUSION}}))
        from similar_cost import corpus  # pipeline_scale's papers as a papers.parquet frame

        papers = corpus(args.papers + sum(args.new), work)
        papers.head(args.papers).to_parquet(work / "papers_full.parquet", index=False)
        full_s, full = build(work, work / "papers_full.parquet", work / "index_full", env)
        print(f"full build: {full_s:.0f} s ({full['mode']}, encoded {full['papers_encoded']})", flush=True)
        rows = []
        start = args.papers
        for new in args.new:  # each refresh its own new papers (none of them in the cache)
            pd.concat([papers.head(args.papers), papers.iloc[start:start + new]]).to_parquet(
                work / f"papers_{new}.parquet", index=False)
            start += new
            out = work / f"index_{new}"
            shutil.copytree(work / "index_full", out)  # the champion's index, as flows.refresh copies it
            wall, info = build(work, work / f"papers_{new}.parquet", out, env)
            rows.append((new, wall, info))
            print(f"refresh +{new}: {wall:.0f} s ({info['mode']}, encoded {info['papers_encoded']})", flush=True)
    with record("refresh_scale"):
        print(f"\n| build_index over {args.papers:,} papers | wall s | papers encoded (both indexes) | search index: "
              "encode s | search index: build s | ratio to the full build |")
        print("|---|---:|---:|---:|---:|---:|")
        print(f"| full build (empty cache, no previous index: the baseline) | {full_s:.0f} | "
              f"{full['papers_encoded']:,} | {full['encode_seconds']:.0f} | {full['index_seconds']:.0f} | 1.000 |")
        for new, wall, info in rows:
            print(f"| **refresh: +{new:,} new papers** ({info['mode']}) | **{wall:.0f}** | "
                  f"{info['papers_encoded']:,} | {info['encode_seconds']:.0f} | {info['index_seconds']:.0f} | "
                  f"**{wall / full_s:.3f}** |")


if __name__ == "__main__":
    main()

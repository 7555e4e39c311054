"""Ingest throughput and peak memory on a synthetic corpus, side by side with plain pandas.

    .venv/bin/python benchmarks/ingest_scale.py [--papers 1000000] [--workdir benchmarks/.work]

Generates a JSONL corpus with realistic lengths (titles ~80 chars, abstracts ~1,100 +- 450
chars like the bundled arXiv sample, 1-3 categories; 1% of the rows repeat an earlier paper in
another category, as cross-listed papers do, so the merge pass runs too), then runs, each in its
own process:
  - papersim: the ingest stage (`python -m stages.ingest`: read, normalise, validate with
    Great Expectations, de-duplicate, write Parquet, log to MLflow);
  - baseline: `pandas.read_json(lines=True)` + `DataFrame.to_parquet` of the same file.
Prints papers/s and peak RSS (the child's own maximum resident set, from wait4) for both.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml
from record import record

REPO = Path(__file__).resolve().parents[1]
WORDS = ("neural network model learning training data graph attention representation embedding "
         "contrastive siamese retrieval similarity transformer loss gradient optimisation sparse dense "
         "benchmark dataset evaluation robust efficient scalable latent variational bayesian kernel "
         "convolutional recurrent reinforcement policy reward agent image text speech language vision "
         "we propose show results state-of-the-art method approach novel framework experiments the of and "
         "in for with on to a is that by this our are from as which $\\ell_1$ $O(n \\log n)$").split()
DUPLICATE_EVERY = 100  # every 100th row repeats the paper before it
CATEGORIES = ["cs.LG", "cs.CV", "stat.ML", "cs.AI", "cs.CL", "eess.IV", "cs.IR", "math.OC"]

BASELINE = """
import sys, pandas as pd
df = pd.read_json(sys.argv[1], lines=True)
df.to_parquet(sys.argv[2])
print(len(df))
"""


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    pool = " ".join(rng.choice(WORDS) for _ in range(2_000_000))  # ~14 MB of text to slice from
    with path.open("w", encoding="utf-8") as f:
        row: dict = {}
        for i in range(n):
            if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:  # the previous paper, cross-listed
                f.write(json.dumps({**row, "categories": [rng.choice(CATEGORIES)]}) + "\n")
                continue
            t0 = rng.randrange(len(pool) - 200)
            a_len = max(200, min(4000, int(rng.gauss(1100, 450))))
            a0 = rng.randrange(len(pool) - a_len)
            row = {
                "id": f"synth-{i:08d}",
                "title": f"{pool[t0:t0 + rng.randint(40, 120)].strip()} ({i})",
                "abstract": f"Paper {i}: {pool[a0:a0 + a_len]}",
                "categories": rng.sample(CATEGORIES, rng.randint(1, 3)),
            }
            f.write(json.dumps(row) + "\n")


def measure(cmd: list[str], cwd: Path, env: dict) -> tuple[float, int, str]:
    """Wall seconds, peak RSS bytes of the child process, and its stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return seconds, usage.ru_maxrss * 1024, out.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / ".work")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpus for the next run")
    args = parser.parse_args()

    work = args.workdir.resolve()
    (work / "data").mkdir(parents=True, exist_ok=True)
    corpus = work / "data" / f"synthetic_{args.papers}_dup{DUPLICATE_EVERY}.jsonl"
    if not corpus.exists():
        t = time.perf_counter()
        generate(corpus, args.papers)
        print(f"generated {corpus.name}: {corpus.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t:.0f} s")
    params = {"ingest": {"sources": [{"path": str(corpus), "name": "synthetic", "columns": {"groups": "categories"}}],
                         "on_invalid": "fail"}}
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "PYTHONPATH": str(REPO), "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
           "MLFLOW_DISABLE_TELEMETRY": "true"}

    ours = measure([sys.executable, "-m", "stages.ingest", "--params", str(work / "params.yaml"),
                    "--papers", str(work / "papers.parquet"), "--rejected", str(work / "rejected.parquet"),
                    "--report", str(work / "ingest.json")], work, env)
    base = measure([sys.executable, "-c", BASELINE, str(corpus), str(work / "pandas.parquet")], work, env)
    report = json.loads((work / "ingest.json").read_text())
    expected = args.papers - args.papers // DUPLICATE_EVERY
    assert report["rows_written"] == expected, f"papersim wrote {report['rows_written']} rows, expected {expected}"
    assert report["duplicates_merged"] == args.papers // DUPLICATE_EVERY

    rows = [("papersim ingest (validated)", *ours[:2]), ("pandas read_json + to_parquet", *base[:2])]
    size = corpus.stat().st_size / 2**20
    with record("ingest_scale"):
        print(f"\ningest of {args.papers:,} rows, {size:,.0f} MiB JSONL "
              f"({report['duplicates_merged']:,} cross-listed repeats merged), {os.cpu_count()} cores\n")
        print(f"| {'system':<30} | {'seconds':>8} | {'rows/s':>9} | {'peak RSS MiB':>12} |")
        print(f"|{'-' * 32}|{'-' * 10}|{'-' * 11}|{'-' * 14}|")
        for name, seconds, rss in rows:
            print(f"| {name:<30} | {seconds:>8.1f} | {args.papers / seconds:>9,.0f} | {rss / 2**20:>12,.0f} |")
        print(f"\nthroughput ratio papersim/pandas: {base[0] / ours[0]:.2f}x (goal >= 1.0); "
              f"papersim peak RSS {ours[1] / 2**30:.2f} GiB (goal <= 2 GiB)")
    if not args.keep:
        corpus.unlink()


if __name__ == "__main__":
    main()

"""The five stages through `dvc repro` on synthetic corpora of growing size: seconds, peak RSS and
the growth exponent per stage (how a stage's time grows with the corpus, between sizes).

    .venv/bin/python benchmarks/pipeline_scale.py [--papers 10000 100000] [--workdir benchmarks/.work]

Corpus: abstracts of 4-9 sentences resampled from the bundled arXiv sample's sentences (realistic
lengths and vocabulary), titles of 6-12 words from the same vocabulary, 1-2 of 40 categories and
one listing page of ~60 papers each (so co-listing pairs exist). Each size runs in a fresh git + DVC
repository with the shipped params.yaml, except a tiny randomly initialised 32-dim encoder (the
packaged tokenizer) everywhere a model is used, so that papersim's own work is timed, not a
transformer's. Cranfield stays the judged set. Each stage runs as `dvc repro <stage>` in its own
process; peak RSS is the largest descendant's (wait4's ru_maxrss of RUSAGE_CHILDREN).
The growth exponent between sizes a < b is log(t_b / t_a) / log(b / a): 1 is linear.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from papersim.encoders.load import save_tiny_encoder
from record import record

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "mine_pairs", "train", "evaluate", "build_index")
MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - start
if proc.returncode:
    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
    sys.exit(proc.returncode)
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def write_corpus(path: Path, n: int, seed: int = 0) -> None:
    """n synthetic papers as arXiv-style JSONL (id, title, abstract, categories)."""
    rng = random.Random(seed)
    sample = REPO / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl"
    abstracts = [json.loads(line)["abstract"] for line in sample.read_text(encoding="utf-8").splitlines() if line]
    sentences = [s for a in abstracts for s in re.split(r"(?<=[.!?])\s+", a) if len(s) > 30]
    words = sorted({w for s in sentences for w in s.split() if w.isalpha() and len(w) > 3})
    categories = [f"cat.{c}" for c in range(40)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            row = {"id": f"syn{i}", "title": " ".join(rng.choices(words, k=rng.randint(6, 12))).capitalize(),
                   "abstract": " ".join(rng.choices(sentences, k=rng.randint(4, 9))),
                   "categories": rng.sample(categories, rng.randint(1, 2)) + [f"page.{i // 60}"]}
            out.write(json.dumps(row) + "\n")


def copy_project(root: Path, items: tuple[str, ...]) -> None:
    """The repository's files and folders `items` under `root` (without bytecode caches)."""
    for item in items:
        src, dst = REPO / item, root / item
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)


def make_repo(root: Path, n: int, model: Path) -> None:
    """The project's pipeline in a fresh git + DVC repository over an n-paper synthetic corpus."""
    copy_project(root, ("dvc.yaml", "params.yaml", "stages", "src/papersim", "data/raw/beir/cranfield"))
    write_corpus(root / "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl", n)
    (root / "data/raw/hf_pages").mkdir(parents=True)
    (root / "data/raw/hf_pages/README").write_text("no listing pages in this benchmark\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["sources"] = [{"path": "data/raw/arxiv/ml_kaggle_abstracts_sample.jsonl", "format": "jsonl",
                                    "name": "synthetic"}]
    params["mine_pairs"].update(model=str(model), backend="torch")
    params["train"].update(base_model=str(model), backend="torch")
    params["evaluate"].update(base_model=str(model), backend="torch")
    params["build_index"].update(backend="torch")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@example.com", "commit", "-qm",
                                       "benchmark"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True, env=env_for(root))


def env_for(root: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "HF_HUB_OFFLINE": "1",
            "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1",
            "GX_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}


def run_stages(root: Path) -> dict[str, tuple[float, int]]:
    """stage -> (seconds, peak RSS bytes), each `dvc repro <stage>` in a process of its own."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    out = {}
    for stage in STAGES:
        proc = subprocess.run([sys.executable, "-c", MEASURE, dvc, "repro", "--single-item", stage], cwd=root,
                              env=env_for(root), capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{stage} failed at {root}:\n{proc.stderr}")
        seconds, rss = proc.stdout.split()[-2:]
        out[stage] = (float(seconds), int(rss))
        print(f"  {stage:<12} {float(seconds):8.1f} s  {int(rss) / 2**30:5.2f} GiB", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks/.work/pipeline_scale")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    model = save_tiny_encoder(args.workdir / "tiny")
    results = {}
    for n in args.papers:
        print(f"{n:,} papers", flush=True)
        root = args.workdir / f"n{n}"
        make_repo(root, n, model)
        results[n] = run_stages(root)
        report = json.loads((root / "reports/ingest.json").read_text())
        print(f"  ({report['rows_written']:,} papers ingested)")
    sizes = sorted(results)
    with record("pipeline_scale"):
        print("\n| stage | " + " | ".join(f"{n:,}: s | peak RSS" for n in sizes) + " | "
              + " | ".join(f"growth {a:,}->{b:,}" for a, b in zip(sizes, sizes[1:])) + " |")
        print("|---|" + "---:|---:|" * len(sizes) + "---:|" * (len(sizes) - 1))
        for stage in (*STAGES, "total"):
            t = {n: sum(s for s, _ in results[n].values()) if stage == "total" else results[n][stage][0] for n in sizes}
            cells = [f"{t[n]:,.0f} | " + ("" if stage == "total" else f"{results[n][stage][1] / 2**30:.2f} GiB")
                     for n in sizes]
            growth = [f"{math.log(t[b] / t[a]) / math.log(b / a):.2f}" for a, b in zip(sizes, sizes[1:])]
            print(f"| {stage} | " + " | ".join(cells) + " | " + " | ".join(growth) + " |")


if __name__ == "__main__":
    main()

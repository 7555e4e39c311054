"""Index update after adding 1% new papers vs a full rebuild, side by side.

    .venv/bin/python benchmarks/incremental.py [--papers 2572] [--new-fraction 0.01]

Corpus: the bundled papers (data/processed/papers.parquet from `dvc repro ingest`), the packaged
all-MiniLM-L6-v2 on build_index's default backend. Steps, each timed around
`papersim.index.build_index` exactly as the stage calls it (encoder loaded once beforehand):
  1. index the first 99% of the papers (warms the embedding cache, as a previous run would);
  2. incremental: the whole corpus with step 1's index as the previous build (encodes 1%, adds 1%);
  3. full rebuild: the whole corpus with an empty cache and no previous index (encodes 100%).
Both 2 and 3 include measuring recall@10 and queries/s, as the stage does.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.encoders.cache import encode_cached  # noqa: E402
from papersim.encoders.encode import load_text_encoder  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.retrieval.index import BuildIndexConfig, build_index  # noqa: E402
from record import record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, default=0, help="0 = all bundled papers")
    parser.add_argument("--new-fraction", type=float, default=0.01)
    args = parser.parse_args()
    apply_offline_defaults()
    print("command: .venv/bin/python benchmarks/incremental.py " + " ".join(sys.argv[1:]))
    papers = pd.read_parquet(REPO / "data/processed/papers.parquet")
    papers = papers.head(args.papers) if args.papers else papers
    n_old = round(len(papers) * (1 - args.new_fraction))
    cfg = BuildIndexConfig()
    encoder = load_text_encoder("", cfg.backend, cfg.max_seq_length, cfg.batch_size)
    queries = encoder.encode(papers["title"].head(cfg.recall_queries).to_list())
    with tempfile.TemporaryDirectory() as tmp:
        warm, cold = Path(tmp) / "warm", Path(tmp) / "cold"
        previous = build_index(papers.head(n_old), lambda t: encode_cached(encoder, t, warm).vectors, queries, cfg,
                               encoder.key)
        start = time.perf_counter()
        inc = build_index(papers, lambda t: encode_cached(encoder, t, warm).vectors, queries, cfg, encoder.key,
                          previous=previous)
        inc_s = time.perf_counter() - start
        start = time.perf_counter()
        full = build_index(papers, lambda t: encode_cached(encoder, t, cold).vectors, queries, cfg, encoder.key)
        full_s = time.perf_counter() - start
    assert inc.info["mode"] == "incremental" and full.info["mode"] == "full"
    with record("incremental"):
        print(f"\n{len(papers)} papers, {len(papers) - n_old} new ({args.new_fraction:.0%}), "
              f"index {full.info['factory']}, encoder {encoder.backend}\n")
        print("| build | seconds | papers encoded | ratio to full |")
        print("|---|---:|---:|---:|")
        print(f"| full rebuild (empty cache) | {full_s:.2f} | {len(papers)} | 100.0% |")
        print(f"| incremental (previous index + cache) | {inc_s:.2f} | {inc.info['papers_added']} | "
              f"{inc_s / full_s:.1%} |")
    print(json.dumps({"ratio": inc_s / full_s}))


if __name__ == "__main__":
    main()

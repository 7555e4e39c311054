"""Building a BM25 index over many papers: papersim's chunked build vs bm25s' own, seconds and peak RSS.

    .venv/bin/python benchmarks/bm25_build.py [--papers 200000 1000000]

Passages (title + abstract) of a synthetic corpus (abstracts resampled from the bundled arXiv
sentences, as benchmarks/pipeline_scale.py), English stopwords and Snowball stemming, as
build_index. Each build runs in its own process; peak RSS is that process's maximum resident set
minus what it held before the build (the passages and the libraries, the same for both):
  - baseline: `bm25s.tokenize` + `bm25s.BM25().index` (the library's documented usage);
  - papersim: `papersim.retrieval.lexical.BM25` (bm25s' Tokenizer a chunk at a time into flat
    arrays, the Lucene score matrix built with array operations through bm25s' build override).
Both indexes are then asked the same 200 titles and their scores compared (max absolute difference).
"""

import argparse
import subprocess
import sys
from pathlib import Path

from pipeline_scale import write_corpus  # the same synthetic corpus (benchmarks/ is this script's path)
from record import record

REPO = Path(__file__).resolve().parents[1]

BUILD = """
import json, resource, sys, time
import numpy as np
import bm25s
from papersim.retrieval.lexical import BM25, _stemmer
texts = [(row["title"], row["abstract"]) for row in map(json.loads, open(sys.argv[2], encoding="utf-8"))]
passages = [f"{t}. {a}" for t, a in texts]
queries = bm25s.tokenize([t for t, _ in texts[:200]], stopwords="en", stemmer=_stemmer("english"),
                         return_ids=False, show_progress=False)
before = int(open("/proc/self/statm").read().split()[1]) * 4096  # the passages and libraries, before building
start = time.perf_counter()
if sys.argv[1] == "bm25s":
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passages, stopwords="en", stemmer=_stemmer("english"), show_progress=False),
                    show_progress=False)
else:
    retriever = BM25([str(i) for i in range(len(passages))], passages, "english").retriever
seconds = time.perf_counter() - start
np.save(sys.argv[3], np.stack([retriever.get_scores(q) for q in queries]))
print(seconds, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def build(kind: str, corpus: Path, scores: Path) -> tuple[float, int]:
    """(seconds, bytes the build added to the process's peak beyond what it held before building)."""
    proc = subprocess.run([sys.executable, "-c", BUILD, kind, str(corpus), str(scores)], capture_output=True,
                          text=True, check=True)
    seconds, before, peak = proc.stdout.split()[-3:]
    return float(seconds), int(peak) - int(before)


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, nargs="+", default=[200_000])
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks/.work/bm25_build")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print("command: .venv/bin/python benchmarks/bm25_build.py --papers " + " ".join(map(str, args.papers)))
    with record("bm25_build"):
        print("\n| papers | build | seconds | peak RSS added by the build | vs bm25s: time | vs bm25s: memory "
              "| max score difference |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        for n in args.papers:
            corpus = args.workdir / f"corpus{n}.jsonl"
            write_corpus(corpus, n)
            base_s, base_rss = build("bm25s", corpus, args.workdir / "bm25s.npy")
            ours_s, ours_rss = build("papersim", corpus, args.workdir / "papersim.npy")
            diff = float(np.abs(np.load(args.workdir / "bm25s.npy") - np.load(args.workdir / "papersim.npy")).max())
            print(f"| {n:,} | bm25s (baseline) | {base_s:.1f} | {base_rss / 2**30:.2f} GiB | 1.00x | 1.00x | - |")
            print(f"| {n:,} | papersim | {ours_s:.1f} | {ours_rss / 2**30:.2f} GiB | {base_s / ours_s:.2f}x faster | "
                  f"{ours_rss / base_rss:.2f}x | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()

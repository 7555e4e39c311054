"""The cost of one "papers similar to this one" answer against one dense search and one text query.

    .venv/bin/python benchmarks/similar_cost.py [--papers 2500 100000] [--calls 300]

For each corpus size: pipeline_scale's synthetic papers (real sentences of the bundled arXiv sample,
60 to a listing page), their BM25 index as build_index makes it, and 384-dimensional vectors (a
page's centre plus noise, L2-normalised: structured like real embeddings, so HNSW has real
neighbours) in the index kind `auto` picks (Flat at 2.5k, HNSW32 at 100k, search effort tuned to
recall@10 0.95 as build_index does). Timed per call, in the same process, alternating, after a
warm-up:
  - dense search: one faiss search of a stored vector, k 10 (the baseline);
  - dense similar: what `papersim similar` answered before (the paper's stored vector, itself left out);
  - text query: `search_text` as served (the packaged all-MiniLM-L6-v2 on OpenVINO encodes the
    title, then faiss, BM25 and the fusion);
  - similar, served: `similar_papers` (stored vector at depth 100, BM25 with the whole paper as the
    query, the convex fusion, duplicates left out: the served default);
  - similar, more-like-this: the same with 50 telling terms as the BM25 query (the former default).
The vectors do not come from the encoder, so the answers mean nothing; the costs are the real ones.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from papersim.env import apply_offline_defaults  # noqa: E402
from record import record  # noqa: E402


def corpus(n: int, folder: Path) -> pd.DataFrame:
    from pipeline_scale import write_corpus

    path = folder / f"papers_{n}.jsonl"
    write_corpus(path, n)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return pd.DataFrame({"paper_id": [r["id"] for r in rows], "title": [r["title"] for r in rows],
                         "abstract": [r["abstract"] for r in rows], "source": "synthetic",
                         "groups": [r["categories"] for r in rows],
                         "content_hash": [f"{i:032x}" for i in range(len(rows))]})


def vectors(papers: pd.DataFrame, dim: int = 384, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pages = np.array([int(g[-1].split(".")[1]) for g in papers["groups"]])
    centres = rng.normal(size=(pages.max() + 1, dim)).astype(np.float32)
    out = centres[pages] + 0.8 * rng.normal(size=(len(papers), dim)).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def build(papers: pd.DataFrame, lexical: str = "paper"):
    from papersim.retrieval import ann
    from papersim.retrieval.fusion import Fusion
    from papersim.retrieval.index import bm25_index, paper_details
    from papersim.retrieval.search import SearchIndex
    from papersim.retrieval.similar import Similar

    vecs = vectors(papers)
    factory = ann.auto_factory(len(vecs), vecs.shape[1], flat_max=50_000, hnsw_max=2_000_000, hnsw_m=32, pq_m=48)
    index = ann.create_index(factory, vecs.shape[1])
    ann.add_vectors(index, vecs)
    queries = vecs[np.random.default_rng(1).choice(len(vecs), 200, replace=False)]
    effort, recall = ann.tune_search_effort(index, queries, ann.exact_neighbours(vecs, queries, 10),
                                            target_recall=0.95, k=10)
    ids = papers[["paper_id", "title", "content_hash"]]
    similar = Similar("trained", Fusion(method="convex", alpha=0.5, depth=100), terms=50, lexical=lexical)
    info = {"similar": similar.to_dict(),
            "serving": {"encoder": "trained", "fusion": Fusion(alpha=0.5).to_dict()}}
    si = SearchIndex(index=index, ids=ids, info=info, bm25=bm25_index(papers, ids, "english"),
                     papers=paper_details(papers, ids), similar_index=index)
    return si, factory, effort, recall


def with_lexical(si, lexical: str):
    """The same index answering "similar" with another lexical query."""
    from dataclasses import replace

    return replace(si, info={**si.info, "similar": {**si.info["similar"], "lexical": lexical}})


def timed(fn, args: list, warm: int = 20) -> np.ndarray:
    for a in args[:warm]:
        fn(a)
    out = []
    for a in args:
        start = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - start)
    return np.array(out) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, nargs="+", default=[2500, 100_000])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    apply_offline_defaults()
    from papersim.encoders.encode import load_text_encoder
    from papersim.retrieval.ann import reconstruct_rows
    from papersim.retrieval.search import _dense, search_text, similar_papers

    encoder = load_text_encoder("", "auto", 128, 32)
    with record("similar_cost"):
        print("| papers | index | dense search ms (p50 / p95) | dense similar (before) | text query, served | "
              "**similar, served** | similar, more-like-this 50 | similar / dense search | similar / text query |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.papers:
                papers = corpus(n, Path(tmp))
                si, factory, effort, recall = build(papers)
                si.embed = encoder.encode
                mlt = with_lexical(si, "mlt")
                rng = np.random.default_rng(2)
                rows = rng.choice(len(papers), args.calls, replace=False).tolist()
                pids = [papers["paper_id"].iat[r] for r in rows]
                titles = [papers["title"].iat[r] for r in rows]
                stored = {r: reconstruct_rows(si.index, [r]) for r in rows}
                results = {
                    "dense": timed(lambda r: si.index.search(stored[r], 10), rows),
                    "dense_similar": timed(lambda r: _dense(si, stored[r][0], 10, skip_row=r), rows),
                    "text": timed(lambda t: search_text(si, t, 10, "served"), titles),
                    "similar": timed(lambda p: similar_papers(si, p, 10), pids),
                    "mlt": timed(lambda p: similar_papers(mlt, p, 10), pids),
                }
                p50 = {k: float(np.median(v)) for k, v in results.items()}
                p95 = {k: float(np.percentile(v, 95)) for k, v in results.items()}
                cells = " | ".join(f"{p50[k]:.2f} / {p95[k]:.2f}"
                                   for k in ("dense", "dense_similar", "text", "similar", "mlt"))
                print(f"| {n:,} | {factory} (effort {effort}, recall@10 {recall:.3f}) | {cells} | "
                      f"{p50['similar'] / p50['dense']:.1f}x | {p50['similar'] / p50['text']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

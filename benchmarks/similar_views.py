""""Papers similar to this one" on listings training never saw: which paper vectors, which lexical query, which fusion.

    .venv/bin/python benchmarks/similar_views.py [--encoders base= trained=models/encoder] [--time-papers 400]

Run after the main command (it reads data/processed/papers.parquet, data/pairs/split.parquet and the trained
model). The papers of mine_pairs' held-out listings ask for each other over the corpus they would search:
`val` (validation listings, what the train stage chooses on; the non-test papers) and `test` (test listings,
the whole corpus, evaluate's `similar_unseen`). Scored by precision@10 (share of listing-mates in the top 10)
with 95% intervals that resample listings. Rows:
  - dense: each encoder with the paper read at 128 or 256 tokens, or in windows of 128/256 tokens mean-pooled;
  - lexical: BM25 with the whole paper as the query, and more-like-this at 25/50/100/all telling terms;
  - fused: convex z-score 0.5 and RRF (k 60) of each lexical query with each dense view.
Then the cost of each view: papers/s encoding a sample of papers, no cache, the packaged base model on this
machine's backend, measured in the same run (the 128-token view is the baseline).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.data.papers import read_papers  # noqa: E402
from papersim.encoders.cache import cached_embedder  # noqa: E402
from papersim.encoders.encode import load_text_encoder, model_folder  # noqa: E402
from papersim.encoders.windows import PaperView, windowed_embed  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.evaluation.metrics import precision_at_k  # noqa: E402
from papersim.evaluation.sets import listing_clusters, listing_sets  # noqa: E402
from papersim.evaluation.significance import clustered_difference  # noqa: E402
from papersim.retrieval.dense import dense_search  # noqa: E402
from papersim.retrieval.fusion import Fusion  # noqa: E402
from papersim.retrieval.lexical import BM25  # noqa: E402
from papersim.retrieval.similar import (drop_rows, duplicates, excluded_rows, lexical_neighbours,  # noqa: E402
                                        paper_neighbours, similar_hits)
from record import record  # noqa: E402

VIEWS = {"128": PaperView(128, 1), "256": PaperView(256, 1), "128x4": PaperView(128, 4), "256x3": PaperView(256, 3)}
LEXICAL = {"paper": None, "mlt25": 25, "mlt50": 50, "mlt100": 100, "mlt-all": 0}
WORK = REPO / "benchmarks/.work/views"


def tasks() -> dict:
    papers = read_papers(REPO / "data/processed/papers.parquet")
    split = pd.read_parquet(REPO / "data/pairs/split.parquet")
    test = set(split.loc[split["split"] == "test", "paper_id"])
    val = listing_sets(papers, split, "val", 100, set(papers["paper_id"]) - test, prefix="v")["v_unseen"]
    held = listing_sets(papers, split, "test", 100, set(papers["paper_id"]), prefix="t")["t_unseen"]
    return {"val": val, "test": held}


def precision(hits, task) -> np.ndarray:
    return np.array([precision_at_k([task.doc_ids[r] for r in h[0]], task.qrels[q], 10)
                     for q, h in zip(task.query_ids, hits)])


def score_task(task, encoders: dict[str, str], views: dict = VIEWS, lexical: tuple = ("paper", "mlt100")
               ) -> dict[str, np.ndarray]:
    row_of = {pid: row for row, pid in enumerate(task.doc_ids)}
    rows = [row_of[q] for q in task.query_ids]
    exclude = excluded_rows(rows, duplicates(task.doc_hashes))
    bm25 = BM25(task.doc_ids, task.doc_texts, "english")
    fused_with = lexical
    lexical = {name: (paper_neighbours(bm25, task.query_texts, 100, exclude) if terms is None else
                      lexical_neighbours(bm25, task.query_texts, terms, 100, exclude))
               for name, terms in LEXICAL.items()}
    out = {f"bm25 {name}": precision(h, task) for name, h in lexical.items()}
    for enc, folder in encoders.items():
        for view_name, view in views.items():
            embed = windowed_embed(cached_embedder(folder, "auto", view.tokens, 32, WORK / "cache"),
                                   model_folder(folder), view)
            vectors = embed(task.doc_texts)  # (n_docs, dim)
            found, scores = dense_search(vectors, vectors[rows], 100 + max(map(len, exclude)))
            dense = [drop_rows((f.tolist(), s.tolist()), e, 100) for f, s, e in zip(found, scores, exclude)]
            out[f"{enc}@{view_name}"] = precision(dense, task)
            for lex in fused_with:
                for fusion in (Fusion("convex", 0.5, "zscore"), Fusion("rrf")):
                    label = "z0.5" if fusion.method == "convex" else "rrf"
                    out[f"{enc}@{view_name} + {lex} {label}"] = precision(similar_hits(lexical[lex], dense, fusion),
                                                                          task)
    return out


def encode_cost(papers: list[str]) -> list[tuple[str, float]]:
    rates = []
    for name, view in VIEWS.items():
        embed = windowed_embed(load_text_encoder("", "auto", view.tokens, 32).encode, model_folder(""), view)
        embed(papers[:32])  # warm-up: compile, first batch
        start = time.perf_counter()
        embed(papers)
        rates.append((name, len(papers) / (time.perf_counter() - start)))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", default=["base=", "trained=models/encoder"])
    parser.add_argument("--time-papers", type=int, default=400)
    args = parser.parse_args()
    apply_offline_defaults()
    encoders = dict(e.split("=", 1) for e in args.encoders)
    encoders = {k: (str(REPO / v) if v else "") for k, v in encoders.items()}
    results, sets = {}, tasks()
    for name, task in sets.items():
        print(f"{name}: {task.facts}", flush=True)
        results[name] = score_task(task, encoders)
    clusters = {name: listing_clusters(task, task.query_ids) for name, task in sets.items()}
    best = {name: max(("bm25 paper", "base@128"), key=lambda r: results[name][r].mean()) for name in sets}
    with record("similar_views"):
        print(f"\n| system | val P@10 | test P@10 | test - {best['test']} (95% CI by listing) |")
        print("|---|---|---|---|")
        for row in results["val"]:
            d = clustered_difference(results["test"][row], results["test"][best["test"]], clusters["test"])
            print(f"| {row} | {results['val'][row].mean():.3f} | {results['test'][row].mean():.3f} | "
                  f"{d.mean:+.3f} ({d.low:+.3f} to {d.high:+.3f}) |")
        papers = read_papers(REPO / "data/processed/papers.parquet")
        texts = (papers["title"] + ". " + papers["abstract"]).sample(args.time_papers, random_state=0).tolist()
        rates = encode_cost(texts)
        print(f"\n| paper view | papers/s (base, {args.time_papers} papers) | x the 128-token view's time |")
        print("|---|---|---|")
        for name, rate in rates:
            print(f"| {name} | {rate:.1f} | {rates[0][1] / rate:.2f} |")


if __name__ == "__main__":
    main()

"""What a filter and the why-words cost: filtered answers beside unfiltered ones, in the same run.

    .venv/bin/python benchmarks/filters.py [--papers 2500 100000] [--calls 200]

For each corpus size: similar_cost's synthetic papers (real sentences of the bundled arXiv sample, 60 to
a listing page, vectors structured like embeddings, the index kind `auto` picks: Flat at 2.5k, HNSW32 at
100k with its effort tuned to recall@10 0.95), each given a seeded random date between 2000 and 2025.
Timed per call, alternating, after a warm-up, k 10, the served fusion:
  - search: `search_text` (the packaged encoder on OpenVINO encodes the title; faiss; BM25; fusion) with no
    filter (the baseline), `since` keeping about half the papers, one listing page (`group`, 60 papers),
    and both;
  - similar: `similar_papers` with the same filters;
  - why: the part of an unfiltered answer spent finding the why-words (papersim.retrieval.explain), timed
    alone on the answers' rows.
The vectors do not come from the encoder, so the answers mean nothing; the costs are the real ones.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from papersim.env import apply_offline_defaults  # noqa: E402
from record import record  # noqa: E402
from similar_cost import build, corpus, timed  # noqa: E402


def interleaved(answer, requests: list, filters: list, warm: int = 20) -> list[np.ndarray]:
    """ms per call for each filter, the filters taking turns on every request (noise hits them alike)."""
    for request in requests[:warm]:
        for flt in filters:
            answer(request, flt)
    out = [[] for _ in filters]
    for request in requests:
        for i, flt in enumerate(filters):
            start = time.perf_counter()
            answer(request, flt)
            out[i].append(time.perf_counter() - start)
    return [np.array(t) * 1000 for t in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=int, nargs="+", default=[2500, 100_000])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    apply_offline_defaults()
    from papersim.encoders.encode import load_text_encoder
    from papersim.retrieval.explain import why
    from papersim.retrieval.filters import Filter
    from papersim.retrieval.passage import passage_text
    from papersim.retrieval.search import search_text, similar_papers

    encoder = load_text_encoder("", "auto", 128, 32)
    columns = ["no filter (baseline)", "since (~half)", "one page (60)", "since + page"]
    with record("filters"):
        print("| papers | index | task | " + " | ".join(f"{c} ms p50 / p95" for c in columns) +
              " | slowest filter / baseline | why-words ms p50 (share of the answer) |")
        print("|---:|---|---|" + "---:|" * (len(columns) + 2))
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.papers:
                papers = corpus(n, Path(tmp))
                days = np.random.default_rng(3).integers(0, 26 * 365, len(papers))
                papers["date"] = [str(np.datetime64("2000-01-01") + int(d)) for d in days]
                si, factory, effort, recall = build(papers)
                si.embed = encoder.encode
                rng = np.random.default_rng(2)
                rows = rng.choice(len(papers), args.calls, replace=False).tolist()
                pids = [papers["paper_id"].iat[r] for r in rows]
                titles = [papers["title"].iat[r] for r in rows]
                page = papers["groups"].iat[rows[0]][-1]
                filters = [Filter(), Filter(since="2013"), Filter(groups=(page,)), Filter(since="2013", groups=(page,))]
                for task, answer, requests in (("search", lambda q, f: search_text(si, q, 10, "served", f), titles),
                                               ("similar", lambda p, f: similar_papers(si, p, 10, f), pids)):
                    times = interleaved(answer, requests, filters)
                    p50 = [float(np.median(t)) for t in times]
                    cells = " | ".join(f"{np.median(t):.2f} / {np.percentile(t, 95):.2f}" for t in times)
                    answers = [answer(q, filters[0]) for q in requests]
                    texts = titles if task == "search" else \
                        [passage_text(papers["title"].iat[r], papers["abstract"].iat[r]) for r in rows]
                    found = [[si.row_of[p] for p in a["paper_id"]] for a in answers]
                    explain = timed(lambda i: why(si.bm25, texts[i], found[i]), list(range(len(requests))))
                    print(f"| {n:,} | {factory} (effort {effort}, recall@10 {recall:.3f}) | {task} | {cells} | "
                          f"{max(p50[1:]) / p50[0]:.2f}x | {np.median(explain):.2f} "
                          f"({np.median(explain) / p50[0]:.0%}) |", flush=True)


if __name__ == "__main__":
    main()

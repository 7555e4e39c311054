"""One request of many query rows: the registered model's batched answer vs answering row by row.

    .venv/bin/python benchmarks/serving_batch.py [--rows 1000] [--index artifacts/index]

Loads the index the pipeline built (and the encoder it serves) as the registered model does
(`SearchService`), then answers the same request of `--rows` text queries (held-out titles of the
bundled corpus, cycled; k 10, the served fusion) twice, alternating, best of 3 each:
  - baseline: row by row, `search_text` per query (one encoding and one search per row);
  - papersim: `SearchService.predict` on the whole request (one encoding batch, one faiss and one
    BM25 search for all rows).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.retrieval.search import search_text, served_encoder_folder  # noqa: E402
from papersim.retrieval.serving import SearchService  # noqa: E402
from record import record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--index", type=Path, default=REPO / "artifacts/index")
    args = parser.parse_args()
    apply_offline_defaults()
    print("command: .venv/bin/python benchmarks/serving_batch.py " + " ".join(sys.argv[1:]))
    titles = pd.read_parquet(REPO / "data/processed/papers.parquet")["title"]
    titles = titles[titles.str.strip() != ""].tolist()
    queries = [titles[i % len(titles)] for i in range(args.rows)]
    info = json.loads((args.index / "index.json").read_text(encoding="utf-8"))
    service = SearchService.load(Path(served_encoder_folder(info)), args.index)
    request = pd.DataFrame({"query": queries})
    best = {"row by row (baseline)": float("inf"), "batched request": float("inf")}
    for _ in range(3):
        start = time.perf_counter()
        rows = [search_text(service.index, q, 10, "served") for q in queries]
        best["row by row (baseline)"] = min(best["row by row (baseline)"], time.perf_counter() - start)
        start = time.perf_counter()
        batched = service.predict(request)
        best["batched request"] = min(best["batched request"], time.perf_counter() - start)
    same = all(batched[batched["request"] == i]["paper_id"].tolist() == rows[i]["paper_id"].tolist()
               for i in range(len(rows)))
    base = best["row by row (baseline)"]
    with record("serving_batch"):
        print(f"\n{args.rows} text rows, k 10, served fusion, {len(service.index.ids):,} papers\n")
        print("| answer | seconds | rows/s | speed-up |")
        print("|---|---:|---:|---:|")
        for name, seconds in best.items():
            print(f"| {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | {base / seconds:.1f}x |")
        print(f"\nsame papers in the same order for every row: {same}")


if __name__ == "__main__":
    main()

"""Corpus encoding: build_index's encoder vs plain `SentenceTransformer.encode`, side by side.

    .venv/bin/python benchmarks/encode.py [--docs 1000] [--backend openvino]

Both encode the same abstracts (the bundled corpus: data/processed/papers.parquet from
`dvc repro ingest`) with the packaged all-MiniLM-L6-v2 at 128 tokens, batch 32, in this one
process, one after the other, after a warm-up batch each:
  - baseline: `SentenceTransformer.encode(..., normalize_embeddings=True)` (torch, fp32 on a CPU);
  - papersim: `papersim.encoding.load_text_encoder(backend=...)`, what evaluate and build_index use.
Then both score the bundled Cranfield set (dense retrieval, nDCG@10) to show what the faster
backend costs in quality, and the cosine between the two backends' vectors.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.encoders.encode import load_text_encoder  # noqa: E402
from papersim.encoders.load import load_encoder  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from papersim.evaluation.metrics import score_rankings  # noqa: E402
from papersim.evaluation.sets import load_beir_set  # noqa: E402
from papersim.retrieval.dense import dense_rankings  # noqa: E402
from record import record  # noqa: E402


def timed(encode, texts: list[str]) -> tuple[np.ndarray, float]:
    encode(texts[:32])  # warm-up: first-call allocations and thread start-up
    start = time.perf_counter()
    vectors = encode(texts)
    return vectors, time.perf_counter() - start


def cranfield_ndcg(encode) -> float:
    s = load_beir_set(REPO / "data/raw/beir/cranfield")
    ranked = dense_rankings(s.doc_ids, encode(s.doc_texts), s.query_ids, encode(s.query_texts), 100)
    return score_rankings(ranked, s.qrels).metrics["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--backend", default="openvino")
    args = parser.parse_args()
    apply_offline_defaults()
    print("command: .venv/bin/python benchmarks/encode.py " + " ".join(sys.argv[1:]))
    texts = pd.read_parquet(REPO / "data/processed/papers.parquet")["abstract"].head(args.docs).to_list()

    model = load_encoder("", 128)
    plain = lambda t: model.encode(t, batch_size=32, normalize_embeddings=True, show_progress_bar=False)  # noqa: E731
    encoder = load_text_encoder("", args.backend, max_seq_length=128, batch_size=32)
    base_vectors, base_s = timed(plain, texts)
    ours_vectors, ours_s = timed(encoder.encode, texts)
    cosine = (base_vectors * ours_vectors).sum(axis=1)
    base_ndcg, ours_ndcg = cranfield_ndcg(plain), cranfield_ndcg(encoder.encode)

    with record("encode"):
        print(f"\n{len(texts)} abstracts, 128 tokens, batch 32\n")
        print("| encoder | seconds | docs/s | speed-up | Cranfield nDCG@10 (dense) |")
        print("|---|---:|---:|---:|---:|")
        print(f"| SentenceTransformer.encode (torch fp32) | {base_s:.1f} | {len(texts) / base_s:.1f} | 1.00x "
              f"| {base_ndcg:.4f} |")
        print(f"| papersim encoder ({encoder.backend}) | {ours_s:.1f} | {len(texts) / ours_s:.1f} "
              f"| {base_s / ours_s:.2f}x | {ours_ndcg:.4f} |")
        print(f"\ncosine(plain, papersim) per abstract: min {cosine.min():.5f}, mean {cosine.mean():.5f}; "
              f"nDCG@10 difference {ours_ndcg - base_ndcg:+.4f}")
    print(json.dumps({"speedup": base_s / ours_s, "ndcg_delta": ours_ndcg - base_ndcg}))


if __name__ == "__main__":
    main()

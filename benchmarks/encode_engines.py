"""Encoding engines side by side: this process (torch, OpenVINO) and a Ray actor pool.

    .venv/bin/python benchmarks/encode_engines.py [--docs 2000] [--actors 2]

The same abstracts (data/processed/papers.parquet from `dvc repro ingest`) with the packaged
all-MiniLM-L6-v2 at 128 tokens, batch 32:
  - baseline: `local` with the OpenVINO backend (what the stages use on a CPU), one process;
  - local torch, for reference;
  - `ray`: a local Ray instance (started here, 127.0.0.1, usage stats off) and `--actors` actors of
    1 CPU each holding the OpenVINO encoder.
Local OpenVINO and Ray each encode `--docs` and then 3 x `--docs` texts (the abstracts repeated,
each repeat made distinct): every Ray call starts its actors (a fixed cost), so the difference
between the two calls gives the throughput of a long encode past that start.
Prints docs/s, the ratio to the baseline and the minimum cosine of each engine's vectors to local
OpenVINO's. Ray is about spreading encoding over machines and GPUs; on one 2-core box it can at
best match local throughput.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from papersim.encoders.encode import load_text_encoder  # noqa: E402
from papersim.encoders.engine import EncodingEngine, with_engine  # noqa: E402
from papersim.env import apply_offline_defaults  # noqa: E402
from record import record  # noqa: E402


def timed(encode, texts: list[str]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    vectors = encode(texts)
    return vectors, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args()
    apply_offline_defaults()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    print("command: .venv/bin/python benchmarks/encode_engines.py " + " ".join(sys.argv[1:]))
    abstracts = pd.read_parquet(REPO / "data/processed/papers.parquet")["abstract"].to_list()
    texts = [abstracts[i % len(abstracts)] + ("" if i < len(abstracts) else f" ({i})") for i in range(3 * args.docs)]
    small = texts[:args.docs]

    openvino = load_text_encoder("", "openvino", max_seq_length=128, batch_size=32)
    openvino.encode(texts[:32])  # warm-up
    base, base_s = timed(openvino.encode, small)
    local_large, local_large_s = timed(openvino.encode, texts)
    torch_encoder = load_text_encoder("", "torch", max_seq_length=128, batch_size=32)
    torch_encoder.encode(texts[:32])
    torch_vectors, torch_s = timed(torch_encoder.encode, small)

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    remote = with_engine(openvino, "", 128, EncodingEngine(engine="ray", ray_actors=args.actors))
    first, first_s = timed(remote.encode, small)
    large, large_s = timed(remote.encode, texts)
    ray.shutdown()

    rows = [("local, OpenVINO (baseline)", small, base, base_s), ("local, OpenVINO", texts, local_large, local_large_s),
            ("local, torch", small, torch_vectors, torch_s),
            (f"ray, {args.actors} actors", small, first, first_s),
            (f"ray, {args.actors} actors", texts, large, large_s)]
    with record("encode_engines"):
        print(f"\nabstracts, all-MiniLM-L6-v2, 128 tokens, batch 32, {os.cpu_count()} CPU cores\n")
        print("| engine | docs | seconds | docs/s | vs baseline | min cosine to local OpenVINO |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, docs, vectors, seconds in rows:
            reference = base if len(docs) == len(small) else local_large
            cosine = float((vectors * reference).sum(axis=1).min())
            print(f"| {name} | {len(docs):,} | {seconds:.1f} | {len(docs) / seconds:.1f} | "
                  f"{(len(docs) / seconds) / (len(small) / base_s):.2f}x | {cosine:.5f} |")
        # Each call starts its actor pool (a model load and OpenVINO conversion per actor): a fixed cost per
        # call. The docs/s past it (the larger call minus the smaller) is what a long encode runs at.
        extra = len(texts) - len(small)
        local_rate, ray_rate = extra / (local_large_s - base_s), extra / (large_s - first_s)
        fixed = first_s - len(small) / ray_rate
        print(f"\nPast the start: local {local_rate:.1f} docs/s, ray {ray_rate:.1f} docs/s "
              f"({ray_rate / local_rate:.2f}x local); ray's fixed cost per call ~{fixed:.1f} s.")


if __name__ == "__main__":
    main()

"""Encoding engines side by side: this process (torch, OpenVINO) and a Ray actor pool.

    .venv/bin/python benchmarks/encode_engines.py [--docs 2000] [--actors 2]

The same abstracts (data/processed/papers.parquet from `dvc repro ingest`) with the packaged
all-MiniLM-L6-v2 at 128 tokens, batch 32:
  - baseline: `local` with the OpenVINO backend (what the stages use on a CPU), one process;
  - local torch, for reference;
  - `ray`: a local Ray instance (started here, 127.0.0.1, usage stats off) and `--actors` actors of
    1 CPU each holding the OpenVINO encoder. Timed twice: the first call includes starting the
    actors and converting the model in each; the second is the steady state of a long encode.
Prints docs/s, the ratio to the baseline and the minimum cosine of each engine's vectors to the
baseline's. Ray is about spreading encoding over machines and GPUs; on one 2-core box it can at
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
    texts = pd.read_parquet(REPO / "data/processed/papers.parquet")["abstract"].head(args.docs).to_list()

    openvino = load_text_encoder("", "openvino", max_seq_length=128, batch_size=32)
    openvino.encode(texts[:32])  # warm-up
    base, base_s = timed(openvino.encode, texts)
    torch_encoder = load_text_encoder("", "torch", max_seq_length=128, batch_size=32)
    torch_encoder.encode(texts[:32])
    torch_vectors, torch_s = timed(torch_encoder.encode, texts)

    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    remote = with_engine(openvino, "", 128, EncodingEngine(engine="ray", ray_actors=args.actors))
    first, first_s = timed(remote.encode, texts)
    steady, steady_s = timed(remote.encode, texts)
    ray.shutdown()

    rows = [("local, OpenVINO (baseline)", base, base_s), ("local, torch", torch_vectors, torch_s),
            (f"ray, {args.actors} actors, first call (actors start)", first, first_s),
            (f"ray, {args.actors} actors, second call", steady, steady_s)]
    print(f"\n{len(texts)} abstracts, all-MiniLM-L6-v2, 128 tokens, batch 32, {os.cpu_count()} CPU cores\n")
    print("| engine | seconds | docs/s | vs baseline | min cosine to baseline |")
    print("|---|---:|---:|---:|---:|")
    for name, vectors, seconds in rows:
        cosine = float((vectors * base).sum(axis=1).min())
        print(f"| {name} | {seconds:.1f} | {len(texts) / seconds:.1f} | {base_s / seconds:.2f}x | {cosine:.5f} |")


if __name__ == "__main__":
    main()

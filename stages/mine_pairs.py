"""DVC stage `mine_pairs`: papers.parquet -> Siamese train/val pairs with hard negatives, and the split.

    python -m stages.mine_pairs --params params.yaml --papers data/processed/papers.parquet \
        --out data/pairs --report reports/mine_pairs.json \
        --embedding-cache cache/embeddings
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import pandas as pd

from papersim.atomic import atomic_outputs, dump_json
from papersim.config import load_section
from papersim.encoders.cache import encode_cached
from papersim.encoders.encode import load_text_encoder
from papersim.env import apply_offline_defaults
from papersim.errors import PapersimError
from papersim.lifecycle import tracking
from papersim.provenance import data_version, git_commit
from papersim.training.pairs import MinePairsConfig, mine_pairs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.mine_pairs", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (section `mine_pairs`)")
    parser.add_argument("--papers", type=Path, default=Path("data/processed/papers.parquet"), help="ingested papers")
    parser.add_argument("--out", type=Path, default=Path("data/pairs"),
                        help="folder for train.parquet, val.parquet, split.parquet")
    parser.add_argument("--report", type=Path, default=Path("reports/mine_pairs.json"), help="metrics JSON")
    parser.add_argument("--embedding-cache", type=Path, default=Path("cache/embeddings"),
                        help="embedding cache shared with evaluate and build_index")
    return parser.parse_args(argv)


def read_labelled(path: str) -> pd.DataFrame | None:
    if not path:
        return None
    file = Path(path)
    if not file.is_file():
        raise PapersimError(f"{path}: labelled pairs file not found (params.yaml mine_pairs.labelled_pairs)")
    frame = pd.read_parquet(file) if file.suffix in (".parquet", ".pq") else pd.read_csv(file, dtype=str)
    missing = {"anchor_id", "positive_id"} - set(frame.columns)
    if missing:
        raise PapersimError(f"{path}: needs columns anchor_id and positive_id (missing: {', '.join(sorted(missing))})")
    return frame


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    try:
        cfg = load_section(args.params, "mine_pairs", MinePairsConfig)
        if not args.papers.is_file():
            raise PapersimError(f"{args.papers}: no ingested papers; run the ingest stage first (`dvc repro ingest`)")
        papers = pd.read_parquet(args.papers)
        labelled = read_labelled(cfg.labelled_pairs)
        encode = None
        if "dense" in cfg.miners:
            encoder = load_text_encoder(cfg.model, cfg.backend, cfg.max_seq_length, cfg.encode_batch_size)
            encode = lambda texts: encode_cached(encoder, texts, args.embedding_cache).vectors  # noqa: E731
        tags = {"mlflow.source.git.commit": git_commit(), **data_version({"papers": args.papers})}
        with tracking.stage_run("mine_pairs", dataclasses.asdict(cfg), tags) as run:
            result = mine_pairs(papers, cfg, encode, labelled)
            with atomic_outputs(args.out, args.report) as (out, report_path):
                out.mkdir()
                result.train.to_parquet(out / "train.parquet", index=False)
                result.val.to_parquet(out / "val.parquet", index=False)
                result.split.to_parquet(out / "split.parquet", index=False)
                dump_json(result.report, report_path)
            run.log_metrics(result.report)
            run.log_artifact(args.report, "reports")
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    r = result.report
    print(f"mine_pairs: {r['pairs']['train']['total']} train / {r['pairs']['val']['total']} val pairs -> {args.out} "
          f"(papers {r['papers']}; negatives removed in train: {r['negatives_removed']['train']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DVC stage `build_index`: every paper encoded by the served encoder into a faiss index, plus BM25
and the served fusion (models/serving.json, chosen by the train stage).

    python -m stages.build_index --params params.yaml --papers data/processed/papers.parquet \
        --pairs data/pairs --model models/encoder --serving models/serving.json \
        --embedding-cache cache/embeddings \
        --out artifacts/index --report reports/index.json
"""

import argparse
import dataclasses
import json
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
from papersim.retrieval import ann
from papersim.retrieval.index import BuildIndexConfig, BuiltIndex, build_index
from papersim.retrieval.lexical import BM25
from papersim.retrieval.passage import passage_text
from papersim.training.selection import read_serving


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.build_index", description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (section `build_index`)")
    parser.add_argument("--papers", type=Path, default=Path("data/processed/papers.parquet"), help="ingested papers")
    parser.add_argument("--pairs", type=Path, default=Path("data/pairs"),
                        help="mine_pairs output: held-out titles (split.parquet) measure recall and speed")
    parser.add_argument("--model", type=Path, default=Path("models/encoder"), help="the trained model")
    parser.add_argument("--serving", type=Path, default=Path("models/serving.json"),
                        help="which encoder serves (trained or base) and the fusion with BM25")
    parser.add_argument("--embedding-cache", type=Path, default=Path("cache/embeddings"),
                        help="embedding cache shared with mine_pairs and evaluate")
    parser.add_argument("--out", type=Path, default=Path("artifacts/index"), help="index folder")
    parser.add_argument("--report", type=Path, default=Path("reports/index.json"), help="metrics JSON")
    return parser.parse_args(argv)


def read_previous(folder: Path) -> BuiltIndex | None:
    """The last good build, if complete; anything unreadable means a full rebuild, never an error."""
    try:
        info = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        return BuiltIndex(index=ann.load_index(folder / "index.faiss"), ids=pd.read_parquet(folder / "ids.parquet"),
                          info=info)
    except (OSError, ValueError, PapersimError):
        return None


def held_out_titles(papers: pd.DataFrame, split_file: Path, n: int) -> list[str]:
    """Up to n test-split titles (all titles when there is no split): real queries for recall and speed.
    An untitled corpus asks with the first 200 characters of its abstracts instead."""
    titled = papers["title"].str.strip() != ""
    papers = papers.assign(query=papers["title"] if titled.any() else papers["abstract"].str.slice(0, 200))
    papers = papers[titled] if titled.any() else papers
    if split_file.is_file():
        split = pd.read_parquet(split_file)
        test = papers[papers["paper_id"].isin(set(split.loc[split["split"] == "test", "paper_id"]))]
        papers = test if len(test) else papers
    return papers["query"].head(n).to_list()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    try:
        cfg = load_section(args.params, "build_index", BuildIndexConfig)
        if not args.papers.is_file():
            raise PapersimError(f"{args.papers}: no ingested papers; run the ingest stage first (`dvc repro ingest`)")
        if not (args.model / "modules.json").is_file():
            raise PapersimError(f"{args.model}: no trained model; run the train stage first (`dvc repro train`)")
        papers = pd.read_parquet(args.papers)
        serving = read_serving(args.serving)
        folder = serving.encoder_folder(str(args.model))
        tags = {"mlflow.source.git.commit": git_commit(), **data_version({"papers": args.papers})}
        with tracking.stage_run("build_index", dataclasses.asdict(cfg), tags) as run:
            encoder = load_text_encoder(folder, cfg.backend, cfg.max_seq_length, cfg.batch_size)
            titles = held_out_titles(papers, args.pairs / "split.parquet", cfg.recall_queries)
            queries = encode_cached(encoder, titles, args.embedding_cache).vectors
            papers_encoded = []  # what build_index's embedding calls had to encode (the rest came from the cache)

            def embed(texts: list[str]):
                result = encode_cached(encoder, texts, args.embedding_cache, progress=True)
                papers_encoded.append(result.n_encoded)
                return result.vectors

            built = build_index(papers, embed, queries, cfg, encoder.key, read_previous(args.out))
            info = {**built.info, "papers_encoded": sum(papers_encoded), "backend": encoder.backend,
                    "max_seq_length": cfg.max_seq_length, "model": str(args.model),
                    "model_fingerprint": encoder.fingerprint, "serving": serving.to_dict()}
            passages = {pid: passage_text(t, a) for pid, t, a in zip(papers["paper_id"], papers["title"],
                                                                       papers["abstract"])}
            bm25 = BM25(list(built.ids["paper_id"]), [passages[pid] for pid in built.ids["paper_id"]],
                        cfg.stemmer)
            with atomic_outputs(args.out, args.report) as (out, report):
                out.mkdir()
                ann.save_index(built.index, out / "index.faiss")
                built.ids.to_parquet(out / "ids.parquet", index=False)
                (out / "bm25").mkdir()
                bm25.save(out / "bm25")
                dump_json(info, out / "index.json")
                dump_json(info, report)
            run.log_metrics({k: v for k, v in info.items() if k != "serving"})
            run.set_tags({"index.factory": info["factory"], "index.mode": info["mode"],
                          "papersim.served_encoder": serving.encoder, "papersim.fusion": serving.fusion.describe()})
            run.log_artifact(args.report, "reports")
    except PapersimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"build_index: {info['papers']} papers -> {args.out} ({info['factory']}, {info['mode']}: "
          f"{info['mode_reason']}; encoded {info['papers_encoded']}); recall@10 {info.get('recall@10', 1.0):.3f}, "
          f"{info['queries_per_second']:.0f} queries/s, {info['memory_bytes'] / 2**20:.1f} MiB; serves the "
          f"{serving.encoder} encoder, {serving.fusion.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

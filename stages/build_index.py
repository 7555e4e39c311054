"""DVC stage `build_index`: every paper encoded by the served encoder into a faiss index, plus BM25
and the served fusion (models/serving.json, chosen by the train stage)."""

import sys
from dataclasses import replace

import pandas as pd

from papersim.atomic import atomic_outputs, dump_json
from papersim.data.papers import read_papers
from papersim.encoders.cache import converted_cache, encode_cached
from papersim.encoders.encode import load_text_encoder, model_folder
from papersim.encoders.windows import PaperView, windowed_embed
from papersim.encoders.engine import EncodingEngine, with_engine
from papersim.retrieval.index import (BuildIndexConfig, bm25_index, build_index, build_similar_index, paper_details,
                                      TIMINGS, passages, read_previous, recall_queries, save_index_folder)
from papersim.progress import Heartbeat, working_on
from papersim.stage import Stage, require, run_stage, split_timings, timings_path
from papersim.retrieval.choice import read_serving

PATHS = {"papers": "ingested papers", "pairs": "mine_pairs output: held-out titles measure recall and speed",
         "model": "the trained model", "serving": "which encoder serves (trained or base) and the fusion",
         "embedding-cache": "embedding cache shared with mine_pairs and evaluate", "out": "index folder",
         "report": "metrics JSON"}


def execute(stage: Stage) -> str:
    args, cfg = stage.args, stage.cfg
    require(args.papers.is_file(), args.papers, "no ingested papers", "ingest")
    require((args.model / "modules.json").is_file(), args.model, "no trained model", "train")
    papers = read_papers(args.papers)
    split = pd.read_parquet(args.pairs / "split.parquet") if (args.pairs / "split.parquet").is_file() else None
    serving = read_serving(args.serving)
    with stage.run({"papers": args.papers}) as run:
        folder = serving.encoder_folder(str(args.model))
        encoder = with_engine(load_text_encoder(folder, cfg.backend, cfg.max_seq_length, cfg.batch_size,
                                                converted_cache(args.embedding_cache)), folder,
                              cfg.max_seq_length, EncodingEngine.of(cfg))
        with working_on("recall queries"):
            queries = encode_cached(encoder, recall_queries(papers, split, cfg.recall_queries), args.embedding_cache)
        encoded = []  # what the papers' encoding had to run (the rest came from the cache)

        def embed(texts: list[str]):
            with working_on("papers"):
                result = encode_cached(encoder, texts, args.embedding_cache)
            encoded.append(result.n_encoded)
            return result.vectors

        with Heartbeat("building the index"):  # faiss' training and adding say nothing while they run
            built = build_index(papers, embed, queries.vectors, cfg, encoder.key, read_previous(args.out))
        # what this run had to encode depends on the embedding cache's state, not on the index: a run fact, like timings
        ran = {"papers_encoded": sum(encoded)}
        facts = {"backend": encoder.backend, "max_seq_length": cfg.max_seq_length,
                 "model": str(args.model), "model_fingerprint": encoder.fingerprint, "serving": serving.to_dict()}
        if serving.similar is not None:
            facts["similar"] = serving.similar.to_dict()
            other, view = serving.similar_folder(str(args.model)), serving.similar.view or PaperView(cfg.max_seq_length)
            if other != folder or view != PaperView(cfg.max_seq_length):
                # papers are answered from another encoder's vectors, or another view of them: an index of their own
                similar_encoder = with_engine(load_text_encoder(other, cfg.backend, view.tokens, cfg.batch_size,
                                                                converted_cache(args.embedding_cache)),
                                              other, view.tokens, EncodingEngine.of(cfg))

                def embed_papers(texts: list[str]):
                    with working_on(f"papers at {view.describe()} (similar papers)"):
                        result = encode_cached(similar_encoder, texts, args.embedding_cache)
                    encoded.append(result.n_encoded)
                    return result.vectors

                vectors = windowed_embed(embed_papers, model_folder(other), view)(passages(papers, built.ids))
                with Heartbeat("building the similar papers' index"):
                    similar, similar_info = build_similar_index(vectors, built.info["factory"], cfg)
                built = replace(built, similar=similar)
                ran["papers_encoded"] = sum(encoded)
                facts.update(similar_info, similar_view=view.to_dict(),
                             similar_model_fingerprint=similar_encoder.fingerprint)
        stable = dict(built.info)
        timings = {**split_timings(stable, TIMINGS), **ran}
        built = replace(built, info=stable)
        with atomic_outputs(args.out, args.report) as (out, report):
            info = save_index_folder(out, built, bm25_index(papers, built.ids, cfg.stemmer), facts,
                                     paper_details(papers, built.ids))
            dump_json(info, report)
        dump_json(timings, timings_path(args.report))
        run.log_metrics({k: v for k, v in {**info, **timings}.items() if k != "serving"})
        run.set_tags({"index.factory": info["factory"], "index.mode": info["mode"], **serving.tags()})
        run.log_artifact(args.report, "reports")
    return (f"build_index: {info['papers']} papers -> {args.out} ({info['factory']}, {info['mode']}: "
            f"{info['mode_reason']}; encoded {timings['papers_encoded']}); recall@10 {info.get('recall@10', 1.0):.3f}, "
            f"{timings['queries_per_second']:.0f} queries/s, {info['memory_bytes'] / 2**20:.1f} MiB; serves the "
            f"{serving.encoder} encoder, {serving.fusion.describe()}"
            + (f"; papers: {serving.similar.describe()}" if serving.similar is not None else ""))


def main(argv: list[str] | None = None) -> int:
    return run_stage("build_index", BuildIndexConfig, __doc__, PATHS, execute, argv)


if __name__ == "__main__":
    sys.exit(main())

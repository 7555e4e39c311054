"""DVC stage `evaluate`: the served system against bm25, base, their fusion (and the champion) on
judged sets and the test split, with per-query scores and paired significance tests."""

import os
import sys

import pandas as pd

from papersim.atomic import atomic_outputs, dump_json
from papersim.data.papers import read_papers
from papersim.encoders.cache import cached_embedder
from papersim.encoders.encode import model_folder
from papersim.encoders.windows import PaperView, windowed_embed
from papersim.evaluation.evaluate import EvaluateConfig, encoder_folders, evaluate_set, evaluate_similar
from papersim.evaluation.report import curve_table, eval_report, markdown_table, per_query_table, save_curve_plot
from papersim.evaluation.sets import held_out_set, listing_sets, load_beir_set
from papersim.stage import Stage, require, require_files, run_stage
from papersim.retrieval.choice import read_serving

PATHS = {"papers": "ingested papers", "pairs": "mine_pairs output (split.parquet)", "model": "the trained model",
         "serving": "the served encoder and fusion (train stage): system `served`",
         "champion-model": "the registry champion's encoder folder (system `champion`); none: skipped",
         "embedding-cache": "embedding cache shared with build_index", "report": "metrics JSON",
         "table": "readable table", "per-query": "every system's score of every query",
         "curve": "recall@k per k", "plot": "recall@k plot"}


def execute(stage: Stage) -> str:
    args, cfg = stage.args, stage.cfg
    sets = [load_beir_set(folder) for folder in cfg.beir_sets]
    similar_sets = {}
    if cfg.test_split:
        require_files([args.papers, args.pairs / "split.parquet"],
                      "run the pipeline up to mine_pairs first (`dvc repro`)")
        papers, split = read_papers(args.papers), pd.read_parquet(args.pairs / "split.parquet")
        held_out = held_out_set(papers, split, cfg.max_group_size, cfg.test_split_max_queries, cfg.test_split_max_docs)
        sets += [held_out] if held_out is not None else []
        if cfg.similar:  # known and unseen listings (mine_pairs' group split)
            similar_sets = listing_sets(papers, split, "test", cfg.max_group_size, set(papers["paper_id"]),
                                        cfg.test_split_max_queries, cfg.test_split_max_docs)
            del papers
    serving = read_serving(args.serving)
    trained = str(args.model)
    folders, notes = encoder_folders(cfg, trained, serving.encoder_folder(trained),
                                     None if args.champion_model is None else str(args.champion_model),
                                     serving.similar_folder(trained) if similar_sets else None)
    require((args.model / "modules.json").is_file(), args.model, "no trained model", "train")
    notes.append(f"served: the {serving.encoder} encoder, {serving.fusion.describe()} with bm25 ({serving.reason})")
    chosen_on = {os.path.normpath(f): "a shipped default (the fusion rule) was chosen on these judgments "
                 "(evaluate.development_sets)" for f in cfg.development_sets}
    chosen_on.update({os.path.normpath(f): "the serving choice was made on these judgments (train.selection_sets)"
                      for f in serving.evidence.get("selection_sets", [])})
    notes += [f"{os.path.basename(os.path.normpath(f))}: {chosen_on[os.path.normpath(f)]}: a development set "
              "here, not a held-out one" for f in cfg.beir_sets if os.path.normpath(f) in chosen_on]
    if cfg.test_split and not any(s.name == "test_split" for s in sets):
        notes.append("test_split: skipped (no test-split paper has a title; raise mine_pairs.test_fraction)")
    if cfg.test_split and cfg.similar and not similar_sets:
        notes.append("similar: skipped (no test-split paper has a co-listed paper: the corpus has no groups of "
                     f"2 to {cfg.max_group_size} papers)")
    elif similar_sets:
        served_similar = serving.similar.describe() if serving.similar else "dense neighbours only (old serving)"
        notes.append(f"similar: held-out papers of known listings (their listing's other papers trained on) asking "
                     f"for the papers that share a listing page or a category of at most {cfg.max_group_size} papers "
                     "with them; similar_unseen: the papers of whole listings held out of training and every choice, "
                     "asking for each other; intervals and paired tests resample listings; bm25 = the whole paper as "
                     "the query, mlt = its telling terms, base/trained = their vectors at "
                     f"{cfg.max_seq_length} tokens (the search index's), hybrid/base_hybrid = RRF of bm25 and "
                     "trained/base; "
                     f"served = {served_similar}")
        if serving.similar is not None and "encoder" in serving.similar.evidence:
            notes.append("similar, the encoder chosen on validation papers (never these): "
                         + serving.similar.reason.split("; paper at ")[0])
        kinds = {"similar": "of a known listing", "similar_unseen": "of a held-out listing"}
        notes += [f"{name}: none (no test-split paper {kind})"
                  for name, kind in kinds.items() if name not in similar_sets]
    tags = {f"eval_set.{s.name}.content_hash": s.content_hash for s in [*sets, *similar_sets.values()]}
    with stage.run({"papers": args.papers}, tags) as run:
        loaded = {}  # the served encoder is the trained or the base one: load each folder once
        for system, folder in folders.items():
            if folder not in loaded:
                loaded[folder] = cached_embedder(folder, cfg.backend, cfg.max_seq_length, cfg.batch_size,
                                                 args.embedding_cache, cfg)
                notes.append(f"{system}: {folder or 'packaged all-MiniLM-L6-v2'} on {loaded[folder].encoder.backend}")
        results = {s.name: evaluate_set(s, {k: loaded[f] for k, f in folders.items()}, cfg, serving.fusion)
                   for s in sets}
        papers_embed = {k: loaded[f] for k, f in folders.items()}
        view = serving.similar.view if serving.similar is not None else None  # None: the search index's vectors
        if "served_similar" in folders and view is not None and view != PaperView(cfg.max_seq_length):
            folder = folders["served_similar"]  # papers are served from vectors of their own view: as build_index
            papers_embed["served_similar"] = windowed_embed(
                cached_embedder(folder, cfg.backend, view.tokens, cfg.batch_size, args.embedding_cache, cfg),
                model_folder(folder), view)
        for name, similar_set in similar_sets.items():
            results[name] = evaluate_similar(similar_set, papers_embed, cfg, serving.similar)
        table, curves = markdown_table(results, notes), curve_table(results)
        outputs = (args.report, args.table, args.per_query, args.curve, args.plot)
        report = eval_report(results)
        with atomic_outputs(*outputs) as (rep, md, per_query, csv, png):
            dump_json(report, rep)
            md.write_text(table, encoding="utf-8")
            per_query_table(results).to_parquet(per_query, index=False)
            curves.to_csv(csv, index=False)
            save_curve_plot(curves, png)
        run.log_metrics(report)
        run.set_tags(serving.tags())
        for path in outputs:
            run.log_artifact(path, "reports")
    return table


def main(argv: list[str] | None = None) -> int:
    return run_stage("evaluate", EvaluateConfig, __doc__, PATHS, execute, argv, optional=("champion-model",))


if __name__ == "__main__":
    sys.exit(main())
